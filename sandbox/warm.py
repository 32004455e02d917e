"""Opt-in warm workers: a tenant's locked-down child serves several of that tenant's runs.

Off by default. A fresh process per run is the isolation the service promises; this mode trades
part of it for throughput, for operators who ask for it (`TENANT_WARM_RUNS`). What it keeps:
every layer of the lockdown (a warm worker is an ordinary ready child, locked down before it
saw any code), fresh module globals per run, per-run time and memory limits, and a worker is
bound to one tenant for life: it is never handed to another tenant, and it is killed, not
recycled, when it retires. The tenant is the key the node derives from the identity NATS vouches
for (node/identity.py: the account, its user, then the body's `user_id` within them); a request
without one never gets here. Between two runs the worker scrubs its process back to the state
it had before its first run (sandbox.hygiene: garbage collected, numpy's error state and callback
reset, the guards' caches restored, the global setters checked; numpy's global generator is
reseeded), and a worker that cannot show it is clean is retired. What it gives up: state no
scrub reaches may carry from one run of a tenant to the next (library caches of values, memory
growth that counts against the next run's limit), and a worker's CPU limit covers its whole life.

A run that finds its tenant's workers all busy waits at most `wait_seconds` (and never past its
own deadline) for one, then runs in a fresh child with what is left of its time; time spent
waiting counts against the run's `timeout_ms`, so a run never succeeds after its deadline.

A worker retires after `runs` runs, after `idle_seconds` without work, when its next run might
not fit its remaining CPU, when a run ends in an error that may have damaged the process (time,
memory, security, internal), when its report after the run's outcome does not say its scrub left
it clean (`Scrubbed`, before the run's deadline), or to make room for another tenant's worker.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Hashable

import msgspec

from contracts import ErrorCode, ErrorInfo

from .channel import Channel
from .protocol import HEADER, Job, Outcome, frame, job_encoder, outcome_decoder, scrubbed_decoder

if TYPE_CHECKING:
    from .pool import SandboxPool, _Child

log = logging.getLogger("sandbox.warm")

# Errors after which the process is not trusted to serve again.
RETIRING_ERRORS = frozenset({ErrorCode.TIMEOUT, ErrorCode.MEMORY_LIMIT, ErrorCode.SECURITY_VIOLATION,
                             ErrorCode.INTERNAL})


@dataclass(frozen=True)
class WarmPolicy:
    runs: int  # runs per worker before it retires; 0 or 1: the mode is off
    per_tenant: int = 2  # warm workers one tenant may hold at once
    total: int = 4  # warm workers on this node, all tenants together
    idle_seconds: float = 60.0
    # Longest a run waits for one of its tenant's busy workers before it runs fresh instead.
    wait_seconds: float = 0.1


class _Late(Exception):
    """The run's deadline passed before it could start."""


@dataclass(eq=False)
class _Worker:
    child: "_Child"
    tenant: Hashable
    runs: int = 0
    cpu_ms: float = 0.0
    last_used: float = 0.0
    channel: Channel | None = None  # its socket, read by one persistent reader (sandbox/channel.py)
    scrubbing: bool = False  # its run's outcome is out; its report after the scrub is not in yet


class TenantWorkers:
    """The warm workers of one pool, keyed by tenant."""

    def __init__(self, pool: "SandboxPool", policy: WarmPolicy) -> None:
        self.pool = pool
        self.policy = policy
        self._idle: dict[Hashable, list[_Worker]] = {}
        self._all: dict[Hashable, set[_Worker]] = {}
        self._waiters: dict[Hashable, collections.deque[asyncio.Future]] = {}
        self._reaper: asyncio.Task | None = None
        self.retired = 0

    # -- running ------------------------------------------------------------------------
    async def run(self, job: Job, tenant: Hashable, span=None) -> Outcome:
        deadline = time.monotonic() + job.timeout_ms / 1000.0
        worker = self._idle_worker(tenant, job)  # the usual case: no await to find one
        if worker is None:
            try:
                worker = await self._acquire(tenant, job, deadline)
            except _Late:
                return _late(job)
        left_ms = int((deadline - time.monotonic()) * 1000.0)
        if left_ms <= 0:
            if worker is not None:
                self._release(worker)
            return _late(job)
        job = msgspec.structs.replace(job, timeout_ms=left_ms)  # waiting counts against the run
        if worker is None:
            return await self._run_fresh(job, deadline, span)
        if span is not None:
            span.set_attribute("sandbox.child_pid", worker.child.pid)
            span.set_attribute("sandbox.warm_run", worker.runs + 1)
        last = worker.runs + 1 >= self.policy.runs
        job.keep = not last  # this run's own copy (replaced above): what the worker does after it
        try:
            body = job_encoder.encode(job)
        except BaseException:
            self._release(worker)
            raise
        try:
            outcome, answered = await self._exchange(worker, job, body)
        except BaseException:
            self._retire(worker)
            raise
        worker.runs += 1
        worker.cpu_ms = outcome.cpu_ms
        worker.last_used = time.monotonic()
        damaged = outcome.error is not None and outcome.error.code in RETIRING_ERRORS
        if last or not answered or damaged:
            self._retire(worker)
        else:
            self._after_scrub(worker, deadline)  # the outcome goes to the caller now
        return outcome

    def _after_scrub(self, worker: _Worker, deadline: float) -> None:
        """Hand the worker back once its report says the scrub left its process clean
        (sandbox/serve.py); retire it when the report says otherwise, is not one, or does not
        come before the run's deadline. Until then the worker is busy: no run is sent to it."""
        pid = worker.child.pid
        try:
            report = worker.channel.receive(max(0.0, deadline - time.monotonic()))
        except (EOFError, OSError):
            self._retire(worker)
            return
        busy = self.pool._busy
        busy.add(pid)
        worker.scrubbing = True

        def scrubbed(done: asyncio.Future) -> None:
            busy.discard(pid)
            worker.scrubbing = False
            try:
                result = scrubbed_decoder.decode(done.result())
            except (asyncio.CancelledError, asyncio.TimeoutError, EOFError, OSError, msgspec.ValidationError,
                    msgspec.DecodeError):
                result = None
            if worker not in self._all.get(worker.tenant, ()):
                return  # retired meanwhile (the pool closing, or another tenant's room)
            if result is None or not result.clean:
                if result is not None and result.failure:
                    log.info("retiring a warm worker (pid %d): %s", pid, result.failure[:200])  # its words: bounded
                self._retire(worker)
                return
            worker.cpu_ms = result.cpu_ms
            worker.last_used = time.monotonic()
            self._release(worker)

        report.add_done_callback(scrubbed)

    async def _exchange(self, worker: _Worker, job: Job, body: bytes) -> tuple[Outcome, bool]:
        """As SandboxPool.exchange, over the worker's persistent channel: the outcome and
        whether the worker answered (one that did not is killed and its end mapped)."""
        child = worker.child
        busy = self.pool._busy
        busy.add(child.pid)
        deadline_hit = False
        try:
            try:
                reply = await worker.channel.exchange(HEADER.pack(len(body)), body, job.timeout_ms / 1000.0)
            except asyncio.TimeoutError:
                deadline_hit = True
            except (ConnectionError, EOFError, OSError):
                pass
            else:
                return outcome_decoder.decode(reply), True
            return await self.pool.ended(child, deadline_hit, job.timeout_ms), False
        finally:
            busy.discard(child.pid)

    async def _run_fresh(self, job: Job, deadline: float, span) -> Outcome:
        """A one-shot child, as SandboxPool.run_fresh, taken before the run's deadline."""
        payload = frame(job_encoder.encode(job))
        try:
            child = await asyncio.wait_for(self.pool.acquire_child(replace=False),
                                           max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            self.pool.replenish()
            return _late(job)
        if span is not None:
            span.set_attribute("sandbox.child_pid", child.pid)
        try:
            left_ms = int((deadline - time.monotonic()) * 1000.0)
            if left_ms <= 0:
                return _late(job)
            job = msgspec.structs.replace(job, timeout_ms=left_ms)
            outcome, _alive = await self.pool.exchange(child, job, payload)
            return outcome
        finally:
            child.kill()  # a child never outlives its request
            child.close()
            self.pool.replenish()  # as SandboxPool.run_fresh: the replacement after the run

    def _fits(self, worker: _Worker, job: Job) -> bool:
        """Whether the run's whole CPU allowance fits under the worker's lifetime hard limit."""
        hard_ms = (self.pool.max_cpu_seconds + 1) * 1000.0
        return worker.cpu_ms + job.timeout_ms + 1000.0 <= hard_ms

    def _idle_worker(self, tenant: Hashable, job: Job) -> _Worker | None:
        """The tenant's most recently used idle worker that can take the run, or None; idle
        workers that cannot (broken, dead, out of CPU) are retired on the way."""
        idle = self._idle.get(tenant)
        while idle:
            worker = idle.pop()  # most recently used first: its caches are warmest
            if not worker.channel.broken and worker.child.alive() and self._fits(worker, job):
                return worker
            self._retire(worker)
        return None

    async def _acquire(self, tenant: Hashable, job: Job, deadline: float) -> _Worker | None:
        """The tenant's idle worker, a new one, or None (no warm room, or its workers stayed
        busy past the wait: run in a fresh child). Raises _Late when the deadline passes."""
        give_up = min(deadline, time.monotonic() + self.policy.wait_seconds)
        while True:
            worker = self._idle_worker(tenant, job)
            if worker is not None:
                return worker
            mine = self._all.setdefault(tenant, set())
            # A worker still scrubbing after its last run is free within moments: wait for it
            # rather than start another process (sequential runs keep to one worker).
            if len(mine) < self.policy.per_tenant and not any(w.scrubbing for w in mine):
                try:
                    if self._total() >= self.policy.total and not self._evict_other(tenant):
                        return None
                    return await self._new_worker(tenant, mine, deadline)
                finally:
                    if not mine and self._all.get(tenant) is mine:
                        del self._all[tenant]  # no worker came of it: the tenant holds none
            wait = give_up - time.monotonic()
            if wait <= 0:
                return None
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()  # a turn: True; the wait ran out: False
            self._waiters.setdefault(tenant, collections.deque()).append(waiter)
            timer = loop.call_later(wait, _time_out, waiter)  # a timer, not asyncio.wait's machinery
            try:
                turn = await waiter
            except asyncio.CancelledError:
                self._leave(tenant, waiter)
                raise
            finally:
                timer.cancel()
            if not turn:
                self._leave(tenant, waiter)
                return None  # its workers stayed busy: run fresh rather than past the deadline

    def _leave(self, tenant: Hashable, waiter: asyncio.Future) -> None:
        """Stop waiting; a turn this waiter was already given passes to the next one."""
        queue = self._waiters.get(tenant)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._waiters[tenant]
        elif waiter.done() and not waiter.cancelled() and waiter.result():
            self._wake(tenant)  # it was given a turn it will not take
        if not waiter.done():
            waiter.cancel()

    async def _new_worker(self, tenant: Hashable, mine: set[_Worker], deadline: float) -> _Worker:
        placeholder = _Worker(child=None, tenant=tenant)  # type: ignore[arg-type]  # holds the slot
        mine.add(placeholder)
        try:
            child = await asyncio.wait_for(self.pool.acquire_child(), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise _Late from None
        finally:
            mine.discard(placeholder)
        try:
            channel = Channel(child.sock)
        except BaseException:
            child.kill()
            child.close()
            raise
        worker = _Worker(child=child, tenant=tenant, last_used=time.monotonic(), channel=channel)
        mine.add(worker)
        self._start_reaper()
        return worker

    def _release(self, worker: _Worker) -> None:
        self._idle.setdefault(worker.tenant, []).append(worker)
        self._wake(worker.tenant)

    def _retire(self, worker: _Worker) -> None:
        if worker.channel is not None:
            worker.channel.close()  # stop reading before the socket closes
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

    def _wake(self, tenant: Hashable) -> None:
        waiters = self._waiters.get(tenant)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                break
        if waiters is not None and not waiters:
            del self._waiters[tenant]

    def _evict_other(self, tenant: Hashable) -> bool:
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
                    waiter.set_result(True)  # it looks again and finds the pool closing

    # -- state --------------------------------------------------------------------------
    def counts(self) -> tuple[int, int]:
        """(warm workers alive, tenants holding one)."""
        return self._total(), len(self._all)

    def pids(self) -> dict[Hashable, list[int]]:
        return {t: sorted(w.child.pid for w in ws if w.child is not None) for t, ws in self._all.items()}


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(False)


def _late(job: Job) -> Outcome:
    return Outcome(success=False, error=ErrorInfo(
        code=ErrorCode.TIMEOUT, message=f"the run could not start within its {job.timeout_ms} ms deadline"))
