"""Raw-data accessors for the `classify_symbol(symbol)` strategy style.

`make_accessors(frames, default_timeframe)` returns plain functions over a provider mapping
`{(symbol, timeframe): DataFrame}` (DatetimeIndex in UTC; open, high, low, close, volume), which
the host fills from the bar store before the code runs. They run inside the sandbox, so:

* every DataFrame/Series handed out is a copy — user code can never change what a later call sees;
* `rolling_window` and `normalize_data` pick their operation from fixed tables by name, never by
  `getattr` with a user string;
* a symbol/timeframe that was not provided raises `DataUnavailable` (a `LookupError`);
* with a `clock` (a backtest or walk: the time of the bar being evaluated), every accessor is
  point-in-time: bars after the clock and reference facts known after it do not exist.

Reference data (security master, fundamentals, earnings, statements, sectors, indices) comes from
`backtest.refdata_accessors` over the `RefBundle` the node handed in.

Conventions: `days` means calendar days counted back from the series' last bar (not the wall
clock: the data may be historical); `start`/`end` are inclusive; returns drop the leading NaN.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .refdata_accessors import make_refdata_accessors

__all__ = ["DataUnavailable", "make_accessors", "frame_from_arrays", "ROLLING_FUNCS", "NORMALIZE_METHODS",
           "VECTOR_OPERATIONS", "ACCESSOR_NAMES", "Clock"]

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

#: vectorized_operation(values, operation, operand): binary operations need `operand` (a number
#: or values of the same length), unary ones refuse it; picked from this table by name only.
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda x, y: x + y,
    "subtract": lambda x, y: x - y,
    "multiply": lambda x, y: x * y,
    "divide": lambda x, y: x / y,
    "power": lambda x, y: x ** y,
    "maximum": lambda x, y: np.maximum(x, y),
    "minimum": lambda x, y: np.minimum(x, y),
    "greater": lambda x, y: (x > y).astype(np.float64),
    "less": lambda x, y: (x < y).astype(np.float64),
}
_UNARY: dict[str, Callable[[Any], Any]] = {
    "abs": np.abs,
    "log": np.log,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "sign": np.sign,
    "negative": np.negative,
    "cumsum": np.cumsum,
    "cumprod": np.cumprod,
}
_SHIFTING = ("shift", "diff", "pct_change")  # operand: whole number of periods (default 1)
VECTOR_OPERATIONS = tuple(_BINARY) + tuple(_UNARY) + _SHIFTING


class Clock:
    """The time the accessors answer as of (epoch ns), or None for "everything handed in".

    Set by the runtime, never handed to strategy code."""

    __slots__ = ("ns",)

    def __init__(self, ns: int | None = None) -> None:
        self.ns = ns

    def __call__(self) -> int | None:
        return self.ns


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


def _values(data: Any, name: str) -> Any:
    if isinstance(data, pd.DataFrame):
        return _close_of(data, "vectorized_operation")
    if isinstance(data, pd.Series):
        return data.astype(np.float64)
    if isinstance(data, (list, tuple, np.ndarray)):
        return np.asarray(data, dtype=np.float64)
    if isinstance(data, (int, float, np.integer, np.floating)) and not isinstance(data, bool):
        return float(data)
    raise TypeError(f"{name} must be a number, a list of numbers, a Series or a DataFrame with a close column")


def vectorized_operation(values: Any, operation: str, operand: Any = None) -> Any:
    """`operation` applied element-wise: a Series in → a Series out, otherwise a numpy array."""
    if not isinstance(operation, str) or operation not in VECTOR_OPERATIONS:
        raise ValueError(f"operation must be one of {', '.join(VECTOR_OPERATIONS)}, not {str(operation)[:30]!r}")
    x = _values(values, "values")
    if isinstance(x, float):
        x = np.asarray([x])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if operation in _BINARY:
            if operand is None:
                raise ValueError(f"{operation} needs an operand (a number or values of the same length)")
            y = _values(operand, "operand")
            if isinstance(y, pd.Series) and isinstance(x, pd.Series):
                y = y.to_numpy()
            if not isinstance(y, float) and len(y) != len(x):
                raise ValueError(f"operand has {len(y)} values but values has {len(x)}")
            out = _BINARY[operation](x, y)
        elif operation in _UNARY:
            if operand is not None:
                raise ValueError(f"{operation} takes no operand")
            out = _UNARY[operation](x)
        else:
            n = 1 if operand is None else operand
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not -MAX_WINDOW <= int(n) <= MAX_WINDOW:
                raise ValueError(f"{operation} takes a whole number of periods as its operand")
            series = x if isinstance(x, pd.Series) else pd.Series(x)
            if operation == "shift":
                out = series.shift(int(n))
            elif operation == "diff":
                out = series.diff(int(n))
            else:
                out = series.pct_change(int(n), fill_method=None)
            if not isinstance(x, pd.Series):
                out = out.to_numpy()
    return out.copy() if isinstance(out, pd.Series) else np.array(out, dtype=np.float64)


def make_accessors(
    frames: Mapping[tuple[str, str], pd.DataFrame], default_timeframe: str,
    refdata: Any = None, clock: Callable[[], int | None] | None = None,
) -> dict[str, Callable[..., Any]]:
    """The accessor functions, closed over a private snapshot of `frames` (and of `refdata`, a
    `RefBundle`). With `clock`, they answer as of `clock()` (see the module doc)."""
    # Our own shallow map, so later changes to the caller's mapping don't leak in either.
    store: dict[tuple[str, str], pd.DataFrame] = dict(frames)
    available = sorted({f"{s} {t}" for s, t in store})
    now = clock if clock is not None else (lambda: None)

    def _frame(symbol: Any, timeframe: Any) -> pd.DataFrame:
        frame = _full_frame(symbol, timeframe)
        at = now()
        if at is not None:
            frame = frame.iloc[: int(frame.index.searchsorted(pd.Timestamp(at, tz="UTC"), side="right"))]
        return frame

    def _full_frame(symbol: Any, timeframe: Any) -> pd.DataFrame:
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

    def get_historical_data(symbol: str, timeframe: str | None = None, start: Any = None, end: Any = None,
                            *, periods: Any = None, offset: Any = None) -> pd.DataFrame:
        """Bars of `symbol` with start <= time <= end (naive times are UTC); or the lagged form
        `get_historical_data(symbol, timeframe, periods, offset)`: the `periods` bars that end
        `offset` bars before the latest one (offset 0: the latest `periods` bars). A whole
        number as the third argument is `periods`, as the fourth `offset`."""
        frame = _frame(symbol, timeframe)
        whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
        if periods is None and whole(start) and (end is None or whole(end)):
            periods, offset, start, end = start, end, None, None
        if periods is not None or offset is not None:
            if start is not None or end is not None:
                raise ValueError("use either start/end or periods/offset, not both")
            n = _periods(1 if periods is None else periods, "periods")
            lag = 0 if offset is None else offset
            if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
                raise ValueError(f"offset must be a whole number >= 0, not {str(lag)[:30]}")
            stop = len(frame) - int(lag)
            if stop <= 0:
                raise DataUnavailable(f"{symbol} has {len(frame)} bars; offset {int(lag)} leaves none")
            return frame.iloc[max(0, stop - n): stop].copy(deep=True)
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

    def get_volume_data(symbol: str, days: float | None = None, timeframe: str | None = None) -> pd.DataFrame:
        """Per bar: `volume` and `dollar_volume` (close × volume), over the last `days` days."""
        frame = get_price_data(symbol, timeframe, days)
        return pd.DataFrame({"volume": frame["volume"], "dollar_volume": frame["close"] * frame["volume"]},
                            index=frame.index)

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
        "get_volume_data": get_volume_data,
        "vectorized_operation": vectorized_operation,
        **make_refdata_accessors(refdata, now, get_price_data, DataUnavailable),
    }


#: Every name make_accessors serves: the node and the runtime hand accessors (and fetch
#: reference data) only to code that names one of them.
ACCESSOR_NAMES = frozenset({
    "get_price_data", "get_historical_data", "get_multiple_symbols_data", "calculate_returns",
    "calculate_log_returns", "rolling_window", "normalize_data", "get_volume_data", "vectorized_operation",
    "get_security_info", "get_fundamental_data", "get_earnings_data", "get_financial_statements",
    "get_sector_data", "get_market_indices",
})
