"""Raw-data accessors for the `classify_symbol(symbol)` strategy style.

`make_accessors(frames, default_timeframe)` returns plain functions over a provider mapping
`{(symbol, timeframe): DataFrame}` (DatetimeIndex in UTC; open, high, low, close, volume), which
the host fills from the bar store before the code runs. They run inside the sandbox, so:

* every DataFrame/Series handed out is a copy — user code can never change what a later call sees;
* `rolling_window` and `normalize_data` pick their operation from fixed tables by name, never by
  `getattr` with a user string;
* a symbol/timeframe that was not provided raises `DataUnavailable` (a `LookupError`).

Conventions: `days` means calendar days counted back from the series' last bar (not the wall
clock: the data may be historical); `start`/`end` are inclusive; returns drop the leading NaN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

__all__ = ["DataUnavailable", "make_accessors", "frame_from_arrays", "ROLLING_FUNCS", "NORMALIZE_METHODS"]

MAX_SYMBOLS_PER_CALL = 1_000
MAX_WINDOW = 1_000_000


class DataUnavailable(LookupError):
    """No bars were provided for the requested symbol/timeframe."""

    def __str__(self) -> str:  # LookupError would show the repr of the message
        return str(self.args[0]) if self.args else "data unavailable"


ROLLING_FUNCS: dict[str, Callable[[Any], pd.Series]] = {
    "mean": lambda r: r.mean(),
    "std": lambda r: r.std(),
    "var": lambda r: r.var(),
    "min": lambda r: r.min(),
    "max": lambda r: r.max(),
    "sum": lambda r: r.sum(),
    "median": lambda r: r.median(),
}


def _minmax(x):
    lo, hi = x.min(), x.max()
    span = hi - lo
    if isinstance(span, pd.Series):
        span = span.replace(0, np.nan)
        return ((x - lo) / span).fillna(0.0)
    return (x - lo) / span if span else x * 0.0


def _zscore(x):
    mean, std = x.mean(), x.std()
    if isinstance(std, pd.Series):
        std = std.replace(0, np.nan)
        return ((x - mean) / std).fillna(0.0)
    return (x - mean) / std if std else x * 0.0


NORMALIZE_METHODS: dict[str, Callable[[Any], Any]] = {"minmax": _minmax, "zscore": _zscore}


def _close_of(data: Any, fn: str) -> pd.Series:
    if isinstance(data, pd.DataFrame):
        for col in data.columns:
            if str(col).lower() == "close":
                return data[col].astype(np.float64)
        raise ValueError(f"{fn}: the DataFrame has no close column")
    if isinstance(data, pd.Series):
        return data.astype(np.float64)
    if isinstance(data, (list, tuple, np.ndarray)):
        return pd.Series(np.asarray(data, dtype=np.float64))
    raise TypeError(f"{fn} takes a DataFrame with a close column, a Series or a list of prices")


def _periods(value: Any, name: str = "periods") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number, not {type(value).__name__}")
    value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")
    return value


def _days(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"days must be a number, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"days must be a positive number, not {value}")
    return value


def _when(value: Any, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ValueError(f"{name} is not a date/time: {str(value)[:40]!r}") from None
    if stamp is pd.NaT:
        raise ValueError(f"{name} is not a date/time: {str(value)[:40]!r}")
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def frame_from_arrays(arrays) -> pd.DataFrame:
    """`BarArrays` (e.g. from `BarStore.replay`) as the DataFrame shape the accessors serve."""
    index = pd.DatetimeIndex(arrays.column("timestamp").astype("datetime64[ns]"), tz="UTC", name="timestamp")
    return pd.DataFrame(
        {name: arrays.column(name).copy() for name in ("open", "high", "low", "close", "volume")},
        index=index,
    )


def make_accessors(
    frames: Mapping[tuple[str, str], pd.DataFrame], default_timeframe: str
) -> dict[str, Callable[..., Any]]:
    """The accessor functions, closed over a private snapshot of `frames`."""
    # Our own shallow map, so later changes to the caller's mapping don't leak in either.
    store: dict[tuple[str, str], pd.DataFrame] = dict(frames)
    available = sorted({f"{s} {t}" for s, t in store})

    def _frame(symbol: Any, timeframe: Any) -> pd.DataFrame:
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be a string, not {type(symbol).__name__}")
        tf = default_timeframe if timeframe is None else timeframe
        if not isinstance(tf, str):
            raise TypeError(f"timeframe must be a string, not {type(tf).__name__}")
        frame = store.get((symbol, tf))
        if frame is None:
            shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
            raise DataUnavailable(
                f"no data for {symbol} {tf}; available: {shown or 'none'}"
            )
        return frame

    def get_price_data(symbol: str, timeframe: str | None = None, days: float | None = None) -> pd.DataFrame:
        """Bars of `symbol`; with `days`, only the last `days` calendar days up to the last bar."""
        frame = _frame(symbol, timeframe)
        span = _days(days)
        if span is not None and len(frame):
            cutoff = frame.index[-1] - pd.Timedelta(days=span)
            frame = frame[frame.index > cutoff]
        return frame.copy(deep=True)

    def get_historical_data(symbol: str, timeframe: str | None = None, start: Any = None, end: Any = None) -> pd.DataFrame:
        """Bars of `symbol` with start <= time <= end (naive times are UTC)."""
        frame = _frame(symbol, timeframe)
        lo, hi = _when(start, "start"), _when(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"start {lo} is after end {hi}")
        mask = np.ones(len(frame), dtype=bool)
        if lo is not None:
            mask &= frame.index >= lo
        if hi is not None:
            mask &= frame.index <= hi
        return frame[mask].copy(deep=True)

    def get_multiple_symbols_data(
        symbols: Iterable[str], timeframe: str | None = None, days: float | None = None
    ) -> dict[str, pd.DataFrame]:
        """`get_price_data` for several symbols: {symbol: DataFrame}."""
        if isinstance(symbols, str):
            symbols = [symbols]
        names = list(symbols)
        if len(names) > MAX_SYMBOLS_PER_CALL:
            raise ValueError(f"at most {MAX_SYMBOLS_PER_CALL} symbols per call, not {len(names)}")
        return {name: get_price_data(name, timeframe, days) for name in names}

    def calculate_returns(data: Any, periods: int = 1) -> pd.Series:
        """Simple returns of close over `periods` bars (leading NaN dropped)."""
        close = _close_of(data, "calculate_returns")
        n = _periods(periods)
        return (close / close.shift(n) - 1.0).iloc[n:].copy()

    def calculate_log_returns(data: Any, periods: int = 1) -> pd.Series:
        """Log returns of close over `periods` bars (leading NaN dropped)."""
        close = _close_of(data, "calculate_log_returns")
        n = _periods(periods)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(close / close.shift(n))
        return out.iloc[n:].copy()

    def rolling_window(series: Any, window: int, func: str = "mean") -> pd.Series:
        """Rolling `func` (mean, std, var, min, max, sum, median) over `window` bars."""
        if isinstance(series, pd.DataFrame):
            series = _close_of(series, "rolling_window")
        elif not isinstance(series, pd.Series):
            series = _close_of(series, "rolling_window")
        size = _periods(window, "window")
        if size > MAX_WINDOW:
            raise ValueError(f"window must be at most {MAX_WINDOW}")
        if not isinstance(func, str) or func not in ROLLING_FUNCS:
            raise ValueError(f"func must be one of {', '.join(ROLLING_FUNCS)}, not {str(func)[:30]!r}")
        return ROLLING_FUNCS[func](series.rolling(size)).copy()

    def normalize_data(data: Any, method: str = "minmax") -> Any:
        """Scale a Series (or each column of a DataFrame): minmax → [0, 1], zscore → mean 0, std 1."""
        if not isinstance(method, str) or method not in NORMALIZE_METHODS:
            raise ValueError(f"method must be one of {', '.join(NORMALIZE_METHODS)}, not {str(method)[:30]!r}")
        if isinstance(data, pd.DataFrame):
            numeric = data.select_dtypes(include="number").astype(np.float64)
            return NORMALIZE_METHODS[method](numeric).copy()
        if isinstance(data, pd.Series):
            return NORMALIZE_METHODS[method](data.astype(np.float64)).copy()
        if isinstance(data, (list, tuple, np.ndarray)):
            return NORMALIZE_METHODS[method](pd.Series(np.asarray(data, dtype=np.float64)))
        raise TypeError("normalize_data takes a Series, a DataFrame or a list of numbers")

    return {
        "get_price_data": get_price_data,
        "get_historical_data": get_historical_data,
        "get_multiple_symbols_data": get_multiple_symbols_data,
        "calculate_returns": calculate_returns,
        "calculate_log_returns": calculate_log_returns,
        "rolling_window": rolling_window,
        "normalize_data": normalize_data,
    }
