"""Pull requests to a JetStream consumer, each read until the server has ended it.

nats-py's `fetch` ends on the client's clock: it gives up `timeout` after it sent the request,
while the server expires the request `expires` after it *received* it. A server that takes the
request late (a stall, a loaded host) keeps it open after `fetch` returned, and delivers the
next message to a client that has stopped pulling: a node that closed then never sees that
job, which stays unacked, run by nobody, for a whole ack wait.

A `Puller` reads each request to its end: its batch delivered, or the server's closing status
for it (408 expired, 404 no messages, 409). Only then is the request over. `open` counts the
requests that are not (one whose reader was cancelled, or whose server stayed silent past the
grace); `hand_back` waits for those to end and hands back what they bring.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any, Callable

import nats
import nats.errors
import nats.js.errors
from nats.js.api import DEFAULT_PREFIX

STATUS = "Status"
HEARTBEAT = "100"
OVER = frozenset({"404", "408", "409"})  # the server ended the request (nats-py: temporary errors)


class _Request:
    """One open pull request: how many messages it may still bring."""

    __slots__ = ("left",)

    def __init__(self, batch: int) -> None:
        self.left = batch


class Puller:
    """One subscription (its own inbox) to which pull requests for one consumer are delivered.

    The server serves a consumer's requests in the order it received them, so a message or a
    closing status is counted against the oldest open request.
    """

    def __init__(self, nc: nats.NATS, sub: Any, subject: str, grace: float) -> None:
        self.nc = nc
        self.sub = sub
        self.subject = subject
        self.grace = grace
        self._open: deque[_Request] = deque()

    @classmethod
    async def bind(cls, nc: nats.NATS, stream: str, consumer: str, grace: float = 2.0,
                   prefix: str = DEFAULT_PREFIX) -> "Puller":
        """`grace`: how long past a request's expiry the server may stay silent before the
        reader gives up on it (it then stays counted as open)."""
        sub = await nc.subscribe(nc.new_inbox())
        return cls(nc, sub, f"{prefix}.CONSUMER.MSG.NEXT.{stream}.{consumer}", grace)

    @property
    def open(self) -> int:
        """Requests the server may still deliver to."""
        return len(self._open)

    async def pull(self, batch: int, expires: float, on_msg: Callable[[Any], None]) -> int:
        """Ask for up to `batch` messages, lingering at most `expires` seconds at the server;
        pass each to `on_msg` as it arrives; return how many came, once the server has ended
        the request. Raises nats.errors.TimeoutError when the server stays silent past
        `expires` + grace (the request then stays open), APIError for an error status."""
        request = _Request(batch)
        body = json.dumps({"batch": batch, "expires": int(expires * 1_000_000_000)}).encode()
        self._open.append(request)  # before the publish: a reader cancelled inside it leaves it counted
        try:
            await self.nc.publish(self.subject, body, reply=self.sub.subject)
        except Exception:  # noqa: BLE001 - not sent (e.g. the connection is closed): not open
            self._open.remove(request)
            raise
        deadline = time.monotonic() + expires + self.grace
        got = 0
        while any(r is request for r in self._open):
            msg = await self.sub.next_msg(timeout=max(0.001, deadline - time.monotonic()))
            if self._take(msg):
                got += 1
                on_msg(msg)
        return got

    async def hand_back(self, wait: float, on_msg: Callable[[Any], None]) -> None:
        """Pass every message already delivered to `on_msg`, then, for at most `wait` seconds,
        what the open requests still bring until the server has ended them all."""
        deadline = time.monotonic() + wait
        while self.sub.pending_msgs or self._open:
            left = deadline - time.monotonic()
            if left <= 0 and not self.sub.pending_msgs:
                self._open.clear()  # the server stayed silent: given up
                return
            try:
                msg = await self.sub.next_msg(timeout=max(0.001, left))
            except nats.errors.TimeoutError:
                continue
            try:
                if self._take(msg):
                    on_msg(msg)
            except nats.js.errors.APIError:
                continue

    async def unsubscribe(self) -> None:
        self._open.clear()
        await self.sub.unsubscribe()

    def _take(self, msg: Any) -> bool:
        """True for a message (one fewer due on the oldest open request); False for a status
        that ended the oldest open request, or a heartbeat. Raises APIError for an error status."""
        status = (msg.headers or {}).get(STATUS)
        if status == HEARTBEAT:
            return False
        oldest = self._open[0] if self._open else None
        if status is None:
            if oldest is not None:
                oldest.left -= 1
                if oldest.left <= 0:
                    self._open.popleft()
            return True
        if oldest is not None:
            self._open.popleft()
        if status in OVER:
            return False
        raise nats.js.errors.APIError.from_msg(msg)
