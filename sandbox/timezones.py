"""Named time zones inside a sandbox that has no files: the zone data is read once, in memory.

The zygote calls `preload()` before it locks itself into the empty root. It reads every
IANA zone the interpreter can find (the system zoneinfo directory first, then the `tzdata`
package, the same order `zoneinfo` uses) into one dict of bytes, and turns `zoneinfo`'s file
search off: from then on `ZoneInfo(key)` (and so pandas' `tz="America/New_York"`,
`tz_localize`, `tz_convert`) is served from memory. An unknown key raises
`ZoneInfoNotFoundError` naming only the key; no lookup touches the file system, so no error a
strategy can see, caught or not, carries a host path.

pandas' `"dateutil/<zone>"` names are served from the same bytes.
"""

from __future__ import annotations

import io
import zoneinfo
from zoneinfo import _common, _tzpath

_ZONES: dict[str, bytes] = {}


def _load_from_memory(key: str):
    data = _ZONES.get(key)
    if data is None:
        raise zoneinfo.ZoneInfoNotFoundError(f"No time zone found with key {key}")
    return io.BytesIO(data)


def _available() -> set[str]:
    return set(_ZONES)


def _read(key: str) -> bytes | None:
    path = _tzpath.find_tzfile(key)
    try:
        if path is not None:
            with open(path, "rb") as fh:
                return fh.read()
        with _common.load_tzdata(key) as fh:
            return fh.read()
    except (OSError, zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


def preload() -> int:
    """Read every zone into memory and route all later lookups there; returns how many."""
    if not _ZONES:
        for key in sorted(zoneinfo.available_timezones()):
            data = _read(key)
            if data is not None and data[:4] == b"TZif":
                _ZONES[key] = data
    _tzpath.reset_tzpath(to=())
    _common.load_tzdata = _load_from_memory  # the C ZoneInfo looks this name up at call time
    zoneinfo.available_timezones = _tzpath.available_timezones = _available
    zoneinfo.ZoneInfo.clear_cache()
    _route_dateutil()
    return len(_ZONES)


def _route_dateutil() -> None:
    """pandas' "dateutil/<zone>" names: dateutil searches zoneinfo's TZPATH (now empty), then
    loads from the tzdata package through this one function, which now reads memory."""
    try:
        from dateutil import _tzdata_impl
    except ImportError:
        return
    not_found = getattr(_tzdata_impl, "TZFileNotFound", None)
    if not_found is None or not hasattr(_tzdata_impl, "_load_tzdata"):
        return

    def load(key: str):
        data = _ZONES.get(key)
        if data is None:
            raise not_found("Time zone not found: %s", zone_key=key)
        return io.BytesIO(data)

    _tzdata_impl._load_tzdata = load
