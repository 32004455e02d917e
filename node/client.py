"""An async client for other Python services: `await client.execute(code, bars)`.

It speaks the public wire contract over plain NATS request-reply, exactly like a client in any
other language would; msgpack is used when `msgpack=True`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import msgspec
import nats
import numpy as np

from contracts import (
    BacktestRequest,
    BacktestResult,
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


def as_bars(bars: Any) -> Bars | None:
    """Bars from a `Bars`, a DataFrame (DatetimeIndex or a timestamp column), column dict or rows."""
    if bars is None or isinstance(bars, Bars):
        return bars
    if hasattr(bars, "to_dict") and hasattr(bars, "columns"):  # pandas DataFrame
        frame = bars
        if "timestamp" in frame.columns:
            stamps = frame["timestamp"]
        else:
            stamps = frame.index
        import pandas as pd

        ns = pd.to_datetime(stamps, utc=True).asi8 if not np.issubdtype(np.asarray(stamps).dtype, np.number) \
            else np.asarray(stamps, dtype=np.int64) * 1_000_000
        cols = {k: frame[k].astype("float64").tolist() for k in ("open", "high", "low", "close")}
        volume = frame["volume"].astype("float64").tolist() if "volume" in frame.columns else None
        return Bars(timestamp=(np.asarray(ns) // 1_000_000).tolist(), volume=volume, **cols)
    if isinstance(bars, Mapping):
        return msgspec.convert(dict(bars), Bars)
    rows = list(bars)
    return Bars(
        timestamp=[r["timestamp"] for r in rows],
        **{k: [float(r[k]) for r in rows] for k in ("open", "high", "low", "close")},
        volume=[float(r.get("volume", 0.0)) for r in rows],
    )


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
                      timeout: float | None = None, **fields: Any) -> ExecuteResult:
        if market_data is not None:
            fields["market_data"] = msgspec.convert(list(market_data), list[BarRow])
        req = ExecuteRequest(code=code, bars=as_bars(bars), **fields)
        wait = timeout if timeout is not None else (req.timeout_ms or 10_000) / 1000 + _MARGIN_S
        return await self._request(subjects.EXECUTE, req, ExecuteResult, wait)

    async def validate(self, code: str, *, timeout: float = 10.0, **fields: Any) -> ValidateResult:
        return await self._request(subjects.VALIDATE, ValidateRequest(code=code, **fields), ValidateResult, timeout)

    async def backtest(self, code: str, bars: Any = None, *, timeout: float | None = None,
                       **fields: Any) -> BacktestResult:
        req = BacktestRequest(code=code, bars=as_bars(bars), **fields)
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


async def connect(url: str = "nats://127.0.0.1:4222", *, msgpack: bool = False, **options: Any) -> StrategyClient:
    """A client with its own NATS connection, closed by `close()` / `async with`."""
    nc = await nats.connect(url, **options)
    return StrategyClient(nc, msgpack=msgpack, owns_connection=True)
