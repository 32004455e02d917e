"""Opt-in warm workers for hosted runs: one per deployment version, never shared with another."""

from __future__ import annotations

import asyncio

import nats
import pytest
import pytest_asyncio

from backtest.store import BarStore
from node.config import Settings
from node.hosting.client import HostingClient
from node.service import Node

from .support import arrays, bar_range, one_bar, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def warm_node(server):
    settings = Settings.from_env({"MAX_WORKERS": "2", "NODE_ID": "warm-node", "TENANT_WARM_RUNS": "1000",
                                  "TENANT_WARM_WORKERS": "1", "TENANT_WARM_MAX": "4"})
    node = Node(settings, server.url)
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    yield node
    await node.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def wnc(server, warm_node):
    """A client of this module's server, where only the warm node serves."""
    conn = await nats.connect(server.url)
    yield conn
    await conn.drain()


async def test_each_warm_deployment_runs_in_a_worker_of_its_own(warm_node, wnc):
    hosting = HostingClient(wnc)
    store = BarStore(wnc.jetstream(), wnc)
    full = arrays(20, seed=61)
    await store.load("WM1", "1d", bar_range(full, 0, 10))
    code = "def strategy(data):\n    return 'BUY'\n"
    await hosting.put_strategy("warm", code)
    for dep in ("warm-a", "warm-b"):
        await hosting.create_deployment(dep, strategy="warm", symbols=["WM1"], timeframe="1d", lookback=3,
                                        overlap="queue_one", warm=True)
    for i in (10, 11, 12):
        await store.load("WM1", "1d", one_bar(full, i))
        for dep in ("warm-a", "warm-b"):
            await wait_for(lambda d=dep, n=i - 9: _n(hosting, d, n))
    workers = warm_node.pool.warm_children()
    keys = [k for k in workers if "hosted" in k]
    assert len(keys) == 2 and any("warm-a" in k for k in keys) and any("warm-b" in k for k in keys), workers
    pids = [set(workers[k]) for k in keys]
    assert not pids[0] & pids[1]  # never the same process for two deployments


async def _n(hosting, dep, n):
    return len((await hosting.runs(dep)).runs) >= n
