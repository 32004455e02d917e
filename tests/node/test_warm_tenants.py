"""The opt-in warm mode through NATS, exactly as a client uses it: a node started with
TENANT_WARM_RUNS and TRUST_BODY_USER_ID (a closed network: one account, the operator vouches for
body user ids) runs requests that carry a `user_id` in that tenant's warm worker. Tenants proven
by NATS accounts instead of the body: tests/node/test_tenant_identity.py."""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest_asyncio

from contracts import subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.identity import Tenant
from node.service import Node
from tests.support import columnar_bars, request_json

ECHO = "def strategy(data):\n    return {'signal': 'HOLD', 'who': params['who']}\n"
SMA = ("def strategy(data):\n    close = data['close']\n"
       "    above = (close.rolling(5).mean() > close.rolling(20).mean()).astype('int8')\n"
       "    return above.diff().fillna(0)\n")


@pytest_asyncio.fixture(scope="module")
async def warm_node():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "warm-node", "MAX_WORKERS": "4",
                                  "TENANT_WARM_RUNS": "50", "TENANT_WARM_WORKERS": "1",
                                  "TENANT_WARM_MAX": "4", "TRUST_BODY_USER_ID": "true"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    yield node, conn
    await conn.drain()
    await node.stop()
    server.close()


def body(user_id: str) -> Tenant:
    """The warm-worker key of a body user id the node was told to trust."""
    return Tenant("", "", user_id)


def execute(user_id: str | None, who: str = "x", code: str = ECHO) -> dict:
    body = {"code": code, "bars": columnar_bars(60), "parameters": {"who": who}}
    if user_id is not None:
        body["user_id"] = user_id
    return body


async def health(nc) -> dict:
    msg = await nc.request(subjects.node_health("warm-node"), b"{}", timeout=5)
    return json.loads(msg.data)


async def test_a_tenants_requests_run_in_its_one_warm_worker(warm_node):
    node, nc = warm_node
    for i in range(3):
        reply = await request_json(nc, subjects.EXECUTE, execute("alice", f"a{i}"))
        assert reply["success"] and reply["result"]["who"] == f"a{i}"
    assert len(node.pool.warm_children()[body("alice")]) == 1


async def test_health_reports_warm_workers_and_tenants(warm_node):
    node, nc = warm_node
    await request_json(nc, subjects.EXECUTE, execute("health-tenant"))
    pool = (await health(nc))["pool"]
    assert pool["warm_workers"] == sum(len(p) for p in node.pool.warm_children().values()) >= 1
    assert pool["warm_tenants"] == len(node.pool.warm_children())


async def test_concurrent_tenants_get_their_own_results_from_their_own_workers(warm_node):
    node, nc = warm_node
    seen: dict[Tenant, set[int]] = {body("carol"): set(), body("dave"): set()}

    async def one(tenant: str, i: int) -> None:
        reply = await request_json(nc, subjects.EXECUTE, execute(tenant, f"{tenant}-{i}"))
        assert reply["success"] and reply["result"]["who"] == f"{tenant}-{i}"
        for t, pids in node.pool.warm_children().items():
            if t in seen:
                seen[t].update(pids)

    await asyncio.gather(*(one(("carol", "dave")[i % 2], i) for i in range(20)))
    carol, dave = seen[body("carol")], seen[body("dave")]
    assert carol and dave and carol.isdisjoint(dave)


async def test_a_request_without_user_id_runs_in_a_fresh_process(warm_node):
    node, nc = warm_node
    before = node.pool.warm_children()
    forked = node.pool.started
    reply = await request_json(nc, subjects.EXECUTE, execute(None))
    assert reply["success"]
    assert node.pool.warm_children() == before
    for _ in range(100):  # the zygote reports the replacement child shortly after
        if node.pool.started > forked:
            break
        await asyncio.sleep(0.05)
    assert node.pool.started > forked  # the one-shot child it used was replaced


async def test_warm_and_fresh_runs_give_the_same_reply(warm_node):
    _, nc = warm_node
    warm = await request_json(nc, subjects.EXECUTE, execute("erin", code=SMA))
    fresh = await request_json(nc, subjects.EXECUTE, execute(None, code=SMA))
    for key in ("success", "signals", "indicators", "performance", "result", "error"):
        assert warm[key] == fresh[key], key
    assert warm["signals"]


async def test_a_single_backtest_with_user_id_runs_warm(warm_node):
    node, nc = warm_node
    request = {"code": SMA, "bars": columnar_bars(120), "user_id": "frank"}
    first = await request_json(nc, subjects.BACKTEST, request)
    pids = node.pool.warm_children()[body("frank")]
    second = await request_json(nc, subjects.BACKTEST, request)
    assert first["success"] and first["performance"] == second["performance"]
    assert node.pool.warm_children()[body("frank")] == pids


async def test_a_timeout_in_a_warm_worker_is_reported_and_the_tenant_is_served_after(warm_node):
    node, nc = warm_node
    await request_json(nc, subjects.EXECUTE, execute("gina"))
    before = node.pool.warm_children()[body("gina")]
    spin = {**execute("gina", code="def strategy(data):\n    while True:\n        pass\n"), "timeout_ms": 300}
    reply = await request_json(nc, subjects.EXECUTE, spin)
    assert reply["error"]["code"] == "TIMEOUT"
    reply = await request_json(nc, subjects.EXECUTE, execute("gina", "after"))
    assert reply["success"] and reply["result"]["who"] == "after"
    assert node.pool.warm_children()[body("gina")] != before


async def test_health_reports_that_body_user_ids_are_trusted(warm_node):
    _, nc = warm_node
    assert (await health(nc))["trust_body_user_id"] is True


SPIN = "def strategy(data):\n    while True:\n        pass\n"


async def test_a_run_waiting_for_its_tenants_busy_worker_is_held_to_its_deadline(warm_node):
    # TENANT_WARM_WORKERS=1: "hana"'s one worker is busy for 3 s. Another of her requests with
    # timeout_ms=1000 must not wait for it past its deadline: it runs fresh with what is left.
    node, nc = warm_node
    await request_json(nc, subjects.EXECUTE, execute("hana"))
    busy = asyncio.ensure_future(request_json(nc, subjects.EXECUTE, {**execute("hana", code=SPIN),
                                                                     "timeout_ms": 3000}, timeout=10))
    for _ in range(200):  # until the spin holds hana's worker
        if node.pool.warm_children().get(body("hana")) and node.pool.busy_children():
            break
        await asyncio.sleep(0.01)
    start = time.monotonic()
    reply = await request_json(nc, subjects.EXECUTE, {**execute("hana", "late"), "timeout_ms": 1000})
    elapsed = time.monotonic() - start
    assert reply["success"] and reply["result"]["who"] == "late"
    assert elapsed < 1.0, elapsed
    assert (await busy)["error"]["code"] == "TIMEOUT"


async def test_a_run_with_a_deadline_shorter_than_the_wait_never_succeeds_late(warm_node):
    # A deadline shorter than the wait: TIMEOUT at its deadline, or a success inside it.
    node, nc = warm_node
    await request_json(nc, subjects.EXECUTE, execute("ivy"))
    busy = asyncio.ensure_future(request_json(nc, subjects.EXECUTE, {**execute("ivy", code=SPIN),
                                                                     "timeout_ms": 2000}, timeout=10))
    for _ in range(200):
        if node.pool.warm_children().get(body("ivy")) and node.pool.busy_children():
            break
        await asyncio.sleep(0.01)
    start = time.monotonic()
    reply = await request_json(nc, subjects.EXECUTE, {**execute("ivy", "short"), "timeout_ms": 60})
    elapsed = time.monotonic() - start
    if reply["success"]:  # only when the fresh run fitted in what was left of its 60 ms
        assert reply["execution_time_ms"] <= 60, reply["execution_time_ms"]
    else:
        assert reply["error"]["code"] == "TIMEOUT"
    assert elapsed < 1.0, elapsed
    await busy
