"""The forms of a deployment's schedule, its per-day window and offsets from a session's open
or close: parsing and checking only (evaluation: node/hosting/firetimes.py).

Schedule (`schedule`, with `tz` an IANA zone):

* a 6-field cron `sec min hour day month weekday` ("0 */5 9-15 * * MON-FRI"), in `tz`;
* `@every <duration>` ("@every 30s", "@every 1h30m");
* `@at <RFC 3339 time>` (one fire);
* an offset from the trading session of `session`: `open`, `close`, `open+5m`, `close-10m`,
  `open+1h30m` (up to 12 hours either way; the exchange's own calendar and zone, so `tz` does
  not apply).

Window (`window`): start and stop times per day in the schedule's zone, optionally on some
weekdays only: "09:20-15:10", "MON-FRI 09:20-15:10", "MON,WED 10:00-11:00,14:00-15:00".
A span includes its start and excludes its stop (as an exchange session does); "24:00" is the
end of the day; a span never crosses midnight (a night session is "00:00-02:00,22:00-24:00").
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DAY_NAMES = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")  # datetime.weekday() order
MAX_OFFSET_S = 12 * 3600
_DURATION = re.compile(r"(\d+)([hms])")
_OFFSET = re.compile(r"^(open|close)(?:([+-])((?:\d+[hms])+))?$")
_SPAN = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")
_UNITS = {"h": 3600, "m": 60, "s": 1}


@dataclass(frozen=True)
class Offset:
    anchor: str  # "open" or "close"
    seconds: int  # signed

    def __str__(self) -> str:
        if not self.seconds:
            return self.anchor
        sign, left = ("+" if self.seconds > 0 else "-"), abs(self.seconds)
        parts = [f"{left // 3600}h" if left >= 3600 else "", f"{left % 3600 // 60}m" if left % 3600 >= 60 else "",
                 f"{left % 60}s" if left % 60 else ""]
        return f"{self.anchor}{sign}{''.join(parts)}"


def parse_offset(schedule: str | None) -> Offset | None:
    """The offset of a session-relative schedule, None for any other form; ValueError for an
    offset that cannot be read."""
    if not schedule:
        return None
    text = schedule.strip()
    if not text.startswith(("open", "close")):
        return None
    found = _OFFSET.match(text)
    if not found:
        raise ValueError(f"schedule {schedule!r}: an offset is `open` or `close` with +/- a duration such as "
                         "5m, 1h30m or 90s (e.g. open+5m, close-10m)")
    anchor, sign, amount = found.groups()
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _DURATION.findall(amount or ""))
    if seconds > MAX_OFFSET_S:
        raise ValueError(f"schedule {schedule!r}: an offset is at most 12h from the open or close")
    return Offset(anchor, -seconds if sign == "-" else seconds)


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # weekday() numbers the window applies on
    spans: tuple[tuple[int, int], ...]  # (start, stop) in seconds of the day, start inclusive

    def admits(self, weekday: int, second_of_day: float) -> bool:
        return weekday in self.days and any(a <= second_of_day < b for a, b in self.spans)


def _days(text: str, window: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        if first not in DAY_NAMES or (dash and last not in DAY_NAMES):
            raise ValueError(f"window {window!r}: weekdays are MON..SUN, as MON-FRI or MON,WED,FRI")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last if dash else first)
        if b < a:
            raise ValueError(f"window {window!r}: a weekday range goes forward (MON-FRI, not FRI-MON)")
        out.update(range(a, b + 1))
    return frozenset(out)


def parse_window(window: str) -> Window:
    """`[DAYS ]HH:MM-HH:MM[,HH:MM-HH:MM...]`; ValueError naming what is wrong."""
    text = window.strip().upper()
    days_text, _, spans_text = text.rpartition(" ")
    days = _days(days_text.strip(), window) if days_text.strip() else frozenset(range(7))
    spans = []
    for part in spans_text.split(","):
        found = _SPAN.match(part)
        if not found:
            raise ValueError(f"window {window!r}: give start and stop times as HH:MM-HH:MM (e.g. 09:20-15:10), "
                             "optionally after weekdays (MON-FRI 09:20-15:10)")
        h1, m1, h2, m2 = (int(g) for g in found.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ValueError(f"window {window!r}: {part} is not a time of day (00:00 to 24:00)")
        start, stop = h1 * 3600 + m1 * 60, h2 * 3600 + m2 * 60
        if stop <= start:
            raise ValueError(f"window {window!r}: {part} must stop after it starts on the same day "
                             "(a window does not cross midnight)")
        spans.append((start, stop))
    spans.sort()
    if any(b[0] < a[1] for a, b in zip(spans, spans[1:])):
        raise ValueError(f"window {window!r}: its spans overlap")
    return Window(days, tuple(spans))


def kind(schedule: str) -> str:
    """"cron", "every", "at" or "offset" (of a schedule that passed `check`)."""
    text = schedule.strip()
    if text.startswith("@every "):
        return "every"
    if text.startswith("@at "):
        return "at"
    if text.startswith(("open", "close")):
        return "offset"
    return "cron"


def every_seconds(schedule: str) -> float:
    """The period of an `@every` schedule in seconds (Go durations: 1h30m, 500ms, 2.5s)."""
    units = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h)", schedule[7:]))
