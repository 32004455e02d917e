"""`strategy.v1.backtest`: one backtest, or a parameter sweep fanned out over the fleet.

Shape of a request (same as execute): decode → language → limits → compile cache → bars →
sandbox Job(kind="backtest", options) → reply. The child runs the strategy and the backtest
engine (sandbox.runtime): a vectorized strategy (one Series/array of signals) is called once;
a strategy returning one signal string is walked bar by bar over growing prefixes, so the signal
of bar i can only depend on bars 0..i. The first call (the probe, on every bar) tells the two
apart; when it returns one signal, the child answers `walk` and the node runs the walk in a
fresh child (`Job.walk`; never a warm worker, never the probe's process), where every call gets
its own module globals, parameters and frame. Nothing the probe left in its process (numpy's
error callback, suspended generators, classes, caches) can reach a walk call; a sweep chunk's
walked points are probed in the chunk's child and each walked in a fresh one.
Bars reach the child as columnar bytes (`BarArrays`); bars of 1 MB and more in a sealed memfd the
child maps (sandbox/shm.py), sealed once per replayed series and shared by every run on it.

Bars
----
* inline (`bars` / `market_data`): time order checked (no repeats, no steps back) and every
  open/high/low/close/volume value must be finite — INVALID_REQUEST naming the first bad index.
* `source` (BarsRef): replayed from the BARS stream through `BarStore`. Replays are cached per
  node by (symbol, timeframe, start, end) and the series' index revision (any load of that
  series changes it), bounded by `REPLAY_CACHE_MB` (default 128; 0 disables), so the points of a
  sweep that land on one node replay the series once.

Sweeps (`grid`)
---------------
The node that receives a sweep decodes and checks it once (compile, bars, `rank_by`), then runs
one backtest per grid point with the parameters `{**parameters, **point}` and ranks the rows
(node.sweep). Grid points never carry trades or equity curves (`max_trades` and
`equity_points` are forced to 0 per point) so a 10,000-row table stays small; the sweep reply's
`performance` is null, `bars` is the bar count, and `success` is false only when every point
failed (the rows still say why). `timeout_ms` is the budget of each point, not of the sweep.

Points are run in chunks: one sandbox child runs up to `MAX_CHUNK` points one after another
(sandbox.runtime.run_points; every point a fresh module, API and frame, and the process
scrubbed back to its baseline between points by sandbox.hygiene, so points cannot see or
change each other). A fresh child per point costs about as much as the point itself on 100k bars
(fork, lock-down, first-touch page faults); chunks amortize that. A chunk whose child dies
(deadline = min(points × budget, the node's max timeout), crash, memory) or stops short has its
missing points re-run one per child with their own budget, so no point's result depends on the
points it shared a child with.

* bars by reference: the grid is split into sub-grids (each a small cartesian grid, together
  exactly the grid in order; node.sweep.plan_subgrids): one chunk per CPU this node runs
  children on (`parallel`: its CPUs, at most `MAX_WORKERS`; more children than CPUs only take
  turns, each at its own fixed cost) when such chunks hold at most `MAX_CHUNK` (64) points and
  about CHUNK_MS of work; a larger sweep in chunks of node.sweep.points_per_child points (a
  child's fixed cost under a tenth of its chunk), which a fleet shares. The bench's 10 x 10
  grid on 100,000 bars on a 2-CPU node goes out as 2 chunks of 50; each goes out as a request on `strategy.v1.backtest.point` (msgpack, same `source`,
  the sub-grid as `grid`), so the queue group spreads the chunks over the fleet, at most
  `SWEEP_CONCURRENCY` (default 32) in flight per sweep. The answering node runs its sub-grid
  locally and replies with the rows in grid order, unranked. A sub-grid that finds no
  responder, or whose node is at capacity, runs in this node's own sandbox pool instead.
* inline bars: points run in this node's own sandbox pool (chunks sized the same way, for
  this node's `parallel` CPUs). Re-sending megabytes of inline bars per point would cost more than the
  points themselves (and can exceed NATS' max_payload); load the bars into BARS
  (`strategy-node bars load`) to spread a large sweep over the fleet.

Deadlock freedom: a sweep parent holds a slot of the node's main admission while it waits, but
grid points never need one: `strategy.v1.backtest.point` requests and the parent's local chunks
go through a separate admission (`points`, same size as the main one), a point request runs its
chunks inside the one point slot it holds, and a point never waits on anything but its own
sandbox run. So a parent only ever waits on work that is guaranteed to progress.

Compat-mode warm-up: with `options.mode="backtesting_py"` the child passes `warmup` = the first
bar where the vectorized signal series is defined (not NaN/None) and every full-length
`indicator()` series has a value (the latest of these), which is how backtesting.py skips bars
before its indicators are ready. Native mode uses no warm-up: buy & hold covers every bar sent.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from typing import Any, Awaitable, Callable, Mapping

import msgspec
import nats.errors
import numpy as np

from backtest.refdata_preload import code_names, preload, wants_refdata
from backtest.refdata_store import RefDataStore
from backtest.store import BarStore, parse_time, subject_for
from contracts import (
    BacktestOptions,
    BacktestRequest,
    BacktestResult,
    BarArrays,
    BarsRef,
    ErrorCode,
    ErrorInfo,
    ExecutionError,
    SweepRow,
    decode,
    encode,
    subjects,
)
from contracts.backtest import DEFAULT_RANK_BY
from contracts.bars import COLUMNS
from sandbox.compiler import CompiledStrategy
from sandbox import shm
from sandbox.protocol import Job, OutputLimits, Outcome

from .admission import Admission
from . import identity, sizing
from .config import Settings
from .failures import Overloaded, error_of
from .jobs import bars_of, check_language, run_limits
from .sweep import (
    check_rank_by,
    plan_subgrids,
    points_per_chunk,
    fit_table,
    fan_out,
    grid_points,
    grid_size,
    rank,
    request_subgrid,
    sweep_concurrency,
    usable_cpus,
)

log = logging.getLogger("node.backtesting")

_MARGIN_S = 2.0
MAX_CHUNK = 64  # grid points per sandbox child (and per strategy.v1.backtest.point request), at most
MIN_CHUNK = 8  # ... and at least (fewer only when the grid is smaller)
DEFAULT_REPLAY_CACHE_MB = 128


def _cache_mb(env: Mapping[str, str]) -> int:
    raw = (env.get("REPLAY_CACHE_MB") or "").strip()
    if not raw:
        return DEFAULT_REPLAY_CACHE_MB
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"REPLAY_CACHE_MB must be a number, got {raw!r}") from None
    if not 0 <= value <= 65_536:
        raise ValueError(f"REPLAY_CACHE_MB must be between 0 and 65536, got {value}")
    return value


async def run_admitted(admission: Admission, fn: Callable[[], Awaitable[Any]]) -> Any:
    """Await `fn()` inside `admission`'s bound (so a drain waits for it too)."""
    loop = asyncio.get_running_loop()
    result: asyncio.Future = loop.create_future()

    async def work() -> None:
        try:
            value = await fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiter
            if not result.done():
                result.set_exception(exc)
        else:
            if not result.done():
                result.set_result(value)

    if not admission.submit(work):
        raise Overloaded
    return await result


async def run_admitted_patiently(admission: Admission, fn: Callable[[], Awaitable[Any]],
                                 patience_s: float = 10.0) -> Any:
    """`run_admitted`, waiting (with backoff, up to `patience_s`) while the admission's queue is
    full instead of failing at once: for work a request already admitted is waiting on."""
    delay, waited = 0.02, 0.0
    while True:
        try:
            return await run_admitted(admission, fn)
        except Overloaded:
            if waited >= patience_s or admission.closed:
                raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 1.0)


class ReplayCache:
    """Replayed BarArrays by (symbol, timeframe, start_ns, end_ns), valid for one index revision."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: collections.OrderedDict[tuple, tuple[int, BarArrays]] = collections.OrderedDict()

    def get(self, key: tuple, revision: int) -> BarArrays | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] != revision:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: tuple, revision: int, arrays: BarArrays) -> None:
        size = 6 * len(arrays.timestamp)
        if size > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= 6 * len(old[1].timestamp)
        self._entries[key] = (revision, arrays)
        self.bytes += size
        while self.bytes > self.max_bytes and self._entries:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= 6 * len(dropped.timestamp)


def check_finite(arrays: BarArrays, where: str) -> None:
    """INVALID_REQUEST naming the first bar whose open/high/low/close/volume is NaN or infinite."""
    first: tuple[int, str] | None = None
    for name in COLUMNS:
        col = arrays.column(name)
        bad = np.flatnonzero(~np.isfinite(col))
        if bad.size and (first is None or int(bad[0]) < first[0]):
            first = (int(bad[0]), name)
    if first is not None:
        i, name = first
        value = arrays.column(name)[i]
        at = f"{where}[{i}].{name}" if where == "market_data" else f"{where}.{name}[{i}]"
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid bars: {at} is {value!r}; a backtest needs finite prices and volumes")


def decode_backtest(data: bytes, kind: str) -> BacktestRequest:
    """`decode`, plus a JSON payload carrying NaN/Infinity literals (not JSON, but what many
    encoders emit for a missing price) decoded leniently so the error can name the bar."""
    try:
        return decode(data, BacktestRequest, kind)
    except ExecutionError:
        if kind != subjects.JSON or not (b"NaN" in data or b"Infinity" in data):
            raise
        try:
            loose = json.loads(data)
            req = msgspec.convert(loose, BacktestRequest)
        except Exception:  # noqa: BLE001 - not that case: report the original error
            pass
        else:
            arrays = bars_of(req)
            if arrays is not None:
                check_finite(arrays, "bars" if req.bars is not None else "market_data")
        raise


class Backtesting:
    """The backtest, sweep-point and screen endpoints of one node."""

    def __init__(self, settings: Settings, endpoints: Any, nc: Any, store: BarStore | None,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.settings = settings
        self.endpoints = endpoints
        self.pool = endpoints.pool
        self.metrics = endpoints.metrics
        self.cache = endpoints.cache
        self.nc = nc
        self.store = store
        self.concurrency = sweep_concurrency(env)
        self.points = Admission(settings.max_workers, settings.max_queue)
        # children this node really runs at once: its CPUs, at most its worker slots
        self.parallel = max(1, min(settings.max_workers, usable_cpus()))
        self.replays = ReplayCache(_cache_mb(env) * 1024 * 1024)
        from .screen import Screening

        self.screening = Screening(self)
        # reference data for the accessors (backtest/refdata_*): beside BARS, on the same JetStream
        self.refdata = RefDataStore(store.js, nc) if store is not None else None
        endpoints.reference = self.reference_for_job  # execute's accessors read it too

    @classmethod
    async def create(cls, settings: Settings, endpoints: Any, nc: Any,
                     env: Mapping[str, str] | None = None) -> "Backtesting":
        """With a BarStore on `nc`'s JetStream (stream BARS ensured); without one if JetStream
        is unavailable, in which case bars by reference are refused with a clear error."""
        store: BarStore | None = BarStore(nc.jetstream(), nc)
        try:
            await asyncio.wait_for(store.ensure_stream(), 10.0)
        except Exception as exc:  # noqa: BLE001 - e.g. a server without JetStream
            log.warning("bar store unavailable (%s); backtests by reference are disabled", exc)
            store = None
        return cls(settings, endpoints, nc, store, env)

    async def drain(self, timeout: float) -> bool:
        return await self.points.drain(timeout)

    # -- bars -----------------------------------------------------------------------------
    async def replay(self, ref: BarsRef) -> BarArrays:
        if self.store is None:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 "bars by reference are unavailable: this node has no bar store (JetStream)")
        subject_for(ref.symbol, ref.timeframe)  # validates the names
        start = parse_time(ref.start, "source.start")
        end = parse_time(ref.end, "source.end", end=True)
        if self.replays.max_bytes <= 0:
            return shm.seal(await self.store.replay(ref.symbol, ref.timeframe, start, end, build=_sealed))
        _, revision = await self.store._read_index(ref.symbol, ref.timeframe)
        key = (ref.symbol, ref.timeframe, start, end)
        if revision is not None:
            hit = self.replays.get(key, revision)
            if hit is not None:
                return hit
        # sealed once here, then handed to every child that runs on these bars (sandbox/shm.py)
        arrays = shm.seal(await self.store.replay(ref.symbol, ref.timeframe, start, end, build=_sealed))
        if revision is not None:
            self.replays.put(key, revision, arrays)
        return arrays

    async def reference_for(self, compiled: CompiledStrategy, symbols: list[str], timeframe: str,
                            as_of_ns: int | None, start: Any, end: Any) -> tuple:
        """(RefBundle or None, extra bars) for a run of `compiled` on `symbols`: only what the
        accessors the code names can serve (backtest.refdata_preload); index and sector-member
        bars between `start` and `end`."""
        names = code_names(compiled.code)
        if not wants_refdata(names):
            return None, {}
        if self.refdata is None:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, "reference data is unavailable: this node has "
                                                            "no JetStream store")

        async def bars(symbol: str) -> BarArrays | None:
            if not timeframe:
                return None
            try:
                return await self.replay(BarsRef(symbol=symbol, timeframe=timeframe, start=start, end=end))
            except ExecutionError as exc:
                if exc.code != ErrorCode.INVALID_REQUEST:
                    raise
                return None

        return await preload(self.refdata, [s for s in symbols if s], names, timeframe, as_of_ns, bars)

    async def reference_for_backtest(self, req: BacktestRequest, compiled: CompiledStrategy,
                                     bars: BarArrays) -> tuple:
        """Reference data up to the backtest's last bar; the child cuts it at each bar."""
        ref = req.source
        symbol = req.symbol or (ref.symbol if ref else "")
        timeframe = req.timeframe or (ref.timeframe if ref else "")
        if not bars.count:
            return None, {}
        ts = bars.column("timestamp")
        first, last = int(ts[0]), int(ts[-1])
        return await self.reference_for(compiled, [symbol], timeframe, last, first // 1_000_000,
                                        last // 1_000_000)

    async def reference_for_job(self, compiled: CompiledStrategy, job: Job) -> Job:
        """An execute job with the reference data its code's accessors can read, known by the
        job's last bar (all of it for a run without bars); index bars over the job's bars."""
        bars = job.bars
        ts = bars.column("timestamp") if bars is not None and bars.count else None
        first = int(ts[0]) // 1_000_000 if ts is not None else None
        last = int(ts[-1]) if ts is not None else None
        refdata, extra = await self.reference_for(compiled, [job.symbol], job.timeframe or "1d", last, first,
                                                  None if last is None else last // 1_000_000)
        if refdata is None:
            return job
        universe = {**(job.universe or {}), **{s: a for s, a in extra.items() if s != job.symbol}}
        return msgspec.structs.replace(job, refdata=refdata, universe=universe or None)

    async def bars_for(self, req: BacktestRequest) -> BarArrays:
        if req.source is not None:
            return await self.replay(req.source)
        arrays = bars_of(req)
        if arrays is None or arrays.count == 0:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 "no bars: send `bars`, `market_data` or a `source` in the bar store")
        check_finite(arrays, "bars" if req.bars is not None else "market_data")
        return shm.seal(arrays)

    # -- the endpoints ---------------------------------------------------------------------
    async def backtest(self, data: bytes, kind: str, received: float) -> BacktestResult:
        return await self._handle(data, kind, received, "backtest", sweeps=True)

    async def point(self, data: bytes, kind: str, received: float) -> BacktestResult:
        return await self._handle(data, kind, received, "backtest-point", sweeps=False)

    async def screen(self, data: bytes, kind: str, received: float):
        return await self.screening.handle(data, kind, received)

    async def _handle(self, data: bytes, kind: str, received: float, name: str,
                      sweeps: bool) -> BacktestResult:
        t0 = time.perf_counter()
        request_id = None
        try:
            req = decode_backtest(data, kind)
            request_id = req.request_id
            check_language(req.language)
            budget_ms, memory_mb = run_limits(req, self.settings)
            compiled, hit = self.cache.get(req.code)
            self.metrics.compile(hit)
            if compiled.style == "classify":
                raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                     "a classify_symbol strategy screens symbols: send it to strategy.v1.screen")
            if req.grid is not None:
                check_rank_by(req.rank_by)
                if not sweeps and grid_size(req.grid) > MAX_CHUNK:
                    raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                         f"a request on {subjects.BACKTEST_POINT} carries at most {MAX_CHUNK} "
                                         f"grid points; send sweeps to {subjects.BACKTEST}")
            bars = await self.bars_for(req)
            reference = await self.reference_for_backtest(req, compiled, bars)
            if req.grid is not None:
                result = await self._sweep(req, compiled, bars, budget_ms, memory_mb, local_only=not sweeps,
                                           reference=reference)
            else:
                timeout_ms = self.endpoints._remaining_ms(received, budget_ms)
                job = self._job(req, compiled, bars, req.parameters, req.options, timeout_ms, memory_mb,
                                reference=reference)
                outcome = await self.pool.run(job, tenant=identity.tenant_of(req.user_id))
                if outcome.walk:
                    # the probe saw every bar; the walk runs in a fresh child of its own (never
                    # a warm worker), with what is left of the request's budget
                    job = msgspec.structs.replace(
                        job, walk=True, timeout_ms=self.endpoints._remaining_ms(received, budget_ms))
                    outcome = walk_timeout_hint(await self.pool.run(job), bars.count)
                result = BacktestResult(
                    success=outcome.success, performance=outcome.performance,
                    signals_count=outcome.signals_count, bars=bars.count, logs=outcome.logs,
                    error=outcome.error,
                )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            result = BacktestResult(success=False, error=error_of(exc, "backtest"))
        result.request_id = request_id
        result.node_id = self.settings.node_id
        result.execution_time_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        result = self.fit(result, kind)
        self.metrics.finished(name, result.error.code if result.error else None, result.execution_time_ms)
        return result

    def max_reply(self) -> int:
        """Bytes a reply may take: the server's max_payload less room for headers."""
        return sizing.body_limit(self.nc)  # the one rule (node/sizing.py)

    def fit(self, result: BacktestResult, kind: str) -> BacktestResult:
        """A reply NATS can carry. A sweep table too large for max_payload keeps its best rows
        that fit, with OUTPUT_LIMIT saying so; a single backtest whose trades/equity curve do not
        fit fails with OUTPUT_LIMIT (lower options.max_trades / equity_points)."""
        limit = self.max_reply()
        if result.sweep:
            return fit_table(result, kind, limit)  # row by row, never the whole table first
        size = len(encode(result, kind))
        if size <= limit:
            return result
        return BacktestResult(
            success=False, bars=result.bars, signals_count=result.signals_count,
            node_id=result.node_id, request_id=result.request_id, execution_time_ms=result.execution_time_ms,
            error=ErrorInfo(code=ErrorCode.OUTPUT_LIMIT,
                            message=f"the reply would be {size:,} bytes; the broker's max_payload allows "
                                    f"{limit:,}: lower options.max_trades / options.equity_points or log less"))

    def _job(self, req: BacktestRequest, compiled: CompiledStrategy, bars: BarArrays,
             parameters: dict[str, Any], options: BacktestOptions, timeout_ms: int, memory_mb: int,
             reference: tuple = (None, {})) -> Job:
        ref = req.source
        return Job(
            kind="backtest", code=compiled.to_bytes(), bars=bars,
            symbol=req.symbol or (ref.symbol if ref else ""),
            timeframe=req.timeframe or (ref.timeframe if ref else ""),
            parameters=parameters, timeout_ms=timeout_ms, memory_mb=memory_mb,
            limits=OutputLimits(), options=options,
            refdata=reference[0], universe=reference[1] or None,
        )

    # -- sweeps ----------------------------------------------------------------------------
    async def _sweep(self, req: BacktestRequest, compiled: CompiledStrategy, bars: BarArrays,
                     budget_ms: int, memory_mb: int, local_only: bool, reference: tuple = (None, {})) -> BacktestResult:
        grid = req.grid or {}
        options = msgspec.structs.replace(req.options, max_trades=0, equity_points=0)
        base = self._job(req, compiled, bars, req.parameters, options, budget_ms, memory_mb, reference=reference)
        total = grid_size(grid)
        if local_only:  # a sub-grid on strategy.v1.backtest.point: we already hold a point slot
            rows = await self._run_local(base, grid_points(grid), budget_ms, holding_slot=True)
        elif req.source is None:
            rows = await self._run_local(base, grid_points(grid), budget_ms)
        else:
            subgrids = plan_subgrids(grid, bars.count, self.parallel, MAX_CHUNK, MIN_CHUNK)
            remote = self._remote_runner(req, options, budget_ms, base)
            parts = await fan_out(subgrids, remote, self.concurrency, on_error=_failed_subgrid)
            rows = [row for part in parts for row in part]
        if local_only:
            return BacktestResult(success=True, sweep=rows, bars=bars.count)
        ranked = rank(rows, req.rank_by)
        failed = [row for row in rows if row.error is not None]
        error = None
        if rows and len(failed) == len(rows):
            first = failed[0].error
            error = ErrorInfo(code=first.code, line=first.line,
                              message=f"every grid point failed; the first: {first.message}")
        return BacktestResult(success=error is None, sweep=ranked, bars=bars.count, error=error)

    async def _run_local(self, base: Job, points: list[dict[str, Any]], budget_ms: int,
                         holding_slot: bool = False) -> list[SweepRow]:
        """Grid points in this node's sandbox pool, a chunk of points per child.

        A sweep parent (which holds a main slot, never a point slot) runs its chunks in
        parallel, each through the point admission. A sub-grid received on
        strategy.v1.backtest.point already holds a point slot: it runs its chunks one after
        another in that slot, taking no other (so points never wait on points).
        A chunk that dies (timeout, crash) or stops short has its missing points re-run one per
        child with the per-point budget, so a point's result never depends on the points it
        shared a child with.
        """
        max_ms = int(self.settings.max_timeout_seconds * 1000)
        bar_count = base.bars.count if base.bars is not None else 0
        size = MAX_CHUNK if holding_slot else points_per_chunk(len(points), bar_count, self.parallel,
                                                               MAX_CHUNK, MIN_CHUNK)
        count = -(-len(points) // size)
        size = -(-len(points) // max(1, count))  # balanced: 10 points at 8 → 5 + 5
        chunks = [points[i:i + size] for i in range(0, len(points), size)]
        merged = base.parameters

        async def run_job(job: Job) -> Outcome:
            if holding_slot:
                return await self.pool.run(job)
            return await run_admitted_patiently(self.points, lambda: self.pool.run(job))

        async def one(point: dict[str, Any], walk: bool = False) -> SweepRow:
            job = msgspec.structs.replace(base, parameters={**merged, **point}, points=None, walk=walk)
            outcome = await run_job(job)
            if outcome.walk:  # the probe saw every bar: the walk gets a fresh child of its own
                outcome = walk_timeout_hint(await run_job(msgspec.structs.replace(job, walk=True)),
                                            bars.count)
            return SweepRow(parameters=point, performance=outcome.performance, error=outcome.error)

        async def chunk_rows(chunk: list[dict[str, Any]]) -> list[SweepRow]:
            if len(chunk) == 1:
                return [await one(chunk[0])]
            job = msgspec.structs.replace(
                base, parameters=merged, points=[{**merged, **p} for p in chunk],
                timeout_ms=min(max_ms, budget_ms * len(chunk)))
            outcome = await run_job(job)
            done = outcome.points or []
            rows = [SweepRow(parameters=p, performance=o.performance, error=o.error)
                    for p, o in zip(chunk, done)]
            for k, o in enumerate(done):
                if o.walk:  # probed in the chunk's child; walked in a fresh one, never there
                    rows[k] = await one(chunk[k], walk=True)
            for point in chunk[len(rows):]:
                rows.append(await one(point))
            return rows

        parts = await fan_out(chunks, chunk_rows, 1 if holding_slot else self.concurrency,
                              on_error=_failed_rows)
        return [row for part in parts for row in part]

    def _remote_runner(self, req: BacktestRequest, options: BacktestOptions, budget_ms: int, base: Job):
        """Send one sub-grid to strategy.v1.backtest.point; run it here when nobody answers or
        the answering node is at capacity."""
        # a point request ranks nothing (its node only runs the sub-grid): default rank_by
        template = msgspec.structs.replace(req, options=options, grid=None, rank_by=DEFAULT_RANK_BY)
        max_s = self.settings.max_timeout_seconds

        async def remote(subgrid: dict[str, list[Any]]) -> list[SweepRow]:
            points = grid_points(subgrid)
            budget_s = budget_ms / 1000.0 * len(points)
            # a chunk may be re-run point by point after its child died: allow for both
            wait = min(max_s, budget_s) + budget_s + _MARGIN_S
            try:
                return await request_subgrid(self.nc, template, subgrid, wait)
            except (nats.errors.NoRespondersError, sizing.TooLarge):
                return await self._run_local(base, points, budget_ms)  # nobody serves points / too big to send
            except nats.errors.TimeoutError:
                return _failed_rows(points, ErrorInfo(
                    code=ErrorCode.TIMEOUT, message=f"no reply for these grid points within {wait:.1f}s"))
            except ExecutionError as exc:
                if exc.code == ErrorCode.OVERLOADED:
                    return await self._run_local(base, points, budget_ms)
                return _failed_rows(points, exc.info())

        return remote


def _sealed(count: int, fill) -> BarArrays | None:
    """A replay of `count` bars assembled straight into a sealed memfd (sandbox/shm.py) when it is
    large enough to be handed over that way; None (bytes) otherwise."""
    return shm.build(count, fill) if 48 * count >= shm.MIN_BYTES else None


def walk_timeout_hint(outcome: Outcome, n_bars: int) -> Outcome:
    """A walked strategy's TIMEOUT says why it is slow and what to return instead."""
    error = outcome.error
    if error is None or error.code != ErrorCode.TIMEOUT:
        return outcome
    hint = (f"{error.message}: this strategy returns one signal per call, so the backtest calls it once "
            f"per bar ({n_bars:,} calls, each on the bars up to that one); return a Series or array "
            f"with a signal for every bar instead and it runs once")
    return msgspec.structs.replace(outcome, error=msgspec.structs.replace(error, message=hint))


def _failed_rows(points: list[dict[str, Any]], error: ErrorInfo) -> list[SweepRow]:
    """Rows for every point of a chunk that could not run."""
    return [SweepRow(parameters=p, error=error) for p in points]


def _failed_subgrid(subgrid: dict[str, list[Any]], error: ErrorInfo) -> list[SweepRow]:
    return _failed_rows(grid_points(subgrid), error)
