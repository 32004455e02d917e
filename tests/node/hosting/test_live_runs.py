"""Two nodes on one real nats-server: a deployment runs on every new bar, once per bar."""

from __future__ import annotations

import pytest

from backtest.store import BarStore
from node.hosting.client import HostingClient

from .support import CROSSOVER, arrays, bar_range, expected_signals, one_bar, stored_signals, stream_msgs, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

HISTORY = 20
LIVE = 200


async def test_two_symbols_200_live_bars_give_one_signal_per_bar_equal_to_a_backtest(nc, nodes):
    hosting = HostingClient(nc)
    js = nc.jetstream()
    store = BarStore(js, nc)
    full = {"AAA": arrays(HISTORY + LIVE, seed=3), "BBB": arrays(HISTORY + LIVE, seed=4)}
    for sym, bars in full.items():
        await store.load(sym, "1d", bar_range(bars, 0, HISTORY))
    put = await hosting.put_strategy("cross", CROSSOVER)
    assert put.strategy.version == 1 and put.strategy.style == "function"
    created = await hosting.create_deployment("cross-live", strategy="cross", symbols=["AAA", "BBB"],
                                              timeframe="1d", lookback=30, overlap="allow")
    assert created.status.state == "pending"
    for i in range(HISTORY, HISTORY + LIVE):
        for sym, bars in full.items():
            await store.load(sym, "1d", one_bar(bars, i))

    async def all_recorded():
        runs = (await hosting.runs("cross-live", limit=1000)).runs
        return runs if len(runs) == 2 * LIVE else None

    runs = await wait_for(all_recorded, timeout=90)
    assert {r.status for r in runs} == {"ok"}
    # The expected signals: the same strategy executed over every bar at once (a vectorized backtest).
    expected = await expected_signals(nc, full, HISTORY)
    stored, got = await stored_signals(js, "cross-live")
    assert len(stored) == sum(len(v) for v in got.values())  # nothing published twice
    assert got == expected and all(expected.values())
    # logs: one message per run, carrying the strategy's print
    logs = await stream_msgs(js, "STRATEGY_LOGS", "strategy.logs.local.cross-live")
    assert len(logs) == 2 * LIVE
    # state persisted per symbol between runs: the last run saw every earlier one
    status = (await hosting.get_deployment("cross-live")).status
    assert status.runs == 2 * LIVE and status.state == "running" and status.signals == len(stored)
    # both nodes served runs
    assert {r.node_id for r in runs} == {"host-a", "host-b"}

