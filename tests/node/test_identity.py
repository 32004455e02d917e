"""node/identity.py: which tenant a request or job runs as. Only what NATS vouches for counts;
the attacks through a real multi-account server are in tests/deploy/test_tenant_identity.py,
and through a server without accounts at the end of this file."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
import pytest_asyncio

from contracts import subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.identity import Caller, Tenant, Verifier, acting_for, job_parts, own_account, tenant_of
from node.service import Node
from tests.support import columnar_bars

INFO = subjects.REQUEST_INFO_HEADER
IMPORTED = "_R_.ofgQVs.UCc7b2"  # the reply subject the server gives an imported request
NODE = Verifier("STRATEGY")


def header(**info) -> dict[str, str]:
    return {INFO: json.dumps(info)}


def test_an_imported_request_is_verified_as_its_account_and_user():
    caller = NODE.request(header(acc="TENANT_A", user="alice", rtt=1000), IMPORTED)
    assert caller.verified and caller.account == "TENANT_A" and caller.user == "alice"


def test_an_import_without_share_gives_the_account_alone():
    caller = NODE.request(header(acc="TENANT_B", rtt=1000), IMPORTED)
    assert caller.account == "TENANT_B" and caller.user is None


@pytest.mark.parametrize("reply", [None, "", "_INBOX.abc.def", "_INBOX_client.x.y", "_R_x.y", "x._R_.y"])
def test_a_header_on_a_request_that_did_not_cross_an_import_is_not_trusted(reply):
    assert not NODE.request(header(acc="TENANT_B", user="bob"), reply).verified


@pytest.mark.parametrize("raw", ["", "not json", "[]", '{"acc": 5}', '{"acc": ""}', '{"user": "bob"}',
                                 '{"acc": "a\\nb"}', json.dumps({"acc": "A" * 300}), "{" * 20_000])
def test_a_malformed_header_is_not_trusted(raw):
    assert not NODE.request({INFO: raw}, IMPORTED).verified


def test_a_header_naming_the_nodes_own_account_is_not_trusted():
    assert not NODE.request(header(acc="STRATEGY", user="node"), IMPORTED).verified


@pytest.mark.parametrize("own", [None, "$G"])
def test_nothing_is_verified_when_the_node_has_no_account_of_its_own(own):
    verifier = Verifier(own)
    assert not verifier.request(header(acc="TENANT_A"), IMPORTED).verified
    assert not verifier.job("strategy.jobs.TENANT_A.execute")[0].verified


def test_a_job_subject_names_its_kind_and_account():
    assert job_parts("strategy.jobs.execute") == (None, "execute")
    assert job_parts("strategy.jobs.TENANT_A.backtest") == ("TENANT_A", "backtest")
    caller, kind = NODE.job("strategy.jobs.TENANT_A.backtest")
    assert caller.account == "TENANT_A" and caller.user is None and kind == "backtest"


def test_a_job_of_the_nodes_own_account_has_no_tenant():
    caller, kind = NODE.job("strategy.jobs.execute")
    assert not caller.verified and kind == "execute"


def test_without_a_verified_identity_no_user_id_picks_a_tenant():
    assert Caller().tenant("bob") is None
    assert Caller().tenant(None) is None


def test_a_verified_tenant_is_its_account_and_user_narrowed_by_the_body_user_id():
    caller = Caller(account="TENANT_A", user="alice")
    assert caller.tenant("bob") == Tenant("TENANT_A", "alice", "bob")
    assert caller.tenant(None) == Tenant("TENANT_A", "alice", "")


def test_a_trusted_body_user_id_never_collides_with_a_verified_tenant():
    trusted = Caller(trust_body=True).tenant("TENANT_A")
    assert trusted == Tenant("", "", "TENANT_A")
    assert trusted != Caller(account="TENANT_A").tenant("")
    assert Caller(trust_body=True).tenant(None) is None


def test_the_verified_identity_wins_over_a_trusted_body():
    caller = Caller(account="TENANT_A", trust_body=True)
    assert caller.tenant("bob").account == "TENANT_A"


def test_the_current_caller_is_the_one_of_the_block_it_runs_in():
    assert tenant_of("bob") is None
    with acting_for(Caller(account="TENANT_A")):
        assert tenant_of("bob") == Tenant("TENANT_A", "", "bob")
    assert tenant_of("bob") is None


def test_trust_body_user_id_is_an_explicit_setting():
    assert Settings.from_env({}).trust_body_user_id is False
    assert Settings.from_env({"TRUST_BODY_USER_ID": "true"}).trust_body_user_id is True
    with pytest.raises(ValueError, match="TRUST_BODY_USER_ID"):
        Settings.from_env({"TRUST_BODY_USER_ID": "maybe"})


# -- through a server without accounts: nobody is a verified tenant ---------------------------

@pytest_asyncio.fixture(scope="module")
async def single_account_node():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "one-account", "MAX_WORKERS": "2",
                                  "SANDBOX_READY": "2", "TENANT_WARM_RUNS": "50"})
    node = Node(settings, server.url)
    await node.start()
    nc = await nats.connect(server.url)
    yield node, nc
    await nc.drain()
    await node.stop()
    server.close()


async def test_a_node_on_a_server_without_accounts_knows_it_verifies_no_one(single_account_node):
    node, nc = single_account_node
    assert await own_account(nc) == "$G"
    msg = await nc.request(subjects.node_health("one-account"), b"{}", timeout=5)
    assert json.loads(msg.data)["nats_account"] == "$G"


async def test_user_id_alone_never_reaches_a_warm_worker(single_account_node):
    node, nc = single_account_node
    body = {"code": "def strategy(data):\n    return 'HOLD'\n", "bars": columnar_bars(30), "user_id": "bob"}
    msg = await nc.request(subjects.EXECUTE, json.dumps(body).encode(), timeout=15)
    assert json.loads(msg.data)["success"]
    assert node.pool.warm_children() == {}


async def test_a_client_cannot_forge_the_reply_subject_of_an_imported_request(single_account_node):
    # The strongest forgery one account allows would be the server's header plus an `_R_.`
    # reply subject: the server itself refuses that reply prefix from any client.
    node, _ = single_account_node
    errors: list[str] = []

    async def error_cb(exc):
        errors.append(str(exc))

    forger = await nats.connect(node.nats_url, error_cb=error_cb, allow_reconnect=False)
    try:
        body = {"code": "def strategy(data):\n    return 'HOLD'\n", "bars": columnar_bars(30), "user_id": "bob"}
        await forger.publish(subjects.EXECUTE, json.dumps(body).encode(), reply="_R_.forged.reply",
                             headers=header(acc="TENANT_B", user="bob"))
        await forger.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.02)
        assert any("permissions violation for publish with reply" in e.lower() for e in errors), errors
        assert node.pool.warm_children() == {}
    finally:
        await forger.close()
