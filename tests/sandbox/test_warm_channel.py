"""A warm worker's channel (sandbox/channel.py): frames over a real socket pair, one reader for
the worker's life, and every way the worker can misbehave ends the run with an error."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import pytest

from sandbox.channel import Channel
from sandbox.protocol import HEADER


def pair() -> tuple[socket.socket, socket.socket]:
    node_end, worker_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    node_end.setblocking(False)
    return node_end, worker_end


def read_frame(sock: socket.socket) -> bytes:
    head = sock.recv(HEADER.size, socket.MSG_WAITALL)
    (size,) = HEADER.unpack(head)
    return sock.recv(size, socket.MSG_WAITALL) if size else b""


async def worker_echo(worker_end: socket.socket, runs: int, chunk: int | None = None) -> None:
    """Answers each frame with its body reversed, optionally dribbling the reply in small writes."""
    loop = asyncio.get_running_loop()
    for _ in range(runs):
        body = await loop.run_in_executor(None, read_frame, worker_end)
        reply = HEADER.pack(len(body)) + body[::-1]
        if chunk is None:
            await loop.run_in_executor(None, worker_end.sendall, reply)  # may block: not on the loop
        else:
            for i in range(0, len(reply), chunk):
                worker_end.sendall(reply[i:i + chunk])
                await asyncio.sleep(0)


@contextlib.contextmanager
def opened() -> Iterator[tuple[Channel, socket.socket, socket.socket]]:
    """A channel over the node's end of a fresh socket pair; all three closed on the way out."""
    node_end, worker_end = pair()
    channel = Channel(node_end)
    try:
        yield channel, node_end, worker_end
    finally:
        channel.close()
        node_end.close()
        worker_end.close()


async def exchange(channel: Channel, body: bytes, timeout: float = 5.0) -> bytes:
    return await channel.exchange(HEADER.pack(len(body)), body, timeout)


async def test_each_run_gets_its_own_reply_in_order():
    with opened() as (channel, node_end, worker_end):
        serving = asyncio.ensure_future(worker_echo(worker_end, 3))
        assert await exchange(channel, b"abc") == b"cba"
        assert await exchange(channel, b"") == b""
        assert await exchange(channel, b"12345") == b"54321"
        await serving


async def test_a_reply_that_arrives_in_pieces_is_reassembled():
    with opened() as (channel, node_end, worker_end):
        body = bytes(range(256)) * 40
        serving = asyncio.ensure_future(worker_echo(worker_end, 1, chunk=3))
        assert await exchange(channel, body) == body[::-1]
        await serving


async def test_a_request_larger_than_the_socket_buffer_is_sent_whole():
    node_end, worker_end = pair()
    node_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    channel = Channel(node_end)
    body = b"x" * 3_000_000 + b"end"
    serving = asyncio.ensure_future(worker_echo(worker_end, 1))
    try:
        assert await exchange(channel, body) == body[::-1]
        await serving
    finally:
        channel.close()
        node_end.close()
        worker_end.close()


async def test_the_socket_is_registered_with_the_loop_once_for_all_runs(monkeypatch):
    loop = asyncio.get_running_loop()
    calls = []
    add, remove = loop.add_reader, loop.remove_reader
    monkeypatch.setattr(loop, "add_reader", lambda *a: (calls.append("add"), add(*a))[1])
    monkeypatch.setattr(loop, "remove_reader", lambda *a: (calls.append("remove"), remove(*a))[1])
    with opened() as (channel, node_end, worker_end):
        serving = asyncio.ensure_future(worker_echo(worker_end, 20))
        for i in range(20):
            assert await exchange(channel, str(i).encode()) == str(i).encode()[::-1]
        await serving
        assert calls == ["add"]
        channel.close()
        assert calls == ["add", "remove"]


async def test_no_reply_within_the_timeout_is_a_timeout_and_the_timer_does_not_outlive_it():
    with opened() as (channel, node_end, worker_end):
        with pytest.raises(asyncio.TimeoutError):
            await exchange(channel, b"ping", timeout=0.05)


async def test_a_worker_that_closes_its_end_fails_the_waiting_run_and_every_later_one():
    with opened() as (channel, node_end, worker_end):
        waiting = asyncio.ensure_future(exchange(channel, b"ping"))
        await asyncio.sleep(0.01)
        worker_end.close()  # with our request unread: the kernel resets the connection
        with pytest.raises((EOFError, ConnectionError)):
            await waiting
        assert channel.broken
        with pytest.raises((EOFError, ConnectionError)):
            await exchange(channel, b"again")


async def test_bytes_a_worker_sends_when_no_run_asked_fail_the_next_run():
    with opened() as (channel, node_end, worker_end):
        worker_end.sendall(HEADER.pack(5) + b"forged")  # a whole frame and more, unasked
        await asyncio.sleep(0.05)
        with pytest.raises(EOFError):
            await exchange(channel, b"ping")


async def test_an_oversized_frame_header_breaks_the_channel():
    with opened() as (channel, node_end, worker_end):
        waiting = asyncio.ensure_future(exchange(channel, b"ping"))
        await asyncio.sleep(0.01)
        worker_end.sendall(HEADER.pack(0xFFFFFFFF))
        with pytest.raises(EOFError):
            await waiting
        assert channel.broken


async def test_closing_the_channel_fails_a_waiting_run():
    with opened() as (channel, node_end, worker_end):
        waiting = asyncio.ensure_future(exchange(channel, b"ping"))
        await asyncio.sleep(0.01)
        channel.close()
        with pytest.raises(EOFError):
            await waiting


async def test_a_report_sent_right_behind_the_reply_is_kept_for_receive():
    with opened() as (channel, node_end, worker_end):
        async def reply_then_report() -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, read_frame, worker_end)
            worker_end.sendall(HEADER.pack(5) + b"reply" + HEADER.pack(6) + b"report")  # one write
        serving = asyncio.ensure_future(reply_then_report())
        assert await exchange(channel, b"ping") == b"reply"
        await serving
        await asyncio.sleep(0.02)  # both frames are read by now
        assert await channel.receive(1.0) == b"report"
        serving = asyncio.ensure_future(worker_echo(worker_end, 1))
        assert await exchange(channel, b"next") == b"txen"  # the channel is free for the next run
        await serving


async def test_receive_times_out_when_no_report_comes_and_a_late_one_fails_the_next_run():
    with opened() as (channel, node_end, worker_end):
        with pytest.raises(asyncio.TimeoutError):
            await channel.receive(0.05)
        worker_end.sendall(HEADER.pack(4) + b"late")
        await asyncio.sleep(0.05)
        with pytest.raises(EOFError):
            await exchange(channel, b"ping")
