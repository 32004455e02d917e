"""A real node (real sandbox, real nats-server) serving the whole test session."""

from __future__ import annotations

import nats
import pytest_asyncio

from node.client import StrategyClient
from node.config import Settings
from node.service import Node


@pytest_asyncio.fixture(scope="session")
async def node(nats_url):
    settings = Settings.from_env({"MAX_WORKERS": "4", "MAX_TIMEOUT_SECONDS": "10", "NODE_ID": "test-node"})
    running = Node(settings, nats_url)
    await running.start()
    yield running
    await running.stop()


@pytest_asyncio.fixture(scope="session")
async def nc(nats_url, node):
    conn = await nats.connect(nats_url)
    yield conn
    await conn.drain()


@pytest_asyncio.fixture(scope="session")
async def client(nc):
    return StrategyClient(nc)
