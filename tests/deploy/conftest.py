"""Fixtures for the deploy/ tests: a real nats-server running deploy/nats/permissions.conf."""

from __future__ import annotations

import pytest

from node.embedded import EmbeddedServer

from .support import PERMISSIONS_CONF, Connections, password_env


@pytest.fixture(scope="session")
def permissions_server():
    """One JetStream server with the deployed accounts and permissions; stopped at the end."""
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    yield server
    server.close()


@pytest.fixture
async def conns(permissions_server):
    c = Connections(permissions_server.url)
    yield c
    await c.close()
