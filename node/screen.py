"""`strategy.v1.screen`: a `classify_symbol(symbol)` strategy over symbols from the bar store.

The node replays every symbol of `symbols` and `universe` (default: `symbols`) from BARS once
(between `start` and `end`, the last `max_bars` of each), then runs one sandbox Job
(kind="classify") per symbol of `symbols`: that symbol's bars as `df`/`data`, and the whole
universe (symbol → BarArrays) behind the accessors (`get_price_data`,
`get_multiple_symbols_data`, ...). Runs share the node's point admission with sweep points and
keep at most `SWEEP_CONCURRENCY` in flight per request.

Bounds: at most `contracts.limits.MAX_SYMBOLS` symbols (checked at decode) and at most
`MAX_UNIVERSE_BARS` bars in the universe together (24 MB of arrays), since every run receives all
of it: each run's job carries an encoded copy, so runs in flight are also limited to what
`RUN_MEMORY_BUDGET` holds (two copies of the universe per run: the encoded job and its frame).
A symbol with no stored bars in the range gets a row with INVALID_REQUEST and does not run;
a universe-only symbol without bars is simply not available to the accessors.

Memory: rows and log lines are kept only while the reply can still carry them (`ReplyBudget`,
the broker's max_payload less header room). When a row no longer fits, the node stops starting
symbols and answers with the rows it has, `truncated: true` and OUTPUT_LIMIT naming how many of
the symbols were screened; so a screen never holds more results than one reply.
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
from backtest.store import parse_time
from sandbox.pool import SandboxUnavailable
from sandbox.protocol import Job, OutputLimits

from .backtesting import run_admitted_patiently
from .failures import Overloaded, error_of
from .jobs import check_language, run_limits

log = logging.getLogger("node.screen")

MAX_UNIVERSE_BARS = 500_000  # 48 bytes a bar: 24 MB of arrays, e.g. 1,000 symbols x 500 bars
RUN_MEMORY_BUDGET = 64 * 1024 * 1024  # universe copies one screen keeps in flight
MAX_LOG_LINES = 1_000


def _tail(arrays: BarArrays, n: int) -> BarArrays:
    if arrays.count <= n:
        return arrays
    cut = (arrays.count - n) * 8
    return BarArrays(**{k: getattr(arrays, k)[cut:] for k in ("timestamp", "open", "high", "low", "close", "volume")})


def _passes(value: Any) -> bool:
    return bool(value)


class ReplyBudget:
    """What a screen keeps, measured as it is collected: rows (with their `passed` entry) and
    log lines are added only while the encoded reply stays within `limit`, so a node never holds
    more per screen than one reply can carry, whatever the number of symbols. Logs may take at
    most a quarter of it. Once a row does not fit the budget is `full` and screening stops."""

    ENVELOPE = 1024  # success, error (OUTPUT_LIMIT message), ids, timing, list framing

    def __init__(self, limit: int, kind: str) -> None:
        self.limit = limit
        self.kind = kind
        self.used = self.ENVELOPE
        self.log_bytes = 0
        self.full = False

    def add_row(self, rows: dict[str, ScreenRow], row: ScreenRow) -> None:
        size = len(encode(row, self.kind)) + len(row.symbol) + 8  # the row, its `passed` entry, commas
        if self.used + size > self.limit:
            self.full = True
            return
        self.used += size
        rows[row.symbol] = row

    def add_log(self, logs: list[str], line: str) -> None:
        size = len(line.encode()) + 8
        if self.log_bytes + size > self.limit // 4 or self.used + size > self.limit:
            return
        self.log_bytes += size
        self.used += size
        logs.append(line)


class Screening:
    def __init__(self, backtesting: Any) -> None:
        self.bt = backtesting

    async def handle(self, data: bytes, kind: str, received: float) -> ScreenResult:
        t0 = time.perf_counter()
        request_id = None
        try:
            req = decode(data, ScreenRequest, kind)
            request_id = req.request_id
            result = await self._screen(req, kind)
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

    async def _screen(self, req: ScreenRequest, kind: str) -> ScreenResult:
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
        # Reference data the code's accessors can read (security master, facts known by `end`,
        # sector members' and index bars), fetched here: the child has no network.
        refdata, extra = await bt.reference_for(compiled, names, req.timeframe, end, req.start, req.end)
        extra = {s: _tail(a, req.max_bars) for s, a in extra.items() if s not in bars}
        bars.update(extra)
        total = sum(a.count for a in bars.values())
        if total > MAX_UNIVERSE_BARS:
            raise ExecutionError(
                ErrorCode.INVALID_REQUEST,
                f"the universe holds {total:,} bars; the limit is {MAX_UNIVERSE_BARS:,} — narrow "
                f"start/end, lower max_bars or name fewer symbols in `universe`")
        universe = {s: bars[s] for s in [*names, *extra] if s in bars}
        code = compiled.to_bytes()
        rows: dict[str, ScreenRow] = {}
        logs: list[str] = []
        todo = iter([s for s in req.symbols])
        reply = ReplyBudget(self.bt.max_reply(), kind)

        async def run_one(symbol: str) -> None:
            if symbol in missing:
                reply.add_row(rows, ScreenRow(symbol=symbol, error=missing[symbol]))
                return
            job = Job(kind="classify", code=code, bars=bars[symbol], symbol=symbol,
                      timeframe=req.timeframe, parameters=req.parameters, timeout_ms=budget_ms,
                      memory_mb=memory_mb, limits=OutputLimits(), universe=universe, refdata=refdata)
            try:
                outcome = await run_admitted_patiently(bt.points, lambda: bt.pool.run(job))
            except (Overloaded, SandboxUnavailable):
                reply.add_row(rows, ScreenRow(symbol=symbol, bars=bars[symbol].count, error=ErrorInfo(
                    code=ErrorCode.OVERLOADED, message="no capacity left to run this symbol")))
                return
            for line in outcome.logs:
                if len(logs) < MAX_LOG_LINES:
                    reply.add_log(logs, f"{symbol}: {line}")
            reply.add_row(rows, ScreenRow(
                symbol=symbol, bars=bars[symbol].count, result=outcome.result, error=outcome.error,
                passed=outcome.success and _passes(outcome.result),
            ))

        async def worker() -> None:
            for symbol in todo:
                if reply.full:
                    return  # the reply cannot hold another row: stop screening
                await run_one(symbol)

        universe_bytes = 48 * total
        in_flight = max(1, min(bt.concurrency, len(req.symbols), RUN_MEMORY_BUDGET // max(1, 2 * universe_bytes)))
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        ordered = [rows[s] for s in req.symbols if s in rows]
        result = ScreenResult(success=True, passed=[r.symbol for r in ordered if r.passed],
                              results=ordered, logs=logs)
        if reply.full:
            result.success, result.truncated = False, True
            result.error = ErrorInfo(code=ErrorCode.OUTPUT_LIMIT, message=(
                f"the reply holds at most {reply.limit:,} bytes (the broker's max_payload): screening "
                f"stopped after {len(ordered):,} of {len(req.symbols):,} symbols; the others were not "
                f"run — screen fewer symbols per request or return smaller values from classify_symbol"))
        return result
