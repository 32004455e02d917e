"""Bar files (CSV, Parquet) into `BarArrays`, and into the bar store.

Columns are matched case-insensitively: one time column (`timestamp`, `date`, `datetime` or
`time`), `open`, `high`, `low`, `close` and optionally `volume` (missing → 0). Times may be
ISO-8601 / other pandas-parsable strings (naive ones are UTC), integer YYYYMMDD dates, or epoch
numbers (unit guessed from the magnitude — seconds, milliseconds, microseconds or nanoseconds —
unless `unit` is given).
Rows must already be in time order: an unsorted file, a repeated time or an empty/non-numeric
value is rejected naming the row, never silently fixed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, TextIO

import numpy as np
import pandas as pd

from contracts import BarArrays
from contracts.bars import COLUMNS, first_out_of_order

from .store import BarStore, LoadReport

__all__ = ["read_bars", "frame_to_arrays", "load_file", "ProgressBar", "TIME_COLUMNS"]

TIME_COLUMNS = ("timestamp", "date", "datetime", "time")
_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def read_bars(path: str | os.PathLike, unit: str = "auto") -> BarArrays:
    """Read a `.csv` (optionally `.gz` etc.) or `.parquet`/`.pq` file of bars; ValueError if bad."""
    path = os.fspath(path)
    name = path.lower()
    if name.endswith((".parquet", ".pq")):
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(
                f"{path}: reading Parquet needs pyarrow, which is not installed "
                f"(pip install pyarrow), or convert the file to CSV"
            ) from None
        frame = pd.read_parquet(path)
        if "timestamp" not in {str(c).lower() for c in frame.columns} and isinstance(
            frame.index, pd.DatetimeIndex
        ):
            frame = frame.reset_index(names="timestamp")
        line_offset = None
    else:
        try:
            frame = pd.read_csv(path, skipinitialspace=True)
        except pd.errors.EmptyDataError:
            raise ValueError(f"{path}: the file is empty") from None
        except pd.errors.ParserError as exc:
            raise ValueError(f"{path}: not a readable CSV file: {exc}") from None
        line_offset = 2  # row 0 is on line 2, after the header
    return frame_to_arrays(frame, source=path, unit=unit, line_offset=line_offset)


def _where(source: str, i: int, line_offset: int | None) -> str:
    where = f"{source}: row {i}"
    if line_offset is not None:
        where += f" (line {i + line_offset})"
    return where


def _find(frame: pd.DataFrame, names: tuple[str, ...]) -> str | None:
    lowered: dict[str, str] = {}
    for col in frame.columns:
        lowered.setdefault(str(col).strip().lower(), col)
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


def _epoch_unit(values: np.ndarray) -> str:
    biggest = float(np.nanmax(np.abs(values))) if values.size else 0.0
    if biggest < 1e11:
        return "s"
    if biggest < 1e14:
        return "ms"
    if biggest < 1e17:
        return "us"
    return "ns"


def _looks_like_yyyymmdd(values: np.ndarray) -> bool:
    """Integer dates such as 20240102 (which would otherwise read as 1970 epoch seconds)."""
    if not values.size or not np.array_equal(values, np.round(values)):
        return False
    if not ((values >= 19000101) & (values <= 21001231)).all():
        return False
    months = (values // 100) % 100
    days = values % 100
    return bool(((months >= 1) & (months <= 12) & (days >= 1) & (days <= 31)).all())


def _times_ns(column: pd.Series, source: str, unit: str, line_offset: int | None) -> np.ndarray:
    if unit not in ("auto", *_UNITS):
        raise ValueError(f"unit must be auto, s, ms, us or ns, not {unit!r}")
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column):
        parsed = pd.to_datetime(column, utc=True)
    elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        values = column.to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(f"{_where(source, int(np.flatnonzero(bad)[0]), line_offset)}: time is empty")
        if unit == "auto" and _looks_like_yyyymmdd(values):
            parsed = pd.to_datetime(column.astype(np.int64).astype(str), format="%Y%m%d", utc=True)
            return parsed.dt.as_unit("ns").astype("int64").to_numpy()
        scale = _UNITS[_epoch_unit(values) if unit == "auto" else unit]
        if not (np.abs(values) * scale < 9.2e18).all():
            raise ValueError(f"{source}: epoch times are out of range for unit {unit!r}")
        if scale == 1 or np.array_equal(values, np.round(values)):
            return column.to_numpy(dtype=np.int64) * scale
        return np.round(values * scale).astype(np.int64)
    else:
        text = column.astype("string").str.strip()
        try:
            parsed = pd.to_datetime(text, utc=True, format="ISO8601")
        except (ValueError, TypeError):
            parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        missing = parsed.isna().to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise ValueError(
                f"{_where(source, i, line_offset)}: time {str(column.iloc[i])[:40]!r} is not a "
                f"date/time pandas can parse"
            )
    return parsed.dt.as_unit("ns").astype("int64").to_numpy()


def frame_to_arrays(
    frame: pd.DataFrame, source: str = "bars", unit: str = "auto", line_offset: int | None = None
) -> BarArrays:
    """A DataFrame with a time column and OHLC(V) columns as validated `BarArrays`."""
    if frame.empty:
        raise ValueError(f"{source}: no bars (the file has no data rows)")
    time_col = _find(frame, TIME_COLUMNS)
    if time_col is None:
        raise ValueError(
            f"{source}: no time column; expected one of {', '.join(TIME_COLUMNS)} "
            f"(found: {', '.join(map(str, frame.columns))[:200]})"
        )
    names = {}
    for name in COLUMNS:
        col = _find(frame, (name,))
        if col is None and name != "volume":
            raise ValueError(f"{source}: no {name} column (found: {', '.join(map(str, frame.columns))[:200]})")
        names[name] = col

    ts = _times_ns(frame[time_col], source, unit, line_offset)
    disorder = first_out_of_order(ts)
    if disorder is not None:
        i, repeated = disorder
        what = "repeats the time of" if repeated else "is earlier than"
        raise ValueError(
            f"{_where(source, i, line_offset)} {what} row {i - 1} "
            f"({frame[time_col].iloc[i]!s} vs {frame[time_col].iloc[i - 1]!s}); "
            f"rows must be sorted by time with no duplicates"
        )

    columns: dict[str, np.ndarray] = {}
    for name, col in names.items():
        if col is None:
            columns[name] = np.zeros(ts.size, dtype=np.float64)
            continue
        raw = frame[col]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{_where(source, i, line_offset)}: {name} is {str(raw.iloc[i])[:40]!r}, "
                f"not a finite number"
            )
        columns[name] = values
    return BarArrays.from_numpy(ts, **columns)


async def load_file(
    js,
    path: str | os.PathLike,
    symbol: str,
    timeframe: str,
    progress: Callable[[int, int], None] | None = None,
    unit: str = "auto",
    store: BarStore | None = None,
) -> LoadReport:
    """Read a bar file and store its new bars (see `BarStore.load`)."""
    arrays = read_bars(path, unit=unit)
    store = store or BarStore(js)
    return await store.load(symbol, timeframe, arrays, progress=progress)


class ProgressBar:
    """A dependency-free text progress bar, callable as `progress(done, total)`.

    On a terminal it redraws one line (at most ~10 times a second); elsewhere it prints a line per
    25% so logs stay short. Call `close()` (or use it as a context manager) to end the line.
    """

    def __init__(self, total: int, label: str = "", stream: TextIO | None = None, width: int = 30) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._last_quarter = -1
        self._drawn = False
        self._started = time.monotonic()

    def __call__(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = max(0, int(total))
        self.done = max(0, min(int(done), self.total)) if self.total else int(done)
        finished = self.total > 0 and self.done >= self.total
        if self._tty:
            now = time.monotonic()
            if finished or now - self._last_draw >= 0.1 or not self._drawn:
                self._last_draw = now
                self.stream.write("\r" + self.render())
                self.stream.flush()
                self._drawn = True
        else:
            quarter = (4 * self.done // self.total) if self.total else 4
            if quarter > self._last_quarter:
                self._last_quarter = quarter
                self.stream.write(self.render() + "\n")
                self.stream.flush()

    def render(self) -> str:
        frac = (self.done / self.total) if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        label = f"{self.label} " if self.label else ""
        return f"{label}[{bar}] {frac * 100:5.1f}% {self.done:,}/{self.total:,}"

    def close(self) -> None:
        if self._tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
