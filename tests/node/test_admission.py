"""Bounded work: OVERLOADED past the queue, no start after the budget ran out, INTERNAL on outside kills."""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import pytest_asyncio

from contracts import subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from tests.support import columnar_bars, request_json

LOOP = "def strategy(data):\n    while True:\n        pass\n"
QUICK = "def strategy(data): return 'BUY'"


@pytest_asyncio.fixture
async def tiny_node():
    """One worker, no queue, on its own nats-server so no other node shares the queue group."""
    server = EmbeddedServer(jetstream=False).start()
    settings = Settings.from_env({"MAX_WORKERS": "1", "MAX_QUEUE": "1", "SANDBOX_READY": "1",
                                  "MAX_TIMEOUT_SECONDS": "5", "NODE_ID": "tiny"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    yield node, conn
    await conn.drain()
    await node.stop()
    server.close()


async def test_requests_past_the_queue_are_refused_at_once_with_overloaded(tiny_node):
    _node, conn = tiny_node
    bars = columnar_bars(5)
    busy = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": LOOP, "bars": bars, "timeout_ms": 1500}))
    queued = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": bars, "timeout_ms": 4000}))
    await asyncio.sleep(0.2)
    refused = await request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": bars}, timeout=1.0)
    assert refused["error"]["code"] == "OVERLOADED"
    assert (await busy)["error"]["code"] == "TIMEOUT"
    assert (await queued)["success"] is True


async def test_a_request_whose_budget_ran_out_in_the_queue_is_not_started(tiny_node):
    _node, conn = tiny_node
    bars = columnar_bars(5)
    busy = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": LOOP, "bars": bars, "timeout_ms": 1000}))
    await asyncio.sleep(0.1)
    late = await request_json(conn, subjects.EXECUTE, {"code": "log('ran')\n", "bars": bars, "timeout_ms": 300})
    assert late["error"]["code"] == "TIMEOUT"
    assert "before it could start" in late["error"]["message"]
    await busy


async def test_a_child_killed_from_outside_is_an_internal_error(tiny_node):
    node, conn = tiny_node
    bars = columnar_bars(5)
    pending = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": LOOP, "bars": bars, "timeout_ms": 4000}))
    await asyncio.sleep(0.5)
    (victim,) = node.pool.busy_children()
    os.kill(victim, signal.SIGTERM)
    reply = await pending
    assert reply["error"]["code"] == "INTERNAL"
    assert "signal 15" in reply["error"]["message"]
    again = await request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": bars})
    assert again["success"] is True
