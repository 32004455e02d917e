"""When a scheduled deployment fires next, and whether a fire at a given moment is taken.

A fire is taken when it falls inside the deployment's per-day `window` (in the schedule's zone)
and, with `session`, while that exchange is open (node/hosting/sessions.py). Offset schedules
("open+5m", "close-10m") are instants of the session's calendar and are always taken.

`next_fire(dep, after)` is the first fire after `after` that will be taken: the schedule's own
fires (croniter for a 6-field cron: the maintained library airflow and others use; `@every`
from its anchor; `@at`; an offset from the calendar), skipping the ones outside the window and
the session by jumping to their next opening instead of stepping through every fire.

Why croniter: it evaluates 6-field crons with seconds (`second_at_beginning`, the server's field
order), named weekdays and months, steps and ranges, in any IANA zone across DST, and is kept up
(7.x, 2026) under the pallets-eco organisation; writing that evaluation again would be a toy.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from typing import Any, Callable
from zoneinfo import ZoneInfo

from contracts import ErrorCode, ExecutionError
from contracts import schedule as forms

from . import sessions

MAX_STEPS = 2_000  # fires looked at (after jumps) before giving up: None
UTC = timezone.utc


def zone(dep: Any) -> ZoneInfo | timezone:
    return ZoneInfo(dep.tz) if dep.tz else UTC


def iso(moment: datetime, dep: Any) -> str:
    """RFC 3339 in the schedule's zone (as the server's Nats-Schedule-Next), UTC as "Z"."""
    local = moment.astimezone(zone(dep))
    text = local.isoformat(timespec="seconds" if not local.microsecond else "milliseconds")
    return text.replace("+00:00", "Z") if not dep.tz else text


def parse_time(text: str) -> datetime:
    """An RFC 3339 time (nanoseconds cut to microseconds), aware."""
    import re

    text = re.sub(r"(\.\d{6})\d+", r"\1", text.strip().replace("Z", "+00:00"))
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def refusal(dep: Any, moment: datetime) -> str | None:
    """Why a fire at `moment` is not taken (outside the window, or the exchange closed), or None."""
    if not dep.schedule or forms.kind(dep.schedule) == "offset":
        return None
    if dep.window:
        local = moment.astimezone(zone(dep))
        second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        if not forms.parse_window(dep.window).admits(local.weekday(), second):
            return f"outside the window {dep.window} ({dep.tz or 'UTC'})"
    if dep.session and not sessions.is_open(dep.session, moment):
        return f"{dep.session} is closed (outside its session, a weekend or a holiday)"
    return None


def _window_opening(window: forms.Window, tz: Any, moment: datetime) -> datetime | None:
    """`moment` when the window admits it, else the next start of one of its spans."""
    local = moment.astimezone(tz)
    second = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
    if window.admits(local.weekday(), second):
        return moment
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    for day in range(8):
        date = midnight + timedelta(days=day)
        if date.weekday() not in window.days:
            continue
        for start, _stop in window.spans:
            begin = (date + timedelta(seconds=start)).replace(tzinfo=tz)
            if begin.astimezone(UTC) > moment.astimezone(UTC):
                return begin
    return None


def _opening(dep: Any, moment: datetime) -> datetime | None:
    """The first instant at or after `moment` at which both the window and the session admit."""
    window = forms.parse_window(dep.window) if dep.window else None
    tz = zone(dep)
    for _ in range(400):
        at = _window_opening(window, tz, moment) if window else moment
        if at is None:
            return None
        if dep.session:
            at = sessions.next_open(dep.session, at)
            if at is None:
                return None
        if window is None or _window_opening(window, tz, at) == at:
            return at
        moment = at
    return None


def _cron(dep: Any) -> Callable[[datetime, bool], datetime | None]:
    from croniter import croniter, CroniterError

    tz = zone(dep)
    try:
        croniter(dep.schedule, datetime.now(tz), second_at_beginning=True)
    except (CroniterError, ValueError, KeyError) as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.schedule` {dep.schedule!r} cannot be evaluated: {exc}") from None

    def first(moment: datetime, strict: bool) -> datetime | None:
        start = moment.astimezone(tz) - (timedelta(0) if strict else timedelta(microseconds=1))
        it = croniter(dep.schedule, start, second_at_beginning=True)
        return it.get_next(datetime)
    return first


def _every(dep: Any, anchor: datetime) -> Callable[[datetime, bool], datetime | None]:
    period = forms.every_seconds(dep.schedule)

    def first(moment: datetime, strict: bool) -> datetime | None:
        k = (moment - anchor).total_seconds() / period
        n = math.floor(k) + 1 if strict else math.ceil(k)
        return anchor + timedelta(seconds=max(n, 0) * period)
    return first


def next_fire(dep: Any, after: datetime, anchor: datetime | None = None) -> datetime | None:
    """The first fire strictly after `after` that will be taken; None when there is none (a
    past `@at`, a window that never meets the session, the calendar's data run out).
    `anchor`: a known fire of an `@every` (the server's next fire time); default `after`."""
    if not dep.schedule:
        return None
    form = forms.kind(dep.schedule)
    if form == "offset":
        offset = forms.parse_offset(dep.schedule)
        return sessions.anchor_after(dep.session, offset.anchor, offset.seconds, after)
    if form == "at":
        at = parse_time(dep.schedule.strip()[4:])
        return at if at > after and refusal(dep, at) is None else None
    raw = _cron(dep) if form == "cron" else _every(dep, anchor or after)
    fire = raw(after, True)
    for _ in range(MAX_STEPS):
        if fire is None:
            return None
        if refusal(dep, fire) is None:
            return fire
        opening = _opening(dep, fire)
        if opening is None:
            return None
        fire = raw(opening, False)
    return None
