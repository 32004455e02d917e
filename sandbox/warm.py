"""Opt-in warm workers: a tenant's locked-down child serves several of that tenant's runs.

Off by default. A fresh process per run is the isolation the service promises; this mode trades
part of it for throughput, for operators who ask for it (`TENANT_WARM_RUNS`). What it keeps:
every layer of the lockdown (a warm worker is an ordinary ready child, locked down before it
saw any code), fresh module globals per run, per-run time and memory limits, and a worker is
bound to one tenant (`user_id`) for life: it is never handed to another tenant, and it is killed,
not recycled, when it retires. Between two runs the worker scrubs its process back to the state
it had before its first run (sandbox.hygiene: garbage collected, numpy's error state and callback
reset, the guards' caches restored, the global setters checked; numpy's global generator is
reseeded), and a worker that cannot show it is clean is retired. What it gives up: state no
scrub reaches may carry from one run of a tenant to the next (library caches of values, memory
growth that counts against the next run's limit), and a worker's CPU limit covers its whole life.

A worker retires after `runs` runs, after `idle_seconds` without work, when its next run might
not fit its remaining CPU, when a run ends in an error that may have damaged the process (time,
memory, security, internal) or leaves it unscrubbable (`Outcome.retire`), or to make room for
another tenant's worker.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from contracts import ErrorCode

from .protocol import Job, Outcome, frame, job_encoder

if TYPE_CHECKING:
    from .pool import SandboxPool, _Child

# Errors after which the process is not trusted to serve again.
RETIRING_ERRORS = frozenset({ErrorCode.TIMEOUT, ErrorCode.MEMORY_LIMIT, ErrorCode.SECURITY_VIOLATION,
                             ErrorCode.INTERNAL})


@dataclass(frozen=True)
class WarmPolicy:
    runs: int  # runs per worker before it retires; 0 or 1: the mode is off
    per_tenant: int = 2  # warm workers one tenant may hold at once
    total: int = 4  # warm workers on this node, all tenants together
    idle_seconds: float = 60.0


@dataclass(eq=False)
class _Worker:
    child: "_Child"
    tenant: str
    runs: int = 0
    cpu_ms: float = 0.0
    last_used: float = 0.0


class TenantWorkers:
    """The warm workers of one pool, keyed by tenant."""

    def __init__(self, pool: "SandboxPool", policy: WarmPolicy) -> None:
        self.pool = pool
        self.policy = policy
        self._idle: dict[str, list[_Worker]] = {}
        self._all: dict[str, set[_Worker]] = {}
        self._waiters: dict[str, collections.deque[asyncio.Future]] = {}
        self._reaper: asyncio.Task | None = None
        self.retired = 0

    # -- running ------------------------------------------------------------------------
    async def run(self, job: Job, tenant: str, span=None) -> Outcome:
        worker = await self._acquire(tenant, job)
        if worker is None:
            return await self.pool.run_fresh(job, span)
        if span is not None:
            span.set_attribute("sandbox.child_pid", worker.child.pid)
            span.set_attribute("sandbox.warm_run", worker.runs + 1)
        last = worker.runs + 1 >= self.policy.runs
        try:
            payload = frame(job_encoder.encode(msgspec.structs.replace(job, keep=not last)))
        except BaseException:
            self._release(worker)
            raise
        try:
            outcome, answered = await self.pool.exchange(worker.child, job, payload)
        except BaseException:
            self._retire(worker)
            raise
        worker.runs += 1
        worker.cpu_ms = outcome.cpu_ms
        worker.last_used = time.monotonic()
        damaged = outcome.retire or (outcome.error is not None and outcome.error.code in RETIRING_ERRORS)
        if last or not answered or damaged:
            self._retire(worker)
        else:
            self._release(worker)
        return outcome

    def _fits(self, worker: _Worker, job: Job) -> bool:
        """Whether the run's whole CPU allowance fits under the worker's lifetime hard limit."""
        hard_ms = (self.pool.max_cpu_seconds + 1) * 1000.0
        return worker.cpu_ms + job.timeout_ms + 1000.0 <= hard_ms

    async def _acquire(self, tenant: str, job: Job) -> _Worker | None:
        """The tenant's idle worker, a new one, or None (no warm room: run in a fresh child)."""
        while True:
            idle = self._idle.get(tenant)
            while idle:
                worker = idle.pop()  # most recently used first: its caches are warmest
                if worker.child.alive() and self._fits(worker, job):
                    return worker
                self._retire(worker)
            mine = self._all.setdefault(tenant, set())
            if len(mine) < self.policy.per_tenant:
                if self._total() >= self.policy.total and not self._evict_other(tenant):
                    return None
                return await self._new_worker(tenant, mine)
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(tenant, collections.deque()).append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                queue = self._waiters.get(tenant)
                if queue is not None and waiter in queue:
                    queue.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake(tenant)  # we were woken but leave: pass the turn on
                raise

    async def _new_worker(self, tenant: str, mine: set[_Worker]) -> _Worker:
        placeholder = _Worker(child=None, tenant=tenant)  # type: ignore[arg-type]  # holds the slot
        mine.add(placeholder)
        try:
            child = await self.pool.acquire_child()
        finally:
            mine.discard(placeholder)
        worker = _Worker(child=child, tenant=tenant, last_used=time.monotonic())
        mine.add(worker)
        self._start_reaper()
        return worker

    def _release(self, worker: _Worker) -> None:
        self._idle.setdefault(worker.tenant, []).append(worker)
        self._wake(worker.tenant)

    def _retire(self, worker: _Worker) -> None:
        worker.child.kill()
        worker.child.close()
        mine = self._all.get(worker.tenant)
        if mine is not None:
            mine.discard(worker)
            if not mine:
                del self._all[worker.tenant]
        idle = self._idle.get(worker.tenant)
        if idle is not None and worker in idle:
            idle.remove(worker)
        if idle is not None and not idle:
            del self._idle[worker.tenant]
        self.retired += 1
        self._wake(worker.tenant)

    def _wake(self, tenant: str) -> None:
        waiters = self._waiters.get(tenant)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        if waiters is not None and not waiters:
            del self._waiters[tenant]

    def _evict_other(self, tenant: str) -> bool:
        """Retire the least recently used idle worker of another tenant, if there is one."""
        candidates = [w for t, ws in self._idle.items() if t != tenant for w in ws]
        if not candidates:
            return False
        self._retire(min(candidates, key=lambda w: w.last_used))
        return True

    def _total(self) -> int:
        return sum(len(ws) for ws in self._all.values())

    # -- idle retirement ----------------------------------------------------------------
    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap_idle())

    async def _reap_idle(self) -> None:
        period = max(0.05, min(self.policy.idle_seconds / 2, 5.0))
        while self._all:
            await asyncio.sleep(period)
            cutoff = time.monotonic() - self.policy.idle_seconds
            for worker in [w for ws in self._idle.values() for w in ws if w.last_used <= cutoff]:
                self._retire(worker)

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for worker in [w for ws in self._all.values() for w in ws if w.child is not None]:
            self._retire(worker)
        for waiters in self._waiters.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- state --------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(warm workers alive, tenants holding one)."""
        return self._total(), len(self._all)

    def pids(self) -> dict[str, list[int]]:
        return {t: sorted(w.child.pid for w in ws if w.child is not None) for t, ws in self._all.items()}
