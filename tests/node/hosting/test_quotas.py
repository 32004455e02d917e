"""Per-tenant quotas of hosted objects (node/hosting/quotas.py), through NATS against real nodes
started with MAX_STRATEGIES_PER_TENANT = MAX_VERSIONS_PER_STRATEGY = MAX_DEPLOYMENTS_PER_TENANT =
MAX_SECRETS_PER_TENANT = 2: the next creating operation is refused with INVALID_REQUEST naming the
setting and the count; updates and deletes never are; one tenant's limit is its own."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys

import msgspec
import nats
import pytest
import pytest_asyncio

from contracts import ErrorCode, subjects
from contracts.quotas import QuotaReply
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient, HostingError
from node.service import Node
from tests.deploy.support import PASSWORDS, PERMISSIONS_CONF, Connections, password_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CODE = "def strategy(data):\n    return 'BUY'\n"
QUOTAS = {"MAX_STRATEGIES_PER_TENANT": "2", "MAX_VERSIONS_PER_STRATEGY": "2", "MAX_DEPLOYMENTS_PER_TENANT": "2",
          "MAX_SECRETS_PER_TENANT": "2"}


# Two nodes with the quotas (conftest's `nodes`): any node may serve any request, counts come
# from KV, not memory.
NODE_NAMES = ("quota-a", "quota-b")
NODE_ENV = {"MAX_WORKERS": "1", "SANDBOX_READY": "1", "SECRETS_KEY": f"k1:{base64.b64encode(b'q' * 32).decode()}",
            **QUOTAS}


def settings(node_id: str) -> Settings:
    return Settings.from_env({"NODE_ID": node_id, "MAX_TIMEOUT_SECONDS": "10", **NODE_ENV})


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hosting(server, nodes):
    nc = await nats.connect(server.url)
    yield HostingClient(nc)
    await nc.drain()


async def clear(hosting: HostingClient) -> None:
    """Deletes every deployment, strategy and secret of the client's tenant."""
    for view in (await hosting.list_deployments()).deployments:
        await hosting.delete_deployment(view.deployment.id)
    for summary in (await hosting.list_strategies()).strategies:
        await hosting.delete_strategy(summary.name)
    for secret in (await hosting.list_secrets()).secrets:
        await hosting.delete_secret(secret.name)


@pytest_asyncio.fixture(loop_scope="module")
async def h(hosting):
    """The client of tenant `local`; everything the test made is deleted after it."""
    yield hosting
    await clear(hosting)


def used(reply) -> dict[str, tuple[int, int]]:
    """A QuotaReply as {name: (used, limit)}."""
    return {q.name: (q.used, q.limit) for q in reply.quotas}


async def refusal(call) -> str:
    with pytest.raises(HostingError) as refused:
        await call
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST, refused.value.error
    return refused.value.error.message


async def versions(h: HostingClient, name: str) -> list[int]:
    return [v.version for v in (await h.strategy_versions(name)).versions]


# -- settings ----------------------------------------------------------------------------------
async def test_the_quota_settings_have_defaults_and_refuse_zero():
    s = Settings.from_env({})
    assert (s.max_strategies_per_tenant, s.max_versions_per_strategy, s.max_deployments_per_tenant,
            s.max_secrets_per_tenant) == (200, 100, 100, 100)
    for name in QUOTAS:
        with pytest.raises(ValueError, match=name):
            Settings.from_env({name: "0"})


# -- strategies --------------------------------------------------------------------------------
async def test_a_strategy_name_beyond_the_limit_is_refused_naming_the_setting_and_count(h):
    await h.put_strategy("alpha", CODE)
    await h.put_strategy("beta", CODE)
    message = await refusal(h.put_strategy("gamma", CODE))
    assert message == "tenant local has 2 strategies, the most MAX_STRATEGIES_PER_TENANT allows: delete one first"
    assert [s.name for s in (await h.list_strategies()).strategies] == ["alpha", "beta"]


async def test_a_deploy_of_a_new_strategy_beyond_the_limit_stores_nothing(h):
    await h.put_strategy("alpha", CODE)
    await h.put_strategy("beta", CODE)
    message = await refusal(h.deploy(CODE, strategy="gamma", symbols=["Q1"], timeframe="1d"))
    assert "MAX_STRATEGIES_PER_TENANT" in message and "has 2 strategies" in message
    assert [s.name for s in (await h.list_strategies()).strategies] == ["alpha", "beta"]
    assert (await h.list_deployments()).deployments == []


async def test_a_new_version_of_an_existing_strategy_at_the_strategies_limit_is_stored(h):
    await h.put_strategy("grows", CODE)
    await h.put_strategy("other", CODE)
    assert (await h.put_strategy("grows", CODE + "# v2\n")).strategy.version == 2


async def test_deleting_a_strategy_frees_a_slot(h):
    await h.put_strategy("first", CODE)
    await h.put_strategy("second", CODE)
    await h.delete_strategy("first")
    assert (await h.put_strategy("third", CODE)).strategy.version == 1
    assert [s.name for s in (await h.list_strategies()).strategies] == ["second", "third"]


# -- versions ----------------------------------------------------------------------------------
async def test_a_version_beyond_the_limit_drops_the_oldest_unused_one(h):
    replies = [await h.put_strategy("dropped", CODE + f"# {i}\n") for i in range(3)]
    assert [r.dropped_versions for r in replies] == [[], [], [1]]  # the put that dropped it says so
    assert await versions(h, "dropped") == [2, 3]
    assert await refusal(h.get_strategy("dropped", 1)) == "strategy 'dropped' version 1 not found"
    assert (await h.put_strategy("dropped", CODE)).strategy.version == 4  # a dropped number is never taken again
    assert await versions(h, "dropped") == [3, 4]


async def test_a_version_a_deployment_runs_is_never_dropped(h):
    await h.put_strategy("pinned", CODE)
    await h.create_deployment("d1", strategy="pinned", symbols=["Q1"], timeframe="1d", version=1)
    await h.put_strategy("pinned", CODE + "# 2\n")
    await h.put_strategy("pinned", CODE + "# 3\n")
    await h.put_strategy("pinned", CODE + "# 4\n")
    assert await versions(h, "pinned") == [1, 4]
    assert (await h.get_strategy("pinned", 1)).strategy.code == CODE


async def test_a_new_version_is_refused_when_deployments_run_every_stored_version(h):
    await h.put_strategy("all_pinned", CODE)
    await h.put_strategy("all_pinned", CODE + "# 2\n")
    await h.create_deployment("d1", strategy="all_pinned", symbols=["Q1"], timeframe="1d", version=1)
    await h.create_deployment("d2", strategy="all_pinned", symbols=["Q1"], timeframe="1d", version=2)
    message = await refusal(h.put_strategy("all_pinned", CODE + "# 3\n"))
    assert "MAX_VERSIONS_PER_STRATEGY" in message and "has 2 versions" in message and "tenant local" in message
    assert await versions(h, "all_pinned") == [1, 2]
    await refusal(h.deploy(CODE + "# 3\n", strategy="all_pinned", id="d2"))
    assert (await h.get_deployment("d2")).deployment.version == 2


async def test_a_version_a_deployment_took_while_it_was_being_dropped_is_written_back(h, nodes):
    await h.put_strategy("raced", CODE)
    await h.put_strategy("raced", CODE + "# 2\n")
    await h.create_deployment("d1", strategy="raced", symbols=["Q1"], timeframe="1d", version=1)
    # the drop a put decided on before the deployment took version 1
    dropped = await nodes[0].hosting.control.quotas.drop_versions("local", "raced", [1, 2])
    assert dropped == [2]
    assert (await h.get_strategy("raced", 1)).strategy.code == CODE
    assert await versions(h, "raced") == [1]


async def test_a_version_dropped_between_a_creates_check_and_its_write_is_stored_again(h, nodes, monkeypatch):
    await h.put_strategy("raced-create", CODE)
    await h.put_strategy("raced-create", CODE + "# 2\n")
    control = nodes[0].hosting.control
    check = control._check_create

    async def check_then_a_whole_drop_lands(tenant, req, version):
        dep = await check(tenant, req, version)
        # a put's drop, purge and second read of the deployments both before this create's write
        assert await control.quotas.drop_versions(tenant, "raced-create", [1]) == [1]
        return dep
    monkeypatch.setattr(control, "_check_create", check_then_a_whole_drop_lands)
    body = msgspec.json.encode({"id": "d-raced", "strategy": "raced-create", "version": 1, "symbols": ["Q1"],
                                "timeframe": "1d"})
    reply = await control.deployment("create", "local", body, subjects.JSON)
    assert reply.ok and reply.deployment.version == 1
    assert (await h.get_strategy("raced-create", 1)).strategy.code == CODE  # not left on a missing version
    assert await versions(h, "raced-create") == [1, 2]


async def test_a_version_dropped_between_a_moves_check_and_its_write_is_stored_again(h, nodes, monkeypatch):
    await h.put_strategy("raced-move", CODE)
    await h.put_strategy("raced-move", CODE + "# 2\n")
    await h.create_deployment("d-move", strategy="raced-move", symbols=["Q1"], timeframe="1d")  # on version 2
    control = nodes[0].hosting.control
    check = control._check_update

    async def check_then_a_whole_drop_lands(tenant, req):
        checked = await check(tenant, req)
        assert await control.quotas.drop_versions(tenant, "raced-move", [1]) == [1]
        return checked
    monkeypatch.setattr(control, "_check_update", check_then_a_whole_drop_lands)
    reply = await control.deployment("update", "local", msgspec.json.encode({"id": "d-move", "version": 1}),
                                     subjects.JSON)
    assert reply.ok and reply.deployment.version == 1
    assert (await h.get_strategy("raced-move", 1)).strategy.code == CODE
    assert await versions(h, "raced-move") == [1, 2]


async def test_deploy_moving_a_deployment_on_keeps_working_at_the_versions_limit(h):
    for i in range(4):
        reply = await h.deploy(CODE + f"# {i}\n", strategy="redeployed", symbols=["Q1"], timeframe="1d")
        assert reply.strategy_version == i + 1 and reply.deployment.version == i + 1
    assert await versions(h, "redeployed") == [3, 4]


# -- deployments -------------------------------------------------------------------------------
async def test_a_deployment_beyond_the_limit_is_refused_naming_the_setting_and_count(h):
    await h.put_strategy("deployed", CODE)
    await h.create_deployment("d1", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="deployed", symbols=["Q1"], timeframe="1d")
    message = await refusal(h.create_deployment("d3", strategy="deployed", symbols=["Q1"], timeframe="1d"))
    assert message == "tenant local has 2 deployments, the most MAX_DEPLOYMENTS_PER_TENANT allows: remove one first"
    assert [v.deployment.id for v in (await h.list_deployments()).deployments] == ["d1", "d2"]


async def test_a_deploy_that_would_create_a_deployment_beyond_the_limit_stores_no_version(h):
    await h.put_strategy("refused_deploy", CODE)
    await h.create_deployment("d1", strategy="refused_deploy", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="refused_deploy", symbols=["Q1"], timeframe="1d")
    message = await refusal(h.deploy(CODE + "# 2\n", strategy="refused_deploy", id="d3", symbols=["Q1"], timeframe="1d"))
    assert "MAX_DEPLOYMENTS_PER_TENANT" in message and "has 2 deployments" in message
    assert await versions(h, "refused_deploy") == [1]


async def test_updates_of_a_deployment_at_the_limit_still_work(h):
    await h.put_strategy("moved", CODE)
    await h.create_deployment("d1", strategy="moved", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="moved", symbols=["Q1"], timeframe="1d")
    assert (await h.update_deployment("d1", lookback=7)).deployment.lookback == 7
    assert (await h.pause("d2")).deployment.desired == "paused"
    assert (await h.deploy(CODE + "# 2\n", strategy="moved", id="d1")).deployment.version == 2


async def test_creating_an_existing_deployment_id_at_the_limit_says_it_exists(h):
    await h.put_strategy("deployed", CODE)
    await h.create_deployment("d1", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="deployed", symbols=["Q1"], timeframe="1d")
    assert "exists" in await refusal(h.create_deployment("d1", strategy="deployed", symbols=["Q1"], timeframe="1d"))


async def test_deleting_a_deployment_frees_a_slot(h):
    await h.put_strategy("deployed", CODE)
    await h.create_deployment("d1", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.delete_deployment("d1")
    assert (await h.create_deployment("d3", strategy="deployed", symbols=["Q1"], timeframe="1d")).deployment.id == "d3"


# -- secrets -----------------------------------------------------------------------------------
async def test_a_secret_beyond_the_limit_is_refused_naming_the_setting_and_count(h):
    await h.set_secret("K1", "value-one")
    await h.set_secret("K2", "value-two")
    message = await refusal(h.set_secret("K3", "value-three"))
    assert message == "tenant local has 2 secrets, the most MAX_SECRETS_PER_TENANT allows: remove one first"
    assert [s.name for s in (await h.list_secrets()).secrets] == ["K1", "K2"]


async def test_replacing_a_secret_at_the_limit_still_works(h):
    await h.set_secret("K1", "value-one")
    await h.set_secret("K2", "value-two")
    assert (await h.set_secret("K1", "value-one-new")).secret.name == "K1"


async def test_deleting_a_secret_frees_a_slot(h):
    await h.set_secret("K1", "value-one")
    await h.set_secret("K2", "value-two")
    await h.delete_secret("K1")
    await h.set_secret("K3", "value-three")
    assert [s.name for s in (await h.list_secrets()).secrets] == ["K2", "K3"]


# -- what a tenant has (strategy.v1.quotas) ----------------------------------------------------
async def test_the_quotas_of_a_tenant_with_nothing_are_all_unused(h):
    reply = await h.quotas()
    assert reply.ok and reply.tenant == "local"
    assert used(reply) == {"strategies": (0, 2), "versions_per_strategy": (0, 2), "deployments": (0, 2),
                           "secrets": (0, 2)}
    assert reply.quotas[1].strategy is None


async def test_the_quotas_name_each_setting_and_what_a_create_at_the_limit_meets(h):
    quotas = {q.name: (q.setting, q.at_limit) for q in (await h.quotas()).quotas}
    assert quotas == {"strategies": ("MAX_STRATEGIES_PER_TENANT", "refused"),
                      "versions_per_strategy": ("MAX_VERSIONS_PER_STRATEGY", "oldest_unused_dropped"),
                      "deployments": ("MAX_DEPLOYMENTS_PER_TENANT", "refused"),
                      "secrets": ("MAX_SECRETS_PER_TENANT", "refused")}


async def test_the_quotas_count_what_the_tenant_has_now(h):
    await h.put_strategy("few", CODE)
    await h.put_strategy("most", CODE)
    await h.put_strategy("most", CODE + "# v2\n")
    await h.create_deployment("d1", strategy="few", symbols=["Q1"], timeframe="1d")
    await h.set_secret("K1", "value-one")
    reply = await h.quotas()
    assert used(reply) == {"strategies": (2, 2), "versions_per_strategy": (2, 2), "deployments": (1, 2),
                           "secrets": (1, 2)}
    assert reply.quotas[1].strategy == "most"


async def test_what_was_deleted_is_not_counted(h):
    await h.put_strategy("gone", CODE)
    await h.put_strategy("kept", CODE)
    await h.create_deployment("d1", strategy="kept", symbols=["Q1"], timeframe="1d")
    await h.set_secret("K1", "value-one")
    await h.delete_strategy("gone")
    await h.delete_deployment("d1")
    await h.delete_secret("K1")
    assert used(await h.quotas()) == {"strategies": (1, 2), "versions_per_strategy": (1, 2),
                                      "deployments": (0, 2), "secrets": (0, 2)}


async def test_the_quotas_reached_are_the_ones_the_next_create_is_refused_by(h):
    for name in ("a", "b"):
        await h.put_strategy(name, CODE)
        await h.set_secret(f"K_{name}", "v")
    full = {q.name for q in (await h.quotas()).quotas if q.used >= q.limit}
    assert full == {"strategies", "secrets"}
    assert "MAX_STRATEGIES_PER_TENANT" in await refusal(h.put_strategy("c", CODE))
    assert "MAX_SECRETS_PER_TENANT" in await refusal(h.set_secret("K_c", "v"))
    assert (await h.create_deployment("d1", strategy="a", symbols=["Q1"], timeframe="1d")).ok


@pytest.mark.parametrize("body, named", [
    (b'{"tenant": "someone-else"}', "tenant"),
    (b'{"user_id": "u1"}', "user_id"),
    (b'[1, 2]', "object"),
    (b'{"unclosed', "JSON"),
])
async def test_a_quotas_request_with_any_option_or_a_bad_body_is_refused_naming_it(hosting, body, named):
    msg = await hosting.nc.request(subjects.QUOTAS, body, timeout=10,
                                   headers={subjects.CONTENT_TYPE: subjects.JSON})
    reply = msgspec.json.decode(msg.data, type=QuotaReply)
    assert not reply.ok and reply.error.code == ErrorCode.INVALID_REQUEST, reply
    assert named in reply.error.message, reply.error.message
    assert reply.quotas == []


async def test_health_gives_the_quota_limits_of_the_node(hosting):
    limits = msgspec.json.decode((await hosting.nc.request(subjects.HEALTH, b"{}", timeout=10)).data)["limits"]
    assert {k: limits[k] for k in ("max_strategies_per_tenant", "max_versions_per_strategy",
                                   "max_deployments_per_tenant", "max_secrets_per_tenant")} == {
        "max_strategies_per_tenant": 2, "max_versions_per_strategy": 2, "max_deployments_per_tenant": 2,
        "max_secrets_per_tenant": 2}


async def test_an_empty_quotas_request_is_answered(hosting):
    msg = await hosting.nc.request(subjects.QUOTAS, b"", timeout=10)
    reply = msgspec.json.decode(msg.data, type=QuotaReply)
    assert reply.ok and len(reply.quotas) == 4


# -- the CLI -----------------------------------------------------------------------------------
def cli(url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args, "--url", url], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, input=stdin)


async def test_the_cli_shows_a_quota_refusal_and_exits_non_zero(server, h, tmp_path):
    await h.put_strategy("deployed", CODE)
    await h.create_deployment("d1", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.create_deployment("d2", strategy="deployed", symbols=["Q1"], timeframe="1d")
    await h.set_secret("K1", "value-one")
    await h.set_secret("K2", "value-two")
    (tmp_path / "s1.py").write_text(CODE)
    deploy = await asyncio.to_thread(cli, server.url, "deploy", str(tmp_path / "s1.py"), "--id", "d3",
                                     "--symbols", "Q1", "--timeframe", "1d")
    assert deploy.returncode == 1 and deploy.stderr.startswith(
        "error: INVALID_REQUEST: tenant local has 2 deployments, the most MAX_DEPLOYMENTS_PER_TENANT allows"), deploy
    secret = await asyncio.to_thread(cli, server.url, "secrets", "set", "K3", stdin="value-three\n")
    assert secret.returncode == 1 and secret.stderr.startswith(
        "error: INVALID_REQUEST: tenant local has 2 secrets, the most MAX_SECRETS_PER_TENANT allows"), secret


async def test_the_cli_prints_the_quotas_as_a_table_and_as_json(server, h):
    await h.put_strategy("s1", CODE)
    await h.put_strategy("s1", CODE + "# v2\n")
    table = await asyncio.to_thread(cli, server.url, "quotas")
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0] == "tenant local"
    assert lines[1].split() == ["QUOTA", "USED", "LIMIT", "SETTING", "AT", "THE", "LIMIT"]
    rows = {line.split()[0]: line.split()[1:4] for line in lines[2:]}
    assert rows == {"strategies": ["1", "2", "MAX_STRATEGIES_PER_TENANT"],
                    "versions_per_strategy": ["2", "2", "MAX_VERSIONS_PER_STRATEGY"],
                    "deployments": ["0", "2", "MAX_DEPLOYMENTS_PER_TENANT"],
                    "secrets": ["0", "2", "MAX_SECRETS_PER_TENANT"]}
    assert "(most: s1)" in lines[3] and "oldest versions no deployment runs are dropped" in lines[3]
    as_json = await asyncio.to_thread(cli, server.url, "quotas", "--json")
    reply = msgspec.json.decode(as_json.stdout, type=QuotaReply)
    assert reply.ok and used(reply)["versions_per_strategy"] == (2, 2) and reply.quotas[1].strategy == "s1"


# -- tenants (NATS accounts of deploy/nats/permissions.conf) ------------------------------------
@pytest.fixture(scope="module")
def accounts_server():
    srv = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        srv.start()
    yield srv
    srv.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenants(accounts_server):
    node = Node(settings("quota-accounts"), accounts_server.url,
                connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conns = Connections(accounts_server.url)
    a = await conns.connect("client")
    b = await conns.connect("client2")
    yield HostingClient(a, tenant="TENANT_A"), HostingClient(b, tenant="TENANT_B")
    await conns.close()
    await node.stop()


async def test_one_tenant_at_its_limits_does_not_limit_another(tenants):
    ha, hb = tenants
    for name in ("one", "two"):
        await ha.put_strategy(name, CODE)
        await ha.create_deployment(f"d-{name}", strategy=name, symbols=["Q1"], timeframe="1d")
        await ha.set_secret(f"K_{name}", "tenant-a-value")
    assert await refusal(ha.put_strategy("three", CODE)) == (
        "tenant TENANT_A has 2 strategies, the most MAX_STRATEGIES_PER_TENANT allows: delete one first")
    assert await refusal(ha.create_deployment("d-s3", strategy="one", symbols=["Q1"], timeframe="1d")) == (
        "tenant TENANT_A has 2 deployments, the most MAX_DEPLOYMENTS_PER_TENANT allows: remove one first")
    assert await refusal(ha.set_secret("K_s3", "v")) == (
        "tenant TENANT_A has 2 secrets, the most MAX_SECRETS_PER_TENANT allows: remove one first")
    # tenant B, same names, same bucket: its own counts
    for name in ("one", "two"):
        assert (await hb.put_strategy(name, CODE)).strategy.version == 1
        assert (await hb.create_deployment(f"d-{name}", strategy=name, symbols=["Q1"],
                                           timeframe="1d")).deployment.id == f"d-{name}"
        await hb.set_secret(f"K_{name}", "tenant-b-value")
    assert [s.name for s in (await hb.list_secrets()).secrets] == ["K_one", "K_two"]


async def test_each_tenant_sees_only_its_own_quotas(tenants):
    ha, hb = tenants
    await clear(ha)
    await clear(hb)
    await ha.put_strategy("one", CODE)
    await ha.put_strategy("one", CODE + "# v2\n")
    await ha.create_deployment("d-one", strategy="one", symbols=["Q1"], timeframe="1d")
    await ha.set_secret("K_one", "tenant-a-value")
    a, b = await ha.quotas(), await hb.quotas()
    assert a.tenant == "TENANT_A" and b.tenant == "TENANT_B"
    assert used(a) == {"strategies": (1, 2), "versions_per_strategy": (2, 2), "deployments": (1, 2),
                       "secrets": (1, 2)}
    assert used(b) == {"strategies": (0, 2), "versions_per_strategy": (0, 2), "deployments": (0, 2),
                       "secrets": (0, 2)}
    assert b.quotas[1].strategy is None
    await clear(ha)
