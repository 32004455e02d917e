"""Secrets are per tenant (deploy/nats/permissions.conf on a real nats-server, accounts TENANT_A and
TENANT_B): a tenant lists, deletes and deploys only its own secrets, and cannot read the bucket."""

from __future__ import annotations

import asyncio
import base64
import os

import pytest
import pytest_asyncio

from contracts import ErrorCode
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient, HostingError
from node.service import Node
from tests.deploy.support import PASSWORDS, PERMISSIONS_CONF, Connections, password_env

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def strategy(data):\n    print(len(secrets))\n"


@pytest.fixture(scope="module")
def accounts_server():
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tenants(accounts_server):
    key = base64.b64encode(os.urandom(32)).decode()
    settings = Settings.from_env({"NODE_ID": "secrets-accounts", "MAX_WORKERS": "1", "MAX_TIMEOUT_SECONDS": "10",
                                  "SECRETS_KEY": f"k1:{key}"})
    node = Node(settings, accounts_server.url, connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conns = Connections(accounts_server.url)
    a = await conns.connect("client")
    b = await conns.connect("client2")
    yield a, b
    await conns.close()
    await node.stop()


async def test_a_tenant_sees_and_deletes_only_its_own_secrets(tenants):
    a, b = tenants
    ha, hb = HostingClient(a, tenant="TENANT_A"), HostingClient(b, tenant="TENANT_B")
    await ha.set_secret("API_KEY", "tenant-a-secret-value")
    assert [s.name for s in (await ha.list_secrets()).secrets] == ["API_KEY"]
    assert (await hb.list_secrets()).secrets == []
    with pytest.raises(HostingError) as err:
        await hb.delete_secret("API_KEY")
    assert err.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in err.value.error.message
    assert [s.name for s in (await ha.list_secrets()).secrets] == ["API_KEY"]


async def test_a_tenant_cannot_deploy_with_another_tenants_secret(tenants):
    a, b = tenants
    await HostingClient(a, tenant="TENANT_A").set_secret("ONLY_A", "tenant-a-only-value")
    hb = HostingClient(b, tenant="TENANT_B")
    await hb.put_strategy("b-strat", CODE)
    with pytest.raises(HostingError) as err:
        await hb.create_deployment("b-dep", strategy="b-strat", symbols=["X"], timeframe="1d", secrets=["ONLY_A"])
    assert err.value.error.code == ErrorCode.INVALID_REQUEST and "ONLY_A" in err.value.error.message


async def test_a_tenant_cannot_read_the_secrets_bucket(tenants):
    a, _ = tenants
    with pytest.raises(Exception):
        await a.jetstream(timeout=2).get_last_msg("KV_SECRETS", "$KV.SECRETS.TENANT_A.API_KEY")
