"""Shared fixtures: a real nats-server on a free port per test session."""

from __future__ import annotations

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from node.embedded import EmbeddedServer  # noqa: E402


@pytest.fixture(scope="session")
def nats_server():
    """One JetStream-enabled nats-server for the whole session; stopped at the end."""
    server = EmbeddedServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_url(nats_server) -> str:
    return nats_server.url


@pytest.fixture
def bare_server():
    """A nats-server of the test's own, for tests that stall (SIGSTOP) or stop it."""
    server = EmbeddedServer().start()
    yield server
    server.close()


# -- a real node (real sandbox, real nats-server) serving the whole session -------------------
import nats  # noqa: E402
import pytest_asyncio  # noqa: E402


@pytest_asyncio.fixture(scope="session")
async def node(nats_url):
    from node.config import Settings
    from node.service import Node

    settings = Settings.from_env({"MAX_WORKERS": "4", "MAX_TIMEOUT_SECONDS": "10", "NODE_ID": "test-node"})
    running = Node(settings, nats_url)
    await running.start()
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="session")
async def nc(nats_url, node):
    """A plain nats-py connection, as any client would hold; the node is already serving."""
    conn = await nats.connect(nats_url)
    yield conn
    await conn.drain()


@pytest_asyncio.fixture(scope="session")
async def client(nc):
    from node.client import StrategyClient

    return StrategyClient(nc)
