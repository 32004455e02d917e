"""Fixtures of the hosted-strategy tests: one real nats-server and two in-process nodes per module."""

from __future__ import annotations

import asyncio

import nats
import pytest
import pytest_asyncio

from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node


@pytest.fixture(scope="module")
def server():
    srv = EmbeddedServer().start()
    yield srv
    srv.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nodes(server, request):
    """Two nodes (a module whose behaviours need no second node may set NODE_NAMES = ("host-a",);
    NODE_ENV adds or overrides settings, e.g. a secrets key or quotas)."""
    started = []
    for name in getattr(request.module, "NODE_NAMES", ("host-a", "host-b")):
        settings = Settings.from_env({"MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10", "NODE_ID": name,
                                      "JOBS_ACK_WAIT_SECONDS": "3", **getattr(request.module, "NODE_ENV", {})})
        node = Node(settings, server.url)
        await node.start()
        started.append(node)
    for node in started:
        await asyncio.wait_for(node.hosting.ready.wait(), 20)
    yield started
    for node in started:
        await node.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(server, nodes):
    conn = await nats.connect(server.url)
    yield conn
    await conn.drain()
