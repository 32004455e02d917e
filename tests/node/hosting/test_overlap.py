"""The overlap policy: a new bar while the deployment's previous run on that symbol still goes on."""

from __future__ import annotations

import asyncio

import pytest

from backtest.store import BarStore
from node.hosting.client import HostingClient

from .support import arrays, bar_range, one_bar, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

# Long enough (~0.5-1 s) that the next two bars arrive while it runs.
SLOW = ("def strategy(data):\n    n = 0\n    while n < params['spin']:\n        n += 1\n"
        "    return 'BUY'\n")


async def _three_fast_bars(nc, hosting, dep: str, symbol: str, overlap: str):
    store = BarStore(nc.jetstream(), nc)
    full = arrays(20, seed=31)
    await store.load(symbol, "1d", bar_range(full, 0, 10))
    await hosting.put_strategy(f"slow-{overlap}", SLOW)
    await hosting.create_deployment(dep, strategy=f"slow-{overlap}", symbols=[symbol], timeframe="1d",
                                    lookback=3, overlap=overlap, parameters={"spin": 1_500_000})
    for i in (10, 11, 12):
        await store.load(symbol, "1d", one_bar(full, i))
        await asyncio.sleep(0.1)

    async def three_records():
        runs = (await hosting.runs(dep)).runs
        return runs if len(runs) == 3 else None

    return await wait_for(three_records, timeout=30)


async def test_skip_records_the_bars_that_arrive_during_a_run_as_skipped(nc, nodes):
    runs = await _three_fast_bars(nc, HostingClient(nc), "ov-skip", "OVS", "skip")
    assert [r.status for r in runs] == ["ok", "skipped", "skipped"]
    assert "still going" in runs[1].note


async def test_queue_one_runs_the_first_waiting_bar_after_the_run_and_skips_the_rest(nc, nodes):
    runs = await _three_fast_bars(nc, HostingClient(nc), "ov-queue", "OVQ", "queue_one")
    assert [r.status for r in runs] == ["ok", "ok", "skipped"]
    assert runs[1].started_at >= runs[0].started_at


async def test_allow_runs_every_bar_even_while_another_runs(nc, nodes):
    runs = await _three_fast_bars(nc, HostingClient(nc), "ov-allow", "OVA", "allow")
    assert [r.status for r in runs] == ["ok", "ok", "ok"]
