"""Trading sessions of scheduled deployments: `exchange_calendars` (ISO 10383 MIC codes: XNYS,
XNAS, XLON, XBOM, ...).

Why this library: it is the maintained successor of Quantopian's trading_calendars, used by
zipline-reloaded; it carries each exchange's sessions, early closes and holidays as data with
regular releases, needs nothing beyond pandas/numpy (already here) and a few small packages,
and imports in about 0.4 s (lazily, on the first deployment that names a session).

India: exchange_calendars (4.13) has XBOM (BSE) and no XNSE; NSE and BSE share their trading
hours and holidays, so `XNSE` is registered here as an alias of XBOM's calendar (the library's
own aliases, such as BSE for XBOM, work too).

A fire of a deployment with `session` is taken only while that exchange is open at the fire's
time (`is_open_on_minute`: the open minute counts, the close minute does not): outside the
session hours, on weekends and on holidays it is skipped. An offset schedule ("open+5m") takes
its instants from the same calendar (`anchor_after`), early closes and holidays included.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from contracts import ErrorCode, ExecutionError

ALIASES = {"XNSE": "XBOM"}  # ours, on top of the library's


@lru_cache(maxsize=1)
def _library() -> Any:
    import exchange_calendars

    known = set(exchange_calendars.get_calendar_names())
    for alias, real in ALIASES.items():
        if alias not in known:
            exchange_calendars.register_calendar_alias(alias, real)
    return exchange_calendars


@lru_cache(maxsize=64)
def calendar(name: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _library().get_calendar(name)


def check(name: str) -> None:
    if name not in _library().get_calendar_names():
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.session` {name!r} is not an exchange calendar (ISO MIC such "
                             "as XNYS, XNAS, XLON, XBOM or XNSE for Indian NSE/BSE hours and holidays)")


def _ts(moment: datetime) -> Any:
    import pandas as pd

    return pd.Timestamp(moment).tz_convert("UTC")


def is_open(name: str, moment: datetime) -> bool:
    cal = calendar(name)
    ts = _ts(moment).floor("min")
    with warnings.catch_warnings():  # the library's own pandas deprecation notices
        warnings.simplefilter("ignore")
        if ts < cal.first_minute or ts > cal.last_minute:
            return False
        return bool(cal.is_open_on_minute(ts))


def next_open(name: str, moment: datetime) -> datetime | None:
    """`moment` itself when the exchange is open then, else its next open; None past the
    calendar's data (about a year ahead)."""
    if is_open(name, moment):
        return moment
    cal = calendar(name)
    ts = _ts(moment)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ts > cal.last_minute:
            return None
        if ts < cal.first_minute:
            ts = cal.first_minute
        try:
            return cal.next_open(ts).to_pydatetime()
        except ValueError:  # beyond the last session
            return None


def anchor_after(name: str, anchor: str, offset_s: int, after: datetime) -> datetime | None:
    """The first session open/close + offset strictly after `after` (holidays have no session,
    an early close moves `close`); None past the calendar's data."""
    cal = calendar(name)
    ts = _ts(after)
    shift = timedelta(seconds=offset_s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = (ts - timedelta(hours=36)).normalize().tz_localize(None)
        if start < cal.first_session:
            start = cal.first_session
        if start > cal.last_session:
            return None
        for session in cal.sessions_in_range(start, cal.last_session):
            base = cal.session_open(session) if anchor == "open" else cal.session_close(session)
            instant = (base + shift).to_pydatetime().astimezone(timezone.utc)
            if instant > after:
                return instant
    return None
