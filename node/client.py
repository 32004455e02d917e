"""An async client for other Python services: `await client.execute(code, bars)`.

It speaks the public wire contract over plain NATS request-reply, exactly like a client in any
other language would; msgpack is used when `msgpack=True`.

`bars` may be any of these shapes (see `as_bars`); all become the wire's columnar `Bars`:

- a pandas DataFrame with a DatetimeIndex in any unit (s, ms, us, ns; pandas 2 or 3), tz-aware
  (converted to UTC) or naive (read as UTC) — e.g. `pd.read_csv(f, parse_dates=["timestamp"])
  .set_index("timestamp")`;
- a DataFrame with a `timestamp`, `date`, `datetime` or `time` column (any case) holding
  datetimes, dates, ISO-8601 strings or epoch numbers;
- rows (an iterable of dicts) whose time is a `datetime`, `date`, `pd.Timestamp`, an ISO-8601
  string or an epoch number;
- a dict of columns (lists, numpy arrays — `datetime64` in any unit — or Series), or a numpy
  structured array.

Epoch numbers are read in the unit their magnitude says (seconds, milliseconds, microseconds or
nanoseconds) unless `unit=` is given. Anything that cannot be converted raises `ValueError`
naming the column and row, before anything is sent.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

import msgspec
import nats
import numpy as np

from contracts import (
    BacktestRequest,
    BacktestResult,
    BarArrays,
    BarRow,
    Bars,
    ExecuteRequest,
    ExecuteResult,
    Health,
    ScreenRequest,
    ScreenResult,
    ValidateRequest,
    ValidateResult,
    decode,
    encode,
    subjects,
)

_MARGIN_S = 2.0
_TIME_HINT = ("timestamp", "date", "datetime", "time")


def _frame(bars: Any):
    """Any supported shape as a DataFrame with a time column (not yet validated)."""
    import pandas as pd

    from backtest.loader import TIME_COLUMNS, _find

    if isinstance(bars, pd.DataFrame):
        frame = bars
        if _find(frame, TIME_COLUMNS) is None:
            index = frame.index
            if isinstance(index, pd.DatetimeIndex) or str(index.name or "").strip().lower() in TIME_COLUMNS:
                frame = frame.reset_index(names="timestamp")
            else:
                raise ValueError(
                    "bars: the DataFrame has no time: give it a DatetimeIndex or one of the columns "
                    f"{', '.join(TIME_COLUMNS)} (index is a {type(index).__name__}; columns: "
                    f"{', '.join(map(str, frame.columns))[:200]})"
                )
        return frame
    if isinstance(bars, np.ndarray):
        if bars.dtype.names is None:
            raise ValueError("bars: a numpy array must be a structured array with named columns "
                             "(timestamp, open, high, low, close[, volume])")
        return pd.DataFrame({name: bars[name] for name in bars.dtype.names})
    if isinstance(bars, Mapping):
        columns = {str(k): (v.to_numpy() if isinstance(v, pd.Series) else v) for k, v in bars.items()}
        lengths = {k: len(v) for k, v in columns.items() if v is not None}
        if len(set(lengths.values())) > 1:
            raise ValueError("bars: columns have different lengths: "
                             + ", ".join(f"{k}={n}" for k, n in lengths.items()))
        return pd.DataFrame({k: v for k, v in columns.items() if v is not None})
    if isinstance(bars, (str, bytes)):
        raise ValueError("bars: expected a DataFrame, rows or columns, not a string "
                         "(to read a file: backtest.loader.read_bars(path))")
    rows = []
    for i, row in enumerate(bars):
        if isinstance(row, msgspec.Struct):
            row = msgspec.structs.asdict(row)
        if not isinstance(row, Mapping):
            raise ValueError(f"bars: row {i} is a {type(row).__name__}, not a dict of "
                             "timestamp, open, high, low, close[, volume]")
        rows.append(row)
    return pd.DataFrame(rows)


def _wire(arrays: BarArrays) -> Bars:
    """Epoch milliseconds on the wire; ISO-8601 text when a time has sub-millisecond precision."""
    from contracts.bars import ns_to_isos

    ts = arrays.column("timestamp")
    stamps: list[Any] = ns_to_isos(ts) if (ts % 1_000_000).any() else (ts // 1_000_000).tolist()
    return Bars(timestamp=stamps, **{k: arrays.column(k).tolist() for k in ("open", "high", "low", "close", "volume")})


def as_bars(bars: Any, *, unit: str = "auto") -> Bars | None:
    """Wire `Bars` from any shape listed in the module docstring; ValueError naming what is wrong."""
    if bars is None or isinstance(bars, Bars):
        return bars
    from backtest.loader import frame_to_arrays

    return _wire(frame_to_arrays(_frame(bars), source="bars", unit=unit))


class StrategyClient:
    def __init__(self, nc: nats.NATS, *, msgpack: bool = False, owns_connection: bool = False) -> None:
        self.nc = nc
        self.kind = subjects.MSGPACK if msgpack else subjects.JSON
        self._owns = owns_connection

    async def _request(self, subject: str, message: Any, reply_type: type, timeout: float) -> Any:
        msg = await self.nc.request(subject, encode(message, self.kind),
                                    timeout=timeout, headers={subjects.CONTENT_TYPE: self.kind})
        return decode(msg.data, reply_type, self.kind)

    async def execute(self, code: str, bars: Any = None, *, market_data: Iterable[Mapping] | None = None,
                      timeout: float | None = None, unit: str = "auto", **fields: Any) -> ExecuteResult:
        """Run `code` over `bars` (any shape `as_bars` takes; `unit` for epoch numbers)."""
        if market_data is not None:
            fields["market_data"] = msgspec.convert(list(market_data), list[BarRow])
        req = ExecuteRequest(code=code, bars=as_bars(bars, unit=unit), **fields)
        wait = timeout if timeout is not None else (req.timeout_ms or 10_000) / 1000 + _MARGIN_S
        return await self._request(subjects.EXECUTE, req, ExecuteResult, wait)

    @property
    def hosting(self):
        """Hosted strategies on the same connection: registry, deployments, runs, live signals
        and logs (node/hosting/client.py)."""
        from .hosting.client import HostingClient

        return HostingClient(self.nc)

    async def validate(self, code: str, *, timeout: float = 10.0, **fields: Any) -> ValidateResult:
        return await self._request(subjects.VALIDATE, ValidateRequest(code=code, **fields), ValidateResult, timeout)

    async def backtest(self, code: str, bars: Any = None, *, timeout: float | None = None,
                       unit: str = "auto", **fields: Any) -> BacktestResult:
        """Backtest `code` over `bars` (any shape `as_bars` takes) or `source=BarsRef(...)`."""
        req = BacktestRequest(code=code, bars=as_bars(bars, unit=unit), **fields)
        wait = timeout if timeout is not None else (req.timeout_ms or 30_000) / 1000 + _MARGIN_S
        return await self._request(subjects.BACKTEST, req, BacktestResult, wait)

    async def screen(self, code: str, symbols: Iterable[str], *, timeout: float | None = None,
                     **fields: Any) -> ScreenResult:
        """Run a `classify_symbol(symbol)` strategy over stored symbols; see contracts.screen."""
        req = ScreenRequest(code=code, symbols=list(symbols), **fields)
        wait = timeout if timeout is not None else (req.timeout_ms or 10_000) / 1000 * max(1, len(req.symbols)) + _MARGIN_S
        return await self._request(subjects.SCREEN, req, ScreenResult, min(wait, 600.0))

    async def health(self, *, timeout: float = 5.0, node_id: str | None = None) -> Health:
        subject = subjects.node_health(node_id) if node_id else subjects.HEALTH
        return await self._request(subject, {}, Health, timeout)

    async def close(self) -> None:
        if self._owns:
            await self.nc.drain()

    async def __aenter__(self) -> "StrategyClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def _log_connection_error(exc: Exception) -> None:
    """One log line per connection error (nats-py's default prints a traceback for each)."""
    logging.getLogger("node.client").warning("NATS connection error: %s: %s", type(exc).__name__, exc)


async def connect(url: str = "nats://127.0.0.1:4222", *, msgpack: bool = False, **options: Any) -> StrategyClient:
    """A client with its own NATS connection, closed by `close()` / `async with`.

    `options` go to `nats.connect` (e.g. `max_reconnect_attempts=1, reconnect_time_wait=0.2` to
    fail fast when no server is up; by default nats-py retries for about two minutes).
    Connection errors are logged as one line each on the `node.client` logger.
    """
    options.setdefault("error_cb", _log_connection_error)
    nc = await nats.connect(url, **options)
    return StrategyClient(nc, msgpack=msgpack, owns_connection=True)
