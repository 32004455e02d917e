"""The nats-server restarted mid-replay (same store): nothing lost, nothing published twice."""

from __future__ import annotations

import asyncio

import pytest

from backtest.store import BarStore
from node.hosting.client import HostingClient

from .support import CROSSOVER, arrays, bar_range, expected_signals, one_bar, stored_signals, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

HISTORY = 20
LIVE = 200


async def _load(store, symbol, bars, timeout: float = 30.0):
    """A live feed's publish: retried until the restarted server takes it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await store.load(symbol, "1d", bars)
        except Exception:  # noqa: BLE001 - the server is down or JetStream is recovering
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_a_server_restart_mid_replay_loses_no_run_and_publishes_nothing_twice(server, nodes, nc):
    hosting = HostingClient(nc, timeout=20)
    js = nc.jetstream()
    store = BarStore(js, nc)
    full = {"RA": arrays(HISTORY + LIVE, seed=51), "RB": arrays(HISTORY + LIVE, seed=52)}
    for sym, bars in full.items():
        await store.load(sym, "1d", bar_range(bars, 0, HISTORY))
    await hosting.put_strategy("cross", CROSSOVER)
    await hosting.create_deployment("restarted", strategy="cross", symbols=["RA", "RB"], timeframe="1d",
                                    lookback=30, overlap="allow")
    for i in range(HISTORY, HISTORY + LIVE):
        if i == HISTORY + LIVE // 2:
            server.stop()
            await asyncio.sleep(0.5)
            server.start()
        for sym, bars in full.items():
            await _load(store, sym, one_bar(bars, i))

    async def all_recorded():
        try:
            runs = (await hosting.runs("restarted", limit=1000)).runs
        except Exception:  # noqa: BLE001 - a node still reconnecting
            return None
        return runs if len(runs) == 2 * LIVE else None

    runs = await wait_for(all_recorded, timeout=120)
    assert {r.status for r in runs} == {"ok"}
    assert len({(r.symbol, r.bar_time) for r in runs}) == 2 * LIVE
    expected = await expected_signals(nc, full, HISTORY)
    stored, got = await stored_signals(js, "restarted")
    assert len(stored) == sum(len(v) for v in got.values())  # nothing published twice
    assert got == expected
