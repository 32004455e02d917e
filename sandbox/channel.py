"""A warm worker's socket as the node's event loop sees it: one reader for the worker's life.

A one-shot child answers once, so `SandboxPool.exchange` reads its outcome with the loop's
`sock_recv_into`, which registers the socket with the loop's poller and removes it again on
every read, and bounds the read with `asyncio.wait_for`, a task of its own. For a warm worker
that serves thousands of runs, that was a measurable share of the node's CPU per request
(issue 18: ≈ 14 `epoll_ctl` calls, a task and its timer per run; node CPU is the warm path's
bottleneck, its loop being one thread). Here the socket is registered once, when the worker
is made, and a run costs one `sendmsg` (the frame's header and body without joining them), the
reads its reply needs, one future and one timer.

What crosses is unchanged (sandbox/protocol.py: a 4-byte length, then the body). Bytes a worker
sends when no run is waiting for them are a protocol violation: the next run fails on them
(`EOFError`), and the node retires the worker, as it retires one that dies or overruns.
"""

from __future__ import annotations

import asyncio
import socket

from .protocol import HEADER, MAX_FRAME

_READ = 256 * 1024


class Channel:
    """Frames to and from one warm worker over its (non-blocking) socket."""

    __slots__ = ("_sock", "_fd", "_loop", "_buf", "_waiter", "_error", "_closed")

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._loop = loop or asyncio.get_running_loop()
        self._buf = bytearray()
        self._waiter: asyncio.Future | None = None
        self._error: BaseException | None = None  # the socket failed or reached EOF: no more runs
        self._closed = False
        self._loop.add_reader(self._fd, self._on_readable)

    @property
    def broken(self) -> bool:
        return self._error is not None or self._closed

    async def exchange(self, header: bytes, body: bytes, timeout: float) -> bytes:
        """Send one frame, return the body of the worker's reply frame.

        Raises asyncio.TimeoutError when no reply came within `timeout` seconds, EOFError or
        OSError when the worker closed its end, broke the framing or spoke out of turn."""
        waiter = self._expect(timeout, stray_ok=False)
        rest = self._send(header, body)
        if rest is not None:  # the socket's buffer is full: the loop sends the rest as it drains
            try:
                await self._loop.sock_sendall(self._sock, rest)
            except BaseException:
                waiter.cancel()
                raise
        return await waiter

    def receive(self, timeout: float) -> asyncio.Future:
        """A future for the next frame the worker sends without being asked: the report that
        follows a warm run's outcome (sandbox/serve.py). Its result is the frame's body; it fails
        with asyncio.TimeoutError after `timeout` seconds, or EOFError / OSError as `exchange`."""
        return self._expect(timeout, stray_ok=True)

    def _expect(self, timeout: float, stray_ok: bool) -> asyncio.Future:
        """The waiter for the next frame, with its timer; `stray_ok`: bytes already read belong
        to it (a report sent right behind an outcome), else they are a protocol violation."""
        if self._error is not None:
            raise self._error
        if self._closed or self._waiter is not None:
            raise EOFError("the channel is closed or busy")
        if self._buf and not stray_ok:
            raise EOFError("the worker sent bytes no run asked for")
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter)
        waiter.add_done_callback(lambda _done: self._settled(waiter, timer))
        if self._buf:
            self._deliver()
            if waiter.done():  # already here: free the channel now, not when the callback runs
                self._settled(waiter, timer)
        return waiter

    def _settled(self, waiter: asyncio.Future, timer: asyncio.TimerHandle) -> None:
        timer.cancel()
        if self._waiter is waiter:
            self._waiter = None

    def _send(self, header: bytes, body: bytes) -> memoryview | None:
        """Send what the socket takes now (one sendmsg, usually all of it); what it did not take."""
        total = len(header) + len(body)
        try:
            sent = self._sock.sendmsg((header, body))
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent >= total:
            return None
        return memoryview(header + body)[sent:] if sent < len(header) else memoryview(body)[sent - len(header):]

    def _on_readable(self) -> None:
        try:
            data = self._sock.recv(_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(exc)
            return
        if not data:
            self._fail(EOFError("the worker closed its channel"))
            return
        buf = self._buf
        waiter = self._waiter
        if not buf and waiter is not None and not waiter.done() and len(data) >= HEADER.size \
                and HEADER.unpack_from(data)[0] == len(data) - HEADER.size:
            waiter.set_result(data[HEADER.size:])  # the usual case: one read, one whole frame
            return
        buf += data
        self._deliver()

    def _deliver(self) -> None:
        """Hand the waiting run the first whole frame in the buffer, if there is one."""
        buf = self._buf
        if len(buf) < HEADER.size:
            return
        (size,) = HEADER.unpack_from(buf)
        if size > MAX_FRAME:
            self._fail(EOFError("oversized frame"))
            return
        end = HEADER.size + size
        waiter = self._waiter
        if len(buf) < end or waiter is None or waiter.done():
            return  # a frame still coming, or bytes no run asked for: the next run refuses them
        body = bytes(memoryview(buf)[HEADER.size:end])
        del buf[:end]
        waiter.set_result(body)

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        self._stop_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _stop_reading(self) -> None:
        try:
            self._loop.remove_reader(self._fd)
        except (OSError, ValueError, RuntimeError):
            pass  # the loop is closed or the fd already gone

    def close(self) -> None:
        """Stop reading (before the socket is closed); a waiting run fails with EOFError."""
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._stop_reading()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(EOFError("the channel was closed"))


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
