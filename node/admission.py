"""Bounded admission: at most `max_workers` runs at once, `max_queue` waiting, and at most
`ByteBudget.max_bytes` of request payload held by everything admitted; the rest refused.

Refusing at once (OVERLOADED) beats stalling: the caller can retry elsewhere while its budget
lasts, and a queue-group peer with room picks the retry up. Counting bytes as well as requests
matters for large requests: forty 7.6 MB requests are 300 MB before any of them is decoded (and
several times that once decoded), and a node that stops reading its socket while it works
through them is dropped by nats-server as a slow consumer. With the byte bound the node holds
at most `MAX_INFLIGHT_BYTES` of payload, answers the rest OVERLOADED at once, and keeps reading.

One `ByteBudget` is shared by every admission of a node (requests, grid points, durable jobs),
so the bound is per node, not per endpoint. A request larger than the whole budget is still
admitted when nothing else holds bytes (otherwise it could never run).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Awaitable, Callable

DEFAULT_MAX_INFLIGHT_BYTES = 64 * 1024 * 1024


class ByteBudget:
    """Payload bytes held by admitted work, bounded by `max_bytes` (0: unbounded)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_INFLIGHT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.refused = 0

    def take(self, size: int, force: bool = False) -> bool:
        if size <= 0:
            return True
        if not force and self.max_bytes and self.used and self.used + size > self.max_bytes:
            self.refused += 1
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        if size > 0:
            self.used = max(0, self.used - size)


class Admission:
    """At most `max_workers` works running; the rest wait in order (FIFO), up to `max_queue`.

    A work submitted while a slot is free runs as its own task directly (its slot taken at
    submit, given back when the task is done, however it ends): no wrapper coroutine and no
    semaphore per request on the warm path (issue 18). Only a work that must wait gets a
    wrapper, which waits for its turn; a slot that frees passes to the first waiter."""

    def __init__(self, max_workers: int, max_queue: int, budget: ByteBudget | None = None) -> None:
        self.max_workers = max_workers
        self.max_queue = max_queue
        self.budget = budget if budget is not None else ByteBudget(0)
        self._waiters: collections.deque[asyncio.Future] = collections.deque()
        self._tasks: set[asyncio.Task] = set()
        self.running = 0
        self.queued = 0
        self.closed = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, work: Callable[[], Awaitable[None]], size: int = 0, force_bytes: bool = False) -> bool:
        """Start `work` behind the bounds, holding `size` payload bytes until it ends; False
        (and nothing started) when closed, when the count is full or the bytes would not fit.
        `force_bytes` counts the bytes without refusing on them: for work already taken that
        must not be handed back (a durable job: a hand-back costs one of its deliveries), whose
        taking was gated on the budget beforehand."""
        if self.closed or len(self._tasks) >= self.max_workers + self.max_queue:
            return False
        if not self.budget.take(size, force_bytes):
            return False
        if self.running < self.max_workers and not self._waiters:
            self.running += 1  # its slot, given back by `done` whether or not it ever starts
            task = asyncio.ensure_future(work())
            waiter = None
        else:
            # The waiter joins the queue now, at submit, not when its task first runs: a slot
            # freed in between must find it (else the slot goes back to the count, the waiter
            # waits for a release that never comes, and every later submit queues behind it).
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            self.queued += 1
            task = asyncio.ensure_future(self._queued(work, waiter))
        self._tasks.add(task)

        def done(t: asyncio.Task) -> None:
            self._tasks.discard(t)
            self.budget.give(size)
            if waiter is None or (waiter.done() and not waiter.cancelled()):
                self._release()  # it held a slot (used or not): pass it on
            else:  # ended (cancelled, even before its first step) while still waiting
                self.queued -= 1
                waiter.cancel()
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass

        task.add_done_callback(done)
        return True

    @staticmethod
    async def _queued(work: Callable[[], Awaitable[None]], waiter: asyncio.Future) -> None:
        await waiter  # a slot handed over by _release (still counted in `running`)
        await work()

    def _release(self) -> None:
        """A slot is free: the first waiter still waiting takes it, else it goes back to the count."""
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                self.queued -= 1
                waiter.set_result(None)
                return
        self.running -= 1

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait for everything admitted; True if it all finished in time."""
        self.closed = True
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending


class PendingLimited:
    """The NATS client as the micro service sees it: every subscription the service makes
    (its endpoints, `$SRV.*`) gets pending limits that match the node's admission, instead of
    nats-py's defaults (512k messages, 128 MB per subscription).

    A subscription's pending queue holds what has been read from the socket but not yet handed
    to the endpoint, which only submits it to `Admission` (admitted, or refused at once). Its
    byte bound is the node's in-flight budget plus one maximal message, so what a node holds
    unread is bounded like what it holds admitted. The message bound leaves room for a burst of
    small requests several times the admission queue. Only the public `subscribe` is changed.
    """

    def __init__(self, nc, settings) -> None:
        self._nc = nc
        payload = int(getattr(nc, "max_payload", 0) or 1024 * 1024)
        budget = settings.max_inflight_bytes or DEFAULT_MAX_INFLIGHT_BYTES
        self.pending_bytes_limit = budget + 2 * payload
        self.pending_msgs_limit = max(65_536, 16 * (settings.max_workers + settings.max_queue))

    def __getattr__(self, name: str):
        return getattr(self._nc, name)

    async def subscribe(self, *args, **kwargs):
        kwargs.setdefault("pending_msgs_limit", self.pending_msgs_limit)
        kwargs.setdefault("pending_bytes_limit", self.pending_bytes_limit)
        return await self._nc.subscribe(*args, **kwargs)
