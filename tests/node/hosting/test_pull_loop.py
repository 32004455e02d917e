"""The pull loop of hosted triggers, fan-out and schedule fires, against a real nats-server.

A node that stops pulling must leave nothing at the server that still delivers to it: a pull
request the server received late (a stall) stays open after the client's own wait ended, and
what it then brings, or what arrives as the node stops, must go to another node at once, not
sit unacked for a whole ack wait (30 s here).
"""

from __future__ import annotations

import asyncio
import signal
import time
from types import SimpleNamespace

import nats
import pytest_asyncio
from nats.js.api import AckPolicy, ConsumerConfig, RetentionPolicy, StreamConfig

from node.hosting.triggers import PullLoop
from tests.node.hosting.support import wait_for
from tests.support import stall

STREAM, CONSUMER = "LOOPTEST", "loop-test"


@pytest_asyncio.fixture
async def nc(bare_server):
    """A connection to this test's own server (not the session's), with the stream and consumer."""
    conn = await nats.connect(bare_server.url)
    js = conn.jetstream()
    await js.add_stream(StreamConfig(name=STREAM, subjects=["looptest.>"], retention=RetentionPolicy.WORK_QUEUE))
    await js.add_consumer(STREAM, ConsumerConfig(durable_name=CONSUMER, ack_policy=AckPolicy.EXPLICIT,
                                                 ack_wait=30.0, max_ack_pending=100))
    try:
        yield conn
    finally:
        await conn.close()


def pull_loop(nc, handled: list, room: list[int]) -> PullLoop:
    async def handle(msgs):
        for msg in msgs:
            handled.append(msg.data)
            await msg.ack()
    loop = PullLoop(SimpleNamespace(nc=nc, js=nc.jetstream()), STREAM, CONSUMER, handle, lambda: room[0])
    loop.start()
    return loop


async def taken_at_once_by_another_node(nc) -> None:
    probe = await nc.jetstream().pull_subscribe_bind(durable=CONSUMER, stream=STREAM)
    started = time.monotonic()
    (msg,) = await probe.fetch(1, timeout=5)
    assert time.monotonic() - started < 2.0  # at once, not after the 30 s ack wait
    await msg.ack()


async def test_the_loop_handles_what_it_pulls(nc):
    handled: list[bytes] = []
    loop = pull_loop(nc, handled, [1])
    try:
        await nc.jetstream().publish("looptest.a", b"one")
        await wait_for(lambda: asyncio.sleep(0, handled == [b"one"]), 5)
    finally:
        await loop.stop()
    assert loop.state == "stopped"


async def test_a_pull_request_the_server_received_late_is_over_when_the_loop_stops(nc, bare_server):
    handled: list[bytes] = []
    loop = pull_loop(nc, handled, [1])
    await wait_for(lambda: asyncio.sleep(0, loop.state == "consuming"), 5)
    await stall(bare_server, 1.5)  # longer than a pull request lasts: one is sent during the stall
    await loop.stop()
    info = await nc.jetstream().consumer_info(STREAM, CONSUMER)
    assert info.num_waiting == 0  # no pull request of the stopped loop is left open on the server
    await nc.jetstream().publish("looptest.a", b"after")
    await taken_at_once_by_another_node(nc)
    assert handled == []


async def test_a_message_that_reaches_a_stopping_loop_is_handed_back_at_once(nc, bare_server):
    handled: list[bytes] = []
    room = [0]  # no room: the loop does not pull yet
    loop = pull_loop(nc, handled, room)
    await nc.jetstream().publish("looptest.a", b"late")
    bare_server.proc.send_signal(signal.SIGSTOP)
    try:
        room[0] = 1
        loop.room()  # room frees: the loop sends a pull request the stopped server holds
        await asyncio.sleep(0.3)  # the loop looks for room every 20 ms, then sends its pull request
        stopping = asyncio.ensure_future(loop.stop())
        await asyncio.sleep(0)  # stopping from here on; the server delivers the message only now
    finally:
        bare_server.proc.send_signal(signal.SIGCONT)
    await stopping
    assert handled == []
    await taken_at_once_by_another_node(nc)
