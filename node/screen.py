"""`strategy.v1.screen`: a `classify_symbol(symbol)` strategy over symbols from the bar store.

The node replays every symbol of `symbols` and `universe` (default: `symbols`) from BARS once
(between `start` and `end`, the last `max_bars` of each), then runs one sandbox Job
(kind="classify") per symbol of `symbols`: that symbol's bars as `df`/`data`, and the whole
universe (symbol → BarArrays) behind the accessors (`get_price_data`,
`get_multiple_symbols_data`, ...). Runs share the node's point admission with sweep points and
keep at most `SWEEP_CONCURRENCY` in flight per request.

Bounds: at most `contracts.limits.MAX_SYMBOLS` symbols (checked at decode) and at most
`MAX_UNIVERSE_BARS` bars in the universe together, since every run receives all of it.
A symbol with no stored bars in the range gets a row with INVALID_REQUEST and does not run;
a universe-only symbol without bars is simply not available to the accessors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec

from contracts import (
    BarArrays,
    BarsRef,
    ErrorCode,
    ErrorInfo,
    ExecutionError,
    ScreenRequest,
    ScreenResult,
    ScreenRow,
    decode,
    encode,
)
from contracts.limits import MAX_BARS
from backtest.store import parse_time
from sandbox.pool import SandboxUnavailable
from sandbox.protocol import Job, OutputLimits

from .backtesting import run_admitted_patiently
from .failures import Overloaded, error_of
from .jobs import check_language, run_limits

log = logging.getLogger("node.screen")

MAX_UNIVERSE_BARS = MAX_BARS
MAX_LOG_LINES = 1_000


def _tail(arrays: BarArrays, n: int) -> BarArrays:
    if arrays.count <= n:
        return arrays
    cut = (arrays.count - n) * 8
    return BarArrays(**{k: getattr(arrays, k)[cut:] for k in ("timestamp", "open", "high", "low", "close", "volume")})


def _passes(value: Any) -> bool:
    return bool(value)


class Screening:
    def __init__(self, backtesting: Any) -> None:
        self.bt = backtesting

    async def handle(self, data: bytes, kind: str, received: float) -> ScreenResult:
        t0 = time.perf_counter()
        request_id = None
        try:
            req = decode(data, ScreenRequest, kind)
            request_id = req.request_id
            result = await self._screen(req)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            result = ScreenResult(success=False, error=error_of(exc, "screen"))
        result.request_id = request_id
        result.node_id = self.bt.settings.node_id
        result.execution_time_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        result = self._fit(result, kind)
        self.bt.metrics.finished("screen", result.error.code if result.error else None, result.execution_time_ms)
        return result

    def _fit(self, result: ScreenResult, kind: str) -> ScreenResult:
        """Too large for max_payload: drop the rows' `result` values and the logs (the verdicts
        stay), and say so with OUTPUT_LIMIT; if even that does not fit, only the error."""
        limit = self.bt.max_reply()
        size = len(encode(result, kind))
        if size <= limit:
            return result
        error = ErrorInfo(code=ErrorCode.OUTPUT_LIMIT,
                          message=f"the screen reply is {size:,} bytes; the broker's max_payload allows "
                                  f"{limit:,}: per-symbol results and logs were left out")
        slim = msgspec.structs.replace(
            result, success=False, error=error, logs=[],
            results=[msgspec.structs.replace(r, result=None) for r in result.results])
        if len(encode(slim, kind)) <= limit:
            return slim
        return ScreenResult(success=False, error=error, node_id=result.node_id, request_id=result.request_id,
                            execution_time_ms=result.execution_time_ms)

    async def _screen(self, req: ScreenRequest) -> ScreenResult:
        bt = self.bt
        check_language(req.language)
        budget_ms, memory_mb = run_limits(req, bt.settings)
        compiled, hit = bt.cache.get(req.code)
        bt.metrics.compile(hit)
        if compiled.style != "classify":
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 "a screen runs `def classify_symbol(symbol)`; this code does not define it")
        start = parse_time(req.start, "start")
        end = parse_time(req.end, "end", end=True)
        if start is not None and end is not None and start > end:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, "empty range: start is after end")

        names = list(dict.fromkeys([*req.symbols, *(req.universe if req.universe is not None else [])]))
        bars: dict[str, BarArrays] = {}
        missing: dict[str, ErrorInfo] = {}
        gate = asyncio.Semaphore(16)

        async def fetch(symbol: str) -> None:
            async with gate:
                try:
                    arrays = await bt.replay(BarsRef(symbol=symbol, timeframe=req.timeframe,
                                                     start=req.start, end=req.end))
                except ExecutionError as exc:
                    if exc.code != ErrorCode.INVALID_REQUEST:
                        raise
                    missing[symbol] = exc.info()
                else:
                    bars[symbol] = _tail(arrays, req.max_bars)

        await asyncio.gather(*(fetch(s) for s in names))
        total = sum(a.count for a in bars.values())
        if total > MAX_UNIVERSE_BARS:
            raise ExecutionError(
                ErrorCode.INVALID_REQUEST,
                f"the universe holds {total:,} bars; the limit is {MAX_UNIVERSE_BARS:,} — narrow "
                f"start/end, lower max_bars or name fewer symbols in `universe`")
        universe = {s: bars[s] for s in names if s in bars}
        code = compiled.to_bytes()
        rows: dict[str, ScreenRow] = {}
        logs: list[str] = []
        todo = iter([s for s in req.symbols])

        async def run_one(symbol: str) -> None:
            if symbol in missing:
                rows[symbol] = ScreenRow(symbol=symbol, error=missing[symbol])
                return
            job = Job(kind="classify", code=code, bars=bars[symbol], symbol=symbol,
                      timeframe=req.timeframe, parameters=req.parameters, timeout_ms=budget_ms,
                      memory_mb=memory_mb, limits=OutputLimits(), universe=universe)
            try:
                outcome = await run_admitted_patiently(bt.points, lambda: bt.pool.run(job))
            except (Overloaded, SandboxUnavailable):
                rows[symbol] = ScreenRow(symbol=symbol, bars=bars[symbol].count, error=ErrorInfo(
                    code=ErrorCode.OVERLOADED, message="no capacity left to run this symbol"))
                return
            for line in outcome.logs:
                if len(logs) < MAX_LOG_LINES:
                    logs.append(f"{symbol}: {line}")
            rows[symbol] = ScreenRow(
                symbol=symbol, bars=bars[symbol].count, result=outcome.result, error=outcome.error,
                passed=outcome.success and _passes(outcome.result),
            )

        async def worker() -> None:
            for symbol in todo:
                await run_one(symbol)

        await asyncio.gather(*(worker() for _ in range(max(1, min(bt.concurrency, len(req.symbols))))))
        ordered = [rows[s] for s in req.symbols]
        return ScreenResult(success=True, passed=[r.symbol for r in ordered if r.passed],
                            results=ordered, logs=logs)
