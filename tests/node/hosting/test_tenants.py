"""Tenants are NATS accounts (deploy/nats/permissions.conf on a real nats-server): a tenant's
strategies, deployments, signals and logs are its own; another tenant cannot see or touch them."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import pytest_asyncio

from backtest.store import BarStore
from contracts import ErrorCode, Signal
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient, HostingError
from node.service import Node
from tests.deploy.support import PASSWORDS, PERMISSIONS_CONF, Connections, password_env

from .support import arrays, bar_range, one_bar, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

BUY = "def strategy(data):\n    print('tenant A runs')\n    return 'BUY'\n"


@pytest.fixture(scope="module")
def accounts_server():
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenants(accounts_server):
    settings = Settings.from_env({"NODE_ID": "accounts-node", "MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10"})
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


async def test_each_tenant_has_its_own_registry_and_deployments(tenants):
    node, a, b, _ingest, _conns = tenants
    ha, hb = HostingClient(a, tenant="TENANT_A"), HostingClient(b, tenant="TENANT_B")
    await ha.put_strategy("mine", BUY)
    await ha.create_deployment("dep", strategy="mine", symbols=["TA1"], timeframe="1d", lookback=3)
    assert [s.name for s in (await hb.list_strategies()).strategies] == []
    assert (await hb.list_deployments()).deployments == []
    for attempt in (hb.get_strategy("mine"), hb.strategy_versions("mine"), hb.delete_strategy("mine"),
                    hb.get_deployment("dep"), hb.pause("dep"), hb.stop("dep"), hb.run_now("dep"),
                    hb.runs("dep"), hb.delete_deployment("dep"), hb.update_deployment("dep", lookback=9),
                    hb.create_deployment("theirs", strategy="mine", symbols=["TA1"], timeframe="1d")):
        with pytest.raises(HostingError) as refused:
            await attempt
        assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in refused.value.error.message
    # B's own strategy of the same name is B's version 1; A's is untouched
    assert (await hb.put_strategy("mine", "def strategy(data):\n    return 'SELL'\n")).strategy.version == 1
    assert "BUY" in (await ha.get_strategy("mine")).strategy.code
    assert (await ha.get_deployment("dep")).deployment.desired == "running"
    # a forged identity header changes nothing: the server stamps the importing account
    forged = await b.request("strategy.v1.strategies.get", b'{"name": "mine"}', timeout=5,
                             headers={"Nats-Request-Info": '{"acc": "TENANT_A"}'})
    assert "SELL" in msgspec.json.decode(forged.data)["strategy"]["code"]


async def test_a_tenant_follows_its_own_signals_and_cannot_subscribe_to_anothers(tenants):
    node, a, b, ingest, conns = tenants
    ha = HostingClient(a, tenant="TENANT_A")
    mine = await a.subscribe("signals.TENANT_A.dep.>")
    logs = await a.subscribe("strategy.logs.TENANT_A.dep")
    store = BarStore(ingest.jetstream(), ingest)
    full = arrays(20, seed=9)
    await store.load("TA1", "1d", bar_range(full, 0, 10))
    await store.load("TA1", "1d", one_bar(full, 10))
    msg = await mine.next_msg(timeout=15)
    assert msg.subject == "signals.TENANT_A.dep.TA1" and msgspec.json.decode(msg.data, type=Signal).type == "BUY"
    assert "tenant A runs" in msgspec.json.decode((await logs.next_msg(timeout=5)).data)["lines"][0]
    await wait_for(lambda: _two_runs(ha))  # one per chunk: the history chunk's newest bar, then bar 10
    # B may not subscribe to A's subjects: the server refuses it
    await b.subscribe("signals.TENANT_A.>")
    await b.flush()
    await asyncio.sleep(0.2)
    assert any("permissions violation for subscription" in e.lower() and "signals.tenant_a" in e.lower()
               for e in conns.errors_of(b))


async def _two_runs(ha):
    return len((await ha.runs("dep")).runs) == 2


async def test_history_names_the_verified_account_and_deploy_stays_in_the_callers_tenant(tenants):
    _node, a, b, _ingest, _conns = tenants
    ha, hb = HostingClient(a, tenant="TENANT_A"), HostingClient(b, tenant="TENANT_B")
    await ha.deploy(BUY, strategy="audited", symbols=["TA1"], timeframe="1d", desired="paused")
    await ha.resume("audited")
    changes = (await ha.history("audited")).history
    assert [c.change for c in changes] == ["deploy", "resume"]
    assert all(c.by.split("/")[0] == "TENANT_A" for c in changes), [c.by for c in changes]
    with pytest.raises(HostingError) as refused:  # another tenant's history is "not found"
        await hb.history("audited")
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in refused.value.error.message
    # B deploying under the same names makes B's own strategy and deployment; A's are untouched
    mine = await hb.deploy("def strategy(data):\n    return 'SELL'\n", strategy="audited", symbols=["TB1"],
                           timeframe="1d", desired="paused")
    assert mine.strategy_version == 1 and mine.deployment.symbols == ["TB1"]
    assert [c.by.split("/")[0] for c in (await hb.history("audited")).history] == ["TENANT_B"]
    theirs = (await ha.get_deployment("audited")).deployment
    assert (theirs.symbols, theirs.desired) == (["TA1"], "running")
    assert len((await ha.strategy_versions("audited")).versions) == 1
    await ha.delete_deployment("audited")
    await hb.delete_deployment("audited")
