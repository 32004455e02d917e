"""A deployment's current `state` and its last log lines, read for its tenant by the node
(`strategy.v1.deployments.state` / `.logs`), and live bar chunks exported read-only to tenant
accounts: all through a real nats-server with the shipped accounts (deploy/nats/permissions.conf).
A tenant account has no JetStream access of its own; the node answers for the verified account
of the request only, so another tenant's deployment is "not found" on both subjects."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import msgspec
import nats.errors
import pytest
import pytest_asyncio

from backtest.store import BarStore
from contracts import ErrorCode
from contracts.hosting import RunLogs
from node import sizing
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting import logs as run_logs
from node.hosting.client import HostingClient, HostingError
from node.hosting.control import _fitted_logs, _fitted_states
from node.service import Node
from tests.deploy.support import PASSWORDS, PERMISSIONS_CONF, Connections, password_env

from .support import arrays, bar_range, one_bar, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

COUNTING = """
def strategy(data):
    n = state.get("runs", 0) + 1
    state["runs"] = n
    state["last_close"] = float(data["close"].iloc[-1])
    print("run", n, "of", len(data), "bars")
    print("second line of run", n)
    return "HOLD"
"""


@pytest.fixture(scope="module")
def accounts_server():
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def env(accounts_server):
    settings = Settings.from_env({"NODE_ID": "views-node", "MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10"})
    node = Node(settings, accounts_server.url, connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conns = Connections(accounts_server.url)
    a = await conns.connect("client")
    b = await conns.connect("client2")
    ingest = await conns.connect("ingest")
    yield node, a, b, ingest, conns
    await conns.close()
    await node.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ran(env):
    """TENANT_A's deployment `views` on SV1 and SV2 (1d), run three times on each symbol."""
    node, a, _b, ingest, _conns = env
    ha = HostingClient(a, tenant="TENANT_A")
    await ha.put_strategy("counting", COUNTING)
    await ha.create_deployment("views", strategy="counting", symbols=["SV1", "SV2"], timeframe="1d", lookback=5,
                               overlap="allow")  # runs of the two symbols may overlap: none is skipped
    store = BarStore(ingest.jetstream(), ingest)
    full = {"SV1": arrays(20, seed=31), "SV2": arrays(20, seed=32)}
    chunks = [(symbol, bar_range(bars, 0, 10)) for symbol, bars in full.items()]  # one run on the newest bar
    chunks += [(symbol, one_bar(bars, i)) for i in (10, 11) for symbol, bars in full.items()]
    for n, (symbol, chunk) in enumerate(chunks, 1):  # one at a time: the logs' order is known
        await store.load(symbol, "1d", chunk)
        await wait_for(lambda: _runs(ha, n), timeout=30)
    return ha, full


async def _runs(ha: HostingClient, n: int) -> bool:
    return len([r for r in (await ha.runs("views")).runs if r.status == "ok"]) >= n


async def test_a_tenant_reads_its_deployments_current_state_per_symbol(ran):
    ha, full = ran
    reply = await ha.state("views")
    assert reply.states == {symbol: {"runs": 3, "last_close": float(bars.column("close")[11])}
                            for symbol, bars in full.items()}
    assert reply.states_omitted == []


async def test_state_of_one_symbol_alone(ran):
    ha, full = ran
    reply = await ha.state("views", symbol="SV2")
    assert reply.states == {"SV2": {"runs": 3, "last_close": float(full["SV2"].column("close")[11])}}


async def test_a_symbol_the_deployment_does_not_run_on_is_refused_naming_it(ran):
    ha, _ = ran
    with pytest.raises(HostingError) as refused:
        await ha.state("views", symbol="NOPE")
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST
    assert "`$.symbol` 'NOPE'" in refused.value.error.message and "SV1" in refused.value.error.message


async def test_a_tenant_reads_its_last_log_lines_newest_last(ran):
    ha, _ = ran
    reply = await ha.logs("views")
    lines = [(r.symbol, line) for r in reply.logs for line in r.lines]
    assert len(lines) == 12 and not reply.logs_truncated  # 6 runs, 2 lines each
    assert [line for symbol, line in lines if symbol == "SV1"] == [
        "run 1 of 5 bars", "second line of run 1", "run 2 of 5 bars", "second line of run 2",
        "run 3 of 5 bars", "second line of run 3"]
    assert lines[-1] == ("SV2", "second line of run 3")


async def test_the_limit_bounds_the_lines_and_keeps_the_newest(ran):
    ha, _ = ran
    reply = await ha.logs("views", limit=3)
    lines = [(r.symbol, line) for r in reply.logs for line in r.lines]
    assert lines == [("SV1", "second line of run 3"), ("SV2", "run 3 of 5 bars"), ("SV2", "second line of run 3")]


async def test_logs_are_found_behind_many_of_other_deployments(env, ran):
    """The read starts shortly before the deployment's newest message and moves back: 300
    messages of another deployment between its runs do not hide its earlier lines."""
    node, *_ = env
    ha, _ = ran
    for i in range(300):
        await run_logs.publish(node.hosting.js, node.hosting.nc, "TENANT_A",
                               RunLogs(run_id=f"noise-{i}", deployment="noisy", symbol="SV1", bar_time="", lines=["x"]))
    await run_logs.publish(node.hosting.js, node.hosting.nc, "TENANT_A",
                           RunLogs(run_id="after-noise", deployment="views", symbol="SV1", bar_time="",
                                   lines=["after the noise"]))
    reply = await ha.logs("views", limit=1000)
    lines = [line for r in reply.logs for line in r.lines]
    assert len(lines) == 13 and lines[-1] == "after the noise" and lines.count("run 1 of 5 bars") == 2
    assert {r.deployment for r in reply.logs} == {"views"}


async def test_another_tenant_gets_not_found_for_state_and_logs(env, ran):
    _node, _a, b, _ingest, _conns = env
    hb = HostingClient(b, tenant="TENANT_B")
    for attempt in (hb.state("views"), hb.logs("views"), hb.state("views", symbol="SV1")):
        with pytest.raises(HostingError) as refused:
            await attempt
        assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in refused.value.error.message


async def test_another_tenants_deployment_of_the_same_id_has_its_own_empty_state_and_logs(env, ran):
    _node, _a, b, _ingest, _conns = env
    hb = HostingClient(b, tenant="TENANT_B")
    await hb.put_strategy("counting", COUNTING)
    await hb.create_deployment("views", strategy="counting", symbols=["SV1"], timeframe="1d", desired="paused")
    try:
        assert (await hb.state("views")).states == {}
        assert (await hb.logs("views")).logs == []
    finally:
        await hb.delete_deployment("views")


@pytest.mark.parametrize("op, body, named", [
    ("state", {"id": "views", "follow": True}, "follow"),
    ("logs", {"id": "views", "tail": 5}, "tail"),
    ("logs", {"id": "views", "symbol": "SV1"}, "$.symbol"),
    ("state", {"id": "views", "limit": 5}, "$.limit"),
    ("get", {"id": "views", "symbol": "SV1"}, "$.symbol"),
])
async def test_unknown_or_inapplicable_fields_are_refused_naming_them(env, ran, op, body, named):
    _node, a, _b, _ingest, _conns = env
    msg = await a.request(f"strategy.v1.deployments.{op}", msgspec.json.encode(body), timeout=10)
    reply = msgspec.json.decode(msg.data)
    assert reply["ok"] is False and reply["error"]["code"] == "INVALID_REQUEST"
    assert named in reply["error"]["message"]


async def test_a_missing_id_is_refused(env, ran):
    _node, a, _b, _ingest, _conns = env
    reply = msgspec.json.decode((await a.request("strategy.v1.deployments.logs", b"{}", timeout=10)).data)
    assert reply["error"]["code"] == "INVALID_REQUEST" and "`$.id` is required" in reply["error"]["message"]


async def test_a_logs_reply_is_cut_to_max_payload_oldest_lines_first():
    runs = [RunLogs(run_id=f"r{i}", deployment="d", symbol="S", bar_time="", lines=[f"{i}:" + "y" * 200] * 50)
            for i in range(10)]
    reply = _fitted_logs(runs, 20_000)
    assert len(msgspec.json.encode(reply)) <= sizing.body_limit(20_000) and reply.logs_truncated
    assert reply.logs[-1].run_id == "r9" and len(reply.logs[-1].lines) == 50  # the newest kept whole


async def test_states_that_do_not_fit_one_reply_are_named_not_dropped():
    states = {f"S{i}": {"blob": "z" * 30_000} for i in range(5)}
    reply = _fitted_states(states, 100_000)
    assert len(msgspec.json.encode(reply)) <= sizing.body_limit(100_000)
    assert list(reply.states) + reply.states_omitted == list(states) and reply.states_omitted


async def test_a_tenant_follows_new_bar_chunks_live(env):
    _node, a, b, ingest, _conns = env
    sub_a = await a.subscribe("bars.1d.LIVEB")
    sub_b = await b.subscribe("bars.1d.LIVEB")
    await a.flush()
    await b.flush()
    await BarStore(ingest.jetstream(), ingest).load("LIVEB", "1d", arrays(5, seed=41))
    for sub in (sub_a, sub_b):
        msg = await sub.next_msg(timeout=10)
        assert msg.subject == "bars.1d.LIVEB" and msg.data


async def test_a_tenant_cannot_publish_a_bar(env, ran):
    """The export is a stream: it only delivers. A tenant's publish on a bar subject is refused
    by its permissions, never reaches BARS, nor another tenant that follows that subject."""
    node, a, b, _ingest, conns = env
    js = node.hosting.js
    before = (await js.stream_info("BARS")).state.messages
    watch = await b.subscribe("bars.1d.FORGED")
    await b.flush()
    await a.publish("bars.1d.FORGED", b"\x80forged chunk")
    await conns.wait_for_error(a, "permissions violation for publish")
    await asyncio.sleep(0.5)
    assert (await js.stream_info("BARS")).state.messages == before
    with pytest.raises(nats.errors.TimeoutError):
        await watch.next_msg(timeout=0.3)


async def test_the_cli_prints_a_tenants_state_and_last_log_lines(accounts_server, ran):
    env = {**os.environ, "NATS_USER": "client", "NATS_PASSWORD": PASSWORDS["client"],
           "NATS_INBOX_PREFIX": "_INBOX_client"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "node", "deployments", *args, "--url", accounts_server.url],
                              cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)

    state = await asyncio.to_thread(cli, "state", "views", "--symbol", "SV1")
    assert state.returncode == 0, state.stderr
    assert state.stdout.startswith('SV1: {"runs":3,"last_close":') and "SV2" not in state.stdout
    logs = await asyncio.to_thread(cli, "logs", "views", "-n", "2")
    assert logs.returncode == 0, logs.stderr
    assert [line.split(" | ")[1] for line in logs.stdout.splitlines()] == ["second line of run 3", "after the noise"]
