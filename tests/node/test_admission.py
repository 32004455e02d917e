"""Bounded work: OVERLOADED past the queue, no start after the budget ran out, INTERNAL on outside kills."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

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


# -- admission by bytes -----------------------------------------------------------------------
async def test_the_byte_budget_refuses_work_that_would_pass_it_and_frees_bytes_when_work_ends():
    from node.admission import Admission, ByteBudget

    admission = Admission(max_workers=8, max_queue=8, budget=ByteBudget(100))
    release = asyncio.Event()

    async def work() -> None:
        await release.wait()

    assert admission.submit(work, 60)
    assert not admission.submit(work, 60)  # 120 > 100: refused, nothing started
    assert admission.in_flight == 1
    assert admission.submit(work, 40)  # exactly the budget
    release.set()
    await asyncio.sleep(0.01)
    assert admission.budget.used == 0
    assert admission.submit(work, 100)


async def test_a_request_larger_than_the_whole_byte_budget_runs_when_nothing_else_holds_bytes():
    from node.admission import Admission, ByteBudget

    admission = Admission(max_workers=2, max_queue=2, budget=ByteBudget(10))
    ran = asyncio.Event()

    async def work() -> None:
        ran.set()

    assert admission.submit(work, 1000)
    await asyncio.wait_for(ran.wait(), 1)


async def test_large_requests_past_the_node_byte_budget_get_overloaded_at_once(tmp_path):
    """A node with a 1 MiB budget: a 0.7 MB request that runs holds its bytes; a second one
    is refused OVERLOADED while the first runs, though the worker count has room."""
    server = EmbeddedServer(jetstream=False).start()
    settings = Settings.from_env({"MAX_WORKERS": "4", "MAX_QUEUE": "8", "SANDBOX_READY": "1",
                                  "MAX_INFLIGHT_BYTES": str(1024 * 1024), "NODE_ID": "bytes"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    try:
        bars = columnar_bars(12_000, step_ms=60_000)
        busy = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": LOOP, "bars": bars, "timeout_ms": 2000}))
        await asyncio.sleep(0.5)
        refused = await request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": bars}, timeout=5)
        small = await request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": columnar_bars(5)}, timeout=5)
        assert refused["error"]["code"] == "OVERLOADED"
        assert small["success"] is True  # the count has room and 5 bars fit beside the 0.7 MB
        assert (await busy)["error"]["code"] == "TIMEOUT"
        after = await request_json(conn, subjects.EXECUTE, {"code": QUICK, "bars": bars}, timeout=10)
        assert after["success"] is True  # the bytes were given back
    finally:
        await conn.drain()
        await node.stop()
        server.close()


BURST = 40
BURST_BYTES = 7_600_000
BURST_RSS_MB = 380  # the node's peak RSS through the burst (VmHWM): 234-284 MB measured, 426-493 MB with no byte budget


async def test_a_burst_of_large_requests_is_answered_without_a_slow_consumer_disconnect(tmp_path):
    """The cluster's `max_payload 8MB`, 40 concurrent 7.6 MB execute requests at one node
    (MAX_WORKERS=2, default MAX_INFLIGHT_BYTES 64 MiB): every request gets a reply, success or
    OVERLOADED; nats-server never drops the node (one connection in /connz, never closed); the
    node's peak RSS stays under BURST_RSS_MB.

    The server's `max_pending` is raised from its 64 MB default to hold the burst, as in
    deploy/nats/cluster/common.conf: 300 MB sent at once to one connection exceeds 64 MB faster than any nats-py
    client reads (a bare nats-py echo subscriber is dropped the same way), so "waits in the
    server" needs room in the server; what the node holds stays bounded by its byte budget.
    """
    from tests.node.memory import NodeOnServer

    setup = NodeOnServer(tmp_path, "burst", "max_payload: 8MB\nmax_pending: 512MB",
                         MAX_WORKERS="2", SANDBOX_READY="2")
    conn = await nats.connect(setup.server.url)
    try:
        await setup.ready(conn)
        n = BURST_BYTES // 58
        body = json.dumps({"code": QUICK, "bars": columnar_bars(n, step_ms=60_000)}).encode()
        assert 7_000_000 < len(body) < 8 * 1024 * 1024 - 4096
        codes: dict[str, int] = {}

        async def one() -> None:
            try:
                msg = await conn.request(subjects.EXECUTE, body, timeout=60)
                reply = json.loads(msg.data)
                code = "success" if reply["success"] else reply["error"]["code"]
            except Exception as exc:  # noqa: BLE001 - counted: must not happen
                code = type(exc).__name__
            codes[code] = codes.get(code, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(BURST)))
        took = time.monotonic() - started
        memory = setup.memory_kb()
        print(f"\n[burst] {BURST} x {len(body):,} B in {took:.1f}s: {codes}; node VmHWM {memory['VmHWM'] // 1024} MB")
        assert set(codes) <= {"success", "OVERLOADED"}, codes
        assert sum(codes.values()) == BURST
        assert codes.get("success", 0) >= 2
        conns = setup.connections()
        assert len(conns) == 1 and not conns[0].get("reason"), conns  # never dropped, never reconnected
        assert memory["VmHWM"] < BURST_RSS_MB * 1024
    finally:
        await conn.close()
        setup.close()


async def test_service_subscriptions_hold_at_most_the_byte_budget_plus_two_messages_unread():
    """PendingLimited gives every subscription the micro service makes pending limits from the
    node's settings: with its callback stalled, a subscription keeps MAX_INFLIGHT_BYTES + 2 x
    max_payload unread and drops the rest (nats-py reports a slow consumer), instead of nats-py's
    128 MB default per subscription."""
    import nats.errors

    from node.admission import PendingLimited

    server = EmbeddedServer(jetstream=False).start()
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    conn = await nats.connect(server.url, error_cb=on_error)
    sender = await nats.connect(server.url)
    try:
        settings = Settings.from_env({"MAX_INFLIGHT_BYTES": str(512 * 1024), "MAX_WORKERS": "1", "MAX_QUEUE": "1"})
        limited = PendingLimited(conn, settings)
        assert limited.pending_bytes_limit == 512 * 1024 + 2 * conn.max_payload
        stall = asyncio.Event()
        got: list[int] = []

        async def slow(msg) -> None:
            got.append(len(msg.data))
            await stall.wait()

        await limited.subscribe("pending.test", cb=slow)
        await conn.flush()
        chunk = b"x" * (256 * 1024)
        for _ in range(40):  # 10 MB at a stalled subscriber
            await sender.publish("pending.test", chunk)
        await sender.flush()
        await asyncio.sleep(1.0)
        assert any(isinstance(e, nats.errors.SlowConsumerError) for e in errors)
        stall.set()
        await asyncio.sleep(0.5)
        held = sum(got)
        assert held <= limited.pending_bytes_limit + len(chunk)
        assert held < 40 * len(chunk)
    finally:
        await sender.close()
        await conn.close()
        server.close()


def test_max_inflight_bytes_defaults_to_64_mib_and_is_validated():
    import pytest

    assert Settings.from_env({}).max_inflight_bytes == 64 * 1024 * 1024
    assert Settings.from_env({"MAX_INFLIGHT_BYTES": "0"}).max_inflight_bytes == 0  # unbounded
    with pytest.raises(ValueError, match="MAX_INFLIGHT_BYTES"):
        Settings.from_env({"MAX_INFLIGHT_BYTES": "lots"})
    with pytest.raises(ValueError, match="MAX_INFLIGHT_BYTES"):
        Settings.from_env({"MAX_INFLIGHT_BYTES": "-1"})


async def test_durable_jobs_wait_in_the_stream_while_the_byte_budget_is_held(tmp_path):
    """Jobs count against the same byte budget: while a large request holds it, the node fetches
    no job (it stays in STRATEGY_JOBS); when the bytes are given back the job runs."""
    from node import jobs_client

    server = EmbeddedServer(store_dir=str(tmp_path / "js")).start()
    settings = Settings.from_env({"MAX_WORKERS": "4", "MAX_QUEUE": "8", "SANDBOX_READY": "1",
                                  "MAX_INFLIGHT_BYTES": str(1024 * 1024), "NODE_ID": "bytes-jobs"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    try:
        for _ in range(100):
            if node.jobs.health().state == "consuming":
                break
            await asyncio.sleep(0.1)
        bars = columnar_bars(12_000, step_ms=60_000)
        busy = asyncio.ensure_future(request_json(conn, subjects.EXECUTE, {"code": LOOP, "bars": bars, "timeout_ms": 4000}))
        await asyncio.sleep(1.5)  # longer than a pull request lingers (FETCH_WAIT_S): none is outstanding
        job = {"code": QUICK, "bars": columnar_bars(5)}
        job_id = await jobs_client.submit(conn, "execute", job)
        await asyncio.sleep(1.0)
        assert await jobs_client.result(conn, job_id, wait=0.1) is None  # still waiting in the stream
        assert (await busy)["error"]["code"] == "TIMEOUT"
        stored = await jobs_client.result(conn, job_id, wait=15)
        assert stored is not None and stored.success is True
    finally:
        await conn.drain()
        await node.stop()
        server.close()
