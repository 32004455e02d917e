"""OHLCV bars in the two wire shapes: columnar (preferred) and rows (the older format).

Timestamps are ISO-8601 strings or epoch milliseconds; `to_epoch_ns` normalizes either so
everything past decoding works on one int64 column. A time outside 1678-01-01 .. 2261-12-31 UTC
(what int64 nanoseconds, and so pandas, hold) is refused there, naming the field and index:
`bars.timestamp[3] is out of range (1e+17 ms)`; it would otherwise wrap or become NaT.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Annotated

import msgspec
import numpy as np

from .limits import MAX_BARS

Timestamp = int | float | str
_Column = Annotated[list[float], msgspec.Meta(max_length=MAX_BARS)]

COLUMNS = ("open", "high", "low", "close", "volume")


class Bars(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Columnar bars: six arrays of equal length, oldest first."""

    timestamp: Annotated[list[Timestamp], msgspec.Meta(max_length=MAX_BARS)]
    open: _Column
    high: _Column
    low: _Column
    close: _Column
    volume: _Column | None = None

    def __post_init__(self) -> None:
        n = len(self.timestamp)
        for name in COLUMNS:
            column = getattr(self, name)
            if column is not None and len(column) != n:
                raise ValueError(
                    f"bars.{name} has {len(column)} values but bars.timestamp has {n}"
                )


class BarRow(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One bar of the older row format (`market_data`).

    Any other key is refused with INVALID_REQUEST naming it and the row (e.g. `vwap` at
    `$.market_data[0]`), except
    `symbol`: row exports from trading platforms and databases commonly carry the row's symbol,
    so it is declared. It does not choose the series (the request's `symbol` does); it is
    checked instead: every row must name the same symbol, and the request's `symbol` when that
    is given (`check_row_symbols`), so a mixed or mislabelled series is refused, not run.
    """

    timestamp: Timestamp
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0
    symbol: Annotated[str, msgspec.Meta(max_length=64)] | None = None


def check_row_symbols(rows: list[BarRow], symbol: str = "") -> None:
    """ValueError naming the first row whose `symbol` disagrees with the request's `symbol`
    (when given) or with the first row that names one."""
    expected, where = (symbol, "the request's `symbol`") if symbol else (None, "")
    for i, row in enumerate(rows):
        if row.symbol is None:
            continue
        if expected is None:
            expected, where = row.symbol, f"market_data[{i}].symbol"
        elif row.symbol != expected:
            raise ValueError(f"market_data[{i}].symbol is {row.symbol!r} but {where} is {expected!r}; "
                             "send one symbol's bars per request")


class BarArrays(msgspec.Struct, kw_only=True, array_like=True):
    """Bars as numpy-ready bytes: what crosses to the sandbox and the bar store."""

    timestamp: bytes  # int64 epoch nanoseconds, native byte order
    open: bytes
    high: bytes
    low: bytes
    close: bytes
    volume: bytes

    @property
    def count(self) -> int:
        return len(self.timestamp) // 8

    def column(self, name: str) -> np.ndarray:
        dtype = np.int64 if name == "timestamp" else np.float64
        return np.frombuffer(getattr(self, name), dtype=dtype)

    @classmethod
    def from_numpy(cls, timestamp_ns: np.ndarray, **columns: np.ndarray) -> "BarArrays":
        return cls(
            timestamp=np.ascontiguousarray(timestamp_ns, dtype=np.int64).tobytes(),
            **{k: np.ascontiguousarray(columns[k], dtype=np.float64).tobytes() for k in COLUMNS},
        )


def _iso_to_ns(value: str) -> int:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    delta = parsed - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


# Times a bar may carry: what int64 epoch-nanoseconds (and so pandas) can hold, with a margin
# (1678-01-01 up to, not including, 2262-01-01 UTC). Outside it a time would wrap or turn NaT.
MIN_EPOCH_MS = -9_214_560_000_000
MAX_EPOCH_MS = 9_214_646_400_000  # exclusive
MIN_EPOCH_NS = MIN_EPOCH_MS * 1_000_000
MAX_EPOCH_NS = MAX_EPOCH_MS * 1_000_000
TIME_RANGE = "1678-01-01 to 2261-12-31 UTC"


def _out_of_range(field: str, i: int, value: Timestamp) -> ValueError:
    shown = f"{value:g} ms" if isinstance(value, (int, float)) else repr(str(value)[:40])
    return ValueError(f"{field}[{i}] is out of range ({shown}); times must lie in {TIME_RANGE}")


def to_epoch_ns(values: list[Timestamp], field: str = "timestamp") -> np.ndarray:
    """Normalize wire timestamps to int64 epoch-ns; raises ValueError naming the bad item
    (unparseable, non-finite, or outside `TIME_RANGE`)."""
    if not values:
        return np.empty(0, dtype=np.int64)
    first = values[0]
    if not isinstance(first, str):
        try:
            millis = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            millis = None
        if millis is not None and millis.ndim == 1:
            finite = np.isfinite(millis)
            if not finite.all():
                i = int(np.flatnonzero(~finite)[0])
                raise ValueError(f"{field}[{i}] is {values[i]!r}; times must be finite epoch milliseconds")
            outside = (millis < MIN_EPOCH_MS) | (millis >= MAX_EPOCH_MS)
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise _out_of_range(field, i, values[i])
            whole = np.floor(millis)  # whole milliseconds in int64 (exact), the fraction in float
            return whole.astype(np.int64) * 1_000_000 + np.round((millis - whole) * 1_000_000).astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        try:
            if isinstance(value, str):
                ns = _iso_to_ns(value)
            else:
                millis = float(value)
                if millis != millis or millis in (float("inf"), float("-inf")):
                    raise ValueError
                whole = math.floor(millis)
                ns = whole * 1_000_000 + round((millis - whole) * 1_000_000)
        except (ValueError, OverflowError):
            raise ValueError(
                f"{field}[{i}] is not an ISO-8601 time or epoch milliseconds: {str(value)[:40]!r}"
            ) from None
        if not MIN_EPOCH_NS <= ns < MAX_EPOCH_NS:
            raise _out_of_range(field, i, value)
        out[i] = ns
    return out


def from_columns(bars: Bars) -> BarArrays:
    n = len(bars.timestamp)
    volume = bars.volume if bars.volume is not None else [0.0] * n
    return BarArrays.from_numpy(
        to_epoch_ns(bars.timestamp, "bars.timestamp"),
        open=np.asarray(bars.open, dtype=np.float64),
        high=np.asarray(bars.high, dtype=np.float64),
        low=np.asarray(bars.low, dtype=np.float64),
        close=np.asarray(bars.close, dtype=np.float64),
        volume=np.asarray(volume, dtype=np.float64),
    )


def from_rows(rows: list[BarRow]) -> BarArrays:
    return BarArrays.from_numpy(
        to_epoch_ns([r.timestamp for r in rows], "market_data.timestamp"),
        **{k: np.fromiter((getattr(r, k) for r in rows), np.float64, len(rows)) for k in COLUMNS},
    )


def ns_to_iso(ns: int) -> str:
    """Epoch-ns to the ISO-8601 UTC form every reply uses."""
    seconds, rem = divmod(int(ns), 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, tz=timezone.utc).replace(tzinfo=None)
    text = stamp.isoformat()
    if rem:
        text += f".{rem // 1000:06d}"
    return text + "Z"


def ns_to_isos(ns: np.ndarray) -> list[str]:
    """`ns_to_iso` over an array at numpy speed (equity curves and trade lists are long)."""
    ns = np.asarray(ns, dtype=np.int64)
    seconds = ns.view("datetime64[ns]").astype("datetime64[s]")
    text = np.char.add(np.datetime_as_string(seconds, unit="s"), "Z").tolist()
    for i in np.flatnonzero(ns % 1_000_000_000).tolist():
        text[i] = ns_to_iso(int(ns[i]))
    return text


def first_out_of_order(ts: np.ndarray) -> tuple[int, bool] | None:
    """`(i, repeated)` for the first bar whose time is not after the one before it, else None."""
    if ts.size < 2:
        return None
    step = np.diff(ts)
    bad = np.flatnonzero(step <= 0)
    if not bad.size:
        return None
    return int(bad[0]) + 1, bool(step[bad[0]] == 0)
