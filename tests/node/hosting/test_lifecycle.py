"""The registry and a deployment's lifecycle through NATS, as a client drives them."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from backtest.store import BarStore
from contracts import ErrorCode
from contracts.hosting import DeploymentStatus
from node.hosting.client import HostingClient, HostingError

from .support import arrays, bar_range, one_bar, stream_msgs, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ALWAYS_BUY = "def strategy(data):\n    state['seen'] = state.get('seen', 0) + 1\n    print('seen', state['seen'])\n    return 'BUY'\n"


async def _series(nc, symbol: str, n: int = 40, seed: int = 1):
    store = BarStore(nc.jetstream(), nc)
    full = arrays(n, seed=seed)
    await store.load(symbol, "1d", bar_range(full, 0, 10))
    return store, full


async def _runs(hosting, dep):
    return (await hosting.runs(dep, limit=1000)).runs


async def test_a_refused_source_is_not_stored(nc, nodes):
    hosting = HostingClient(nc)
    with pytest.raises(HostingError) as refused:
        await hosting.put_strategy("evil", "import os\ndef strategy(data):\n    return os.getcwd()\n")
    assert refused.value.error.code in (ErrorCode.SECURITY_VIOLATION, ErrorCode.COMPILE_ERROR)
    with pytest.raises(HostingError) as missing:
        await hosting.get_strategy("evil")
    assert missing.value.error.code == ErrorCode.INVALID_REQUEST


async def test_every_put_is_a_new_version_and_old_versions_stay_readable(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("ver", "def strategy(data):\n    return 'BUY'\n")
    await hosting.put_strategy("ver", "def strategy(data):\n    return 'SELL'\n")
    versions = (await hosting.strategy_versions("ver")).versions
    assert [v.version for v in versions] == [1, 2]
    assert "BUY" in (await hosting.get_strategy("ver", 1)).strategy.code
    assert (await hosting.get_strategy("ver")).strategy.version == 2
    names = {s.name: s for s in (await hosting.list_strategies()).strategies}
    assert names["ver"].latest == 2 and names["ver"].versions == 2


async def test_a_deployment_over_the_node_limit_is_refused_naming_the_field(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("lim", "def strategy(data):\n    return 'BUY'\n")
    with pytest.raises(HostingError) as refused:
        await hosting.create_deployment("lim-d", strategy="lim", symbols=["L1"], timeframe="1d", timeout_ms=60_000)
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "timeout_ms" in refused.value.error.message
    raw = await nc.request("strategy.v1.deployments.create", b'{"id": "x y", "strategy": "lim", "symbols": ["L1"], "timeframe": "1d"}', timeout=5)
    reply = msgspec.json.decode(raw.data)
    assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST" and "$.id" in reply["error"]["message"]


async def test_state_persists_between_runs_and_logs_carry_it(nc, nodes):
    hosting = HostingClient(nc)
    store, full = await _series(nc, "ST1")
    await hosting.put_strategy("stateful", ALWAYS_BUY)
    await hosting.create_deployment("st", strategy="stateful", symbols=["ST1"], timeframe="1d", lookback=5)
    for i in range(10, 15):
        await store.load("ST1", "1d", one_bar(full, i))
        await wait_for(lambda n=i - 9: _count(hosting, "st", n))
    runs = await _runs(hosting, "st")
    assert [r.status for r in runs] == ["ok"] * 5
    logs = await stream_msgs(nc.jetstream(), "STRATEGY_LOGS", "strategy.logs.local.st")
    lines = [line.strip() for m in logs for line in msgspec.json.decode(m.data)["lines"]]
    assert sorted(lines) == [f"seen {n}" for n in range(1, 6)]


async def _count(hosting, dep, n):
    return len(await _runs(hosting, dep)) >= n


async def test_pause_stops_triggers_within_one_bar_and_resume_restarts_them(nc, nodes):
    hosting = HostingClient(nc)
    store, full = await _series(nc, "PS1", seed=2)
    await hosting.put_strategy("pausing", "def strategy(data):\n    return 'BUY'\n")
    await hosting.create_deployment("ps", strategy="pausing", symbols=["PS1"], timeframe="1d", lookback=3)
    await store.load("PS1", "1d", one_bar(full, 10))
    await wait_for(lambda: _count(hosting, "ps", 1))
    paused = await hosting.pause("ps")
    assert paused.deployment.desired == "paused" and paused.status.state == "paused"
    for i in (11, 12):  # bars while paused: no run
        await store.load("PS1", "1d", one_bar(full, i))
    await asyncio.sleep(1.0)
    assert len(await _runs(hosting, "ps")) == 1
    resumed = await hosting.resume("ps")
    assert resumed.deployment.desired == "running"
    await store.load("PS1", "1d", one_bar(full, 13))
    await wait_for(lambda: _count(hosting, "ps", 2))
    runs = await _runs(hosting, "ps")
    assert [r.bar_time[:10] for r in runs] == [_day(full, 10), _day(full, 13)]


def _day(full, i):
    import numpy as np
    return str(np.datetime64(int(full.column("timestamp")[i]), "ns").astype("datetime64[D]"))


async def test_run_now_runs_once_on_the_newest_bar(nc, nodes):
    hosting = HostingClient(nc)
    await _series(nc, "RN1", seed=5)
    await hosting.put_strategy("manual", "def strategy(data):\n    return 'SELL'\n")
    await hosting.create_deployment("rn", strategy="manual", symbols=["RN1"], timeframe="1d", lookback=3)
    reply = await hosting.run_now("rn")
    assert reply.run_id.startswith("manual-")
    await wait_for(lambda: _count(hosting, "rn", 1))
    (run,) = await _runs(hosting, "rn")
    assert run.manual and run.signal.type == "SELL" and run.run_id == reply.run_id


async def test_status_changes_are_watchable(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("watched", "def strategy(data):\n    return 'BUY'\n")
    kv = await nc.jetstream().key_value("DEPLOYMENT_STATUS")
    watcher = await kv.watch("local.wd")
    await hosting.create_deployment("wd", strategy="watched", symbols=["W1"], timeframe="1d")
    await hosting.pause("wd")
    states = []
    while len(states) < 2:
        entry = await watcher.updates(timeout=5)
        if entry is not None and entry.value:
            states.append(msgspec.json.decode(entry.value, type=DeploymentStatus).state)
    await watcher.stop()
    assert states == ["pending", "paused"]


async def test_delete_removes_the_deployment_its_status_state_and_queued_triggers(nc, nodes):
    hosting = HostingClient(nc)
    store, full = await _series(nc, "DL1", seed=6)
    await hosting.put_strategy("deleting", ALWAYS_BUY)
    await hosting.create_deployment("dl", strategy="deleting", symbols=["DL1"], timeframe="1d", lookback=3)
    await store.load("DL1", "1d", one_bar(full, 10))
    await wait_for(lambda: _count(hosting, "dl", 1))
    await hosting.delete_deployment("dl")
    with pytest.raises(HostingError):
        await hosting.get_deployment("dl")
    js = nc.jetstream()
    for bucket, key in (("DEPLOYMENTS", "local.dl"), ("DEPLOYMENT_STATUS", "local.dl"), ("DEPLOYMENT_STATE", "local.dl.DL1")):
        kv = await js.key_value(bucket)
        with pytest.raises(Exception):
            await kv.get(key)
    await store.load("DL1", "1d", one_bar(full, 11))  # no deployment, no trigger
    await asyncio.sleep(0.5)
    info = await js.stream_info("STRATEGY_TRIGGERS", subjects_filter="strategy.triggers.local.dl")
    assert info.state.messages == 0
    ids = {d.deployment.id for d in (await hosting.list_deployments()).deployments}
    assert "dl" not in ids
    # a strategy still deployed cannot be deleted; one no longer deployed can
    await hosting.delete_strategy("deleting")
    with pytest.raises(HostingError):
        await hosting.get_strategy("deleting")


async def test_a_strategy_in_use_cannot_be_deleted(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("inuse", "def strategy(data):\n    return 'BUY'\n")
    await hosting.create_deployment("iu", strategy="inuse", symbols=["IU1"], timeframe="1d")
    with pytest.raises(HostingError) as refused:
        await hosting.delete_strategy("inuse")
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "iu" in refused.value.error.message


@pytest.mark.parametrize("subject, body, field", [
    ("strategy.v1.strategies.list", {"name": "x"}, "name"),
    ("strategy.v1.strategies.versions", {"name": "ver", "version": 1}, "version"),
    ("strategy.v1.strategies.delete", {"name": "ver", "version": 1}, "version"),
    ("strategy.v1.deployments.list", {"id": "x"}, "id"),
    ("strategy.v1.deployments.pause", {"id": "x", "limit": 5}, "limit"),
])
async def test_an_option_that_does_not_apply_is_refused_naming_it(nc, nodes, subject, body, field):
    reply = msgspec.json.decode((await nc.request(subject, msgspec.json.encode(body), timeout=5)).data)
    assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST"
    assert f"`$.{field}` does not apply" in reply["error"]["message"]


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'{"name": 5}', b'{"name": "a.b"}', b"\xff\xfe"])
async def test_bad_control_input_is_invalid_request_never_internal(nc, nodes, raw):
    for subject in ("strategy.v1.strategies.put", "strategy.v1.strategies.get",
                    "strategy.v1.deployments.create", "strategy.v1.deployments.get"):
        reply = msgspec.json.decode((await nc.request(subject, raw, timeout=5)).data)
        assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST", (subject, raw, reply)


CODE = "def strategy(data):\n    return 'BUY'\n"
DEPLOY = {"id": "d", "strategy": "s", "symbols": ["X"], "timeframe": "1d"}


@pytest.mark.parametrize("subject, body", [
    ("strategy.v1.strategies.put", {"name": "s", "code": CODE}),
    ("strategy.v1.strategies.get", {"name": "s"}),
    ("strategy.v1.strategies.list", {}),
    ("strategy.v1.strategies.versions", {"name": "s"}),
    ("strategy.v1.strategies.delete", {"name": "s"}),
    ("strategy.v1.deployments.create", DEPLOY),
    ("strategy.v1.deployments.update", {"id": "d"}),
    ("strategy.v1.deployments.get", {"id": "d"}),
    ("strategy.v1.deployments.list", {}),
    ("strategy.v1.deployments.pause", {"id": "d"}),
    ("strategy.v1.deployments.run", {"id": "d"}),
    ("strategy.v1.deployments.runs", {"id": "d"}),
    ("strategy.v1.deployments.delete", {"id": "d"}),
])
async def test_an_unknown_field_is_refused_naming_it_never_ignored(nc, nodes, subject, body):
    sent = {**body, "shedule": "@every 1m"}  # a misspelt option
    reply = msgspec.json.decode((await nc.request(subject, msgspec.json.encode(sent), timeout=5)).data)
    assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST", reply
    assert "shedule" in reply["error"]["message"]


async def test_a_deployment_too_large_for_the_server_is_refused_before_it_is_stored(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("big", "def strategy(data):\n    return 'BUY'\n")
    # parameters that fit in a request but leave the stored record no room for KV's headers
    big = {f"p{i:03d}": "x" * 4090 for i in range(255)}
    size = len(msgspec.json.encode(big))
    assert 1024 * 1024 - 4096 < size < 1024 * 1024 - 600
    with pytest.raises(HostingError) as refused:
        await hosting.create_deployment("big-d", strategy="big", symbols=["B1"], timeframe="1d", parameters=big)
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "send smaller parameters" in refused.value.error.message
    with pytest.raises(HostingError):
        await hosting.get_deployment("big-d")
    assert (await hosting.list_strategies()).ok  # the node kept its connection


async def test_warm_is_refused_naming_it_on_nodes_without_warm_workers(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("warmish", "def strategy(data):\n    return 'BUY'\n")
    with pytest.raises(HostingError) as refused:
        await hosting.create_deployment("warm-d", strategy="warmish", symbols=["W2"], timeframe="1d", warm=True)
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "`$.warm`" in refused.value.error.message
