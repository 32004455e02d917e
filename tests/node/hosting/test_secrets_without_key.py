"""A node that holds no key-encryption key refuses secrets clearly and serves everything else."""

from __future__ import annotations

import asyncio

import nats
import pytest
import pytest_asyncio

from contracts import ErrorCode
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient, HostingError
from node.service import Node

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = """
def strategy(data):
    print("mode", env.get("MODE"))
"""


@pytest.fixture(scope="module")
def server():
    srv = EmbeddedServer().start()
    yield srv
    srv.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(server):
    node = Node(Settings.from_env({"MAX_WORKERS": "1", "NODE_ID": "keyless", "DRAIN_TIMEOUT_SECONDS": "1"}), server.url)
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conn = await nats.connect(server.url)
    yield conn
    await conn.drain()
    await node.stop()


@pytest.mark.parametrize("op", ["set", "list", "delete", "rotate"])
async def test_every_secret_operation_is_refused_naming_the_missing_key(nc, op):
    hosting = HostingClient(nc)
    call = {"set": lambda: hosting.set_secret("API_KEY", "value"), "list": hosting.list_secrets,
            "delete": lambda: hosting.delete_secret("API_KEY"), "rotate": hosting.rotate_secrets}[op]
    with pytest.raises(HostingError) as err:
        await call()
    assert err.value.error.code == ErrorCode.INVALID_REQUEST
    assert "SECRETS_KEY" in err.value.error.message


async def test_a_deployment_naming_secrets_is_refused(nc):
    hosting = HostingClient(nc)
    await hosting.put_strategy("keyless", CODE)
    with pytest.raises(HostingError) as err:
        await hosting.create_deployment("keyless", strategy="keyless", symbols=["X"], timeframe="1d",
                                        secrets=["API_KEY"])
    assert err.value.error.code == ErrorCode.INVALID_REQUEST and "SECRETS_KEY" in err.value.error.message


async def test_a_deployment_without_secrets_is_still_served(nc):
    hosting = HostingClient(nc)
    await hosting.put_strategy("keyless-env", CODE)
    created = await hosting.create_deployment("keyless-env", strategy="keyless-env", symbols=["X"],
                                              timeframe="1d", env={"MODE": "paper"})
    assert created.deployment.env == {"MODE": "paper"} and created.deployment.secrets == []


async def test_a_key_file_that_cannot_be_read_or_parsed_stops_the_node_before_it_connects(server, tmp_path):
    node = Node(Settings.from_env({"SECRETS_KEY_FILE": str(tmp_path / "missing")}), server.url)
    with pytest.raises(OSError):
        await node.start()
    assert node.nc is None or not node.nc.is_connected
    bad = tmp_path / "bad.key"
    bad.write_text("k1:dG9vIHNob3J0\n")
    node = Node(Settings.from_env({"SECRETS_KEY_FILE": str(bad)}), server.url)
    with pytest.raises(ValueError, match="needs 32"):
        await node.start()


async def test_a_mounted_key_file_is_read_with_its_key_ids(tmp_path):
    import base64
    import os

    from node.hosting.secrets import Keyring

    path = tmp_path / "secrets.key"
    path.write_text(f"old:{base64.b64encode(os.urandom(32)).decode()}\nnew:{base64.b64encode(os.urandom(32)).decode()}\n")
    settings = Settings.from_env({"SECRETS_KEY_FILE": str(path)})
    ring = Keyring.load(settings.secrets_key, settings.secrets_key_file)
    assert list(ring.keys) == ["old", "new"] and ring.newest == "new"
