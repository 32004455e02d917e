"""Bounded admission: at most `max_workers` runs at once, `max_queue` waiting, the rest refused.

Refusing at once (OVERLOADED) beats stalling: the caller can retry elsewhere while its budget
lasts, and a queue-group peer with room picks the retry up.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable


class Admission:
    def __init__(self, max_workers: int, max_queue: int) -> None:
        self.max_workers = max_workers
        self.max_queue = max_queue
        self._slots = asyncio.Semaphore(max_workers)
        self._tasks: set[asyncio.Task] = set()
        self.running = 0
        self.queued = 0
        self.closed = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def submit(self, work: Callable[[], Awaitable[None]]) -> bool:
        """Start `work` behind the bound; False (and nothing started) when full or closed."""
        if self.closed or len(self._tasks) >= self.max_workers + self.max_queue:
            return False
        task = asyncio.ensure_future(self._run(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _run(self, work: Callable[[], Awaitable[None]]) -> None:
        self.queued += 1
        try:
            await self._slots.acquire()
        finally:
            self.queued -= 1
        self.running += 1
        try:
            await work()
        finally:
            self.running -= 1
            self._slots.release()

    async def drain(self, timeout: float) -> bool:
        """Refuse new work and wait for everything admitted; True if it all finished in time."""
        self.closed = True
        if not self._tasks:
            return True
        done, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending
