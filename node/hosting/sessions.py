"""Trading sessions of scheduled deployments: `exchange_calendars` (ISO 10383 MIC codes: XNYS,
XNAS, XLON, XBOM for the Indian exchanges' shared holidays and hours, ...).

Why this library: it is the maintained successor of Quantopian's trading_calendars, used by
zipline-reloaded; it carries each exchange's sessions, early closes and holidays as data with
regular releases, needs nothing beyond pandas/numpy (already here) and a few small packages,
and imports in about 0.4 s (lazily, on the first deployment that names a session).

A fire of a deployment with `session` is taken only while that exchange is open at the fire's
time (`is_open_on_minute`): outside the session hours, on weekends and on holidays it is dropped.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

from contracts import ErrorCode, ExecutionError


@lru_cache(maxsize=64)
def calendar(name: str) -> Any:
    import exchange_calendars

    return exchange_calendars.get_calendar(name)


def check(name: str) -> None:
    import exchange_calendars

    if name not in exchange_calendars.get_calendar_names():
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.session` {name!r} is not an exchange calendar (ISO MIC such "
                             "as XNYS, XNAS, XLON, XBOM for Indian NSE/BSE hours and holidays)")


def is_open(name: str, moment: datetime) -> bool:
    import warnings

    import pandas as pd

    cal = calendar(name)
    ts = pd.Timestamp(moment).tz_convert("UTC").floor("min")
    if ts < cal.first_minute or ts > cal.last_minute:
        return False
    with warnings.catch_warnings():  # the library's own pandas deprecation notices
        warnings.simplefilter("ignore")
        return bool(cal.is_open_on_minute(ts))
