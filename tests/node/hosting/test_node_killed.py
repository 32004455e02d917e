"""Real `strategy-node run` processes: one is killed with -9 mid-replay and nothing is lost or
published twice."""

from __future__ import annotations

import asyncio

import nats
import pytest

from backtest.store import BarStore
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient
from tests.node.test_faults import NodeProc

from .support import CROSSOVER, arrays, bar_range, expected_signals, one_bar, stored_signals, wait_for

HISTORY = 20
LIVE = 200


@pytest.mark.asyncio
async def test_a_node_killed_mid_replay_loses_no_run_and_publishes_nothing_twice(tmp_path):
    server = EmbeddedServer().start()
    procs = []
    nc = None
    try:
        env = {"MAX_WORKERS": "2", "JOBS_ACK_WAIT_SECONDS": "2", "MAX_TIMEOUT_SECONDS": "10"}
        procs = [NodeProc(tmp_path, f"kill-{i}", server.url, **env) for i in range(2)]
        nc = await nats.connect(server.url)
        js = nc.jetstream()

        async def both_pulling():
            try:
                info = await js.consumer_info("STRATEGY_TRIGGERS", "strategy-triggers")
                fan = await js.consumer_info("BARS", "strategy-fanout")
            except Exception:  # noqa: BLE001 - not declared yet
                return False
            return info.num_waiting >= 2 and fan.num_waiting >= 2

        await wait_for(both_pulling, timeout=60)
        hosting = HostingClient(nc)
        store = BarStore(js, nc)
        full = {"KA": arrays(HISTORY + LIVE, seed=11), "KB": arrays(HISTORY + LIVE, seed=12)}
        for sym, bars in full.items():
            await store.load(sym, "1d", bar_range(bars, 0, HISTORY))
        await hosting.put_strategy("cross", CROSSOVER)
        await hosting.create_deployment("killed", strategy="cross", symbols=["KA", "KB"], timeframe="1d",
                                        lookback=30, overlap="allow")
        for i in range(HISTORY, HISTORY + LIVE):
            if i == HISTORY + LIVE // 3:
                procs[0].kill9()  # mid-replay, with runs in flight on it
            for sym, bars in full.items():
                await store.load(sym, "1d", one_bar(bars, i))
            await asyncio.sleep(0.01)

        async def all_recorded():
            runs = (await hosting.runs("killed", limit=1000)).runs
            return runs if len(runs) == 2 * LIVE else None

        runs = await wait_for(all_recorded, timeout=120)
        assert {r.status for r in runs} == {"ok"}
        assert len({(r.symbol, r.bar_time) for r in runs}) == 2 * LIVE
        assert {r.node_id for r in runs} == {"kill-0", "kill-1"}
        expected = await expected_signals(nc, full, HISTORY)
        stored, got = await stored_signals(js, "killed")
        assert len(stored) == sum(len(v) for v in got.values())  # nothing published twice
        assert got == expected
        # the kill interrupted runs: their triggers came back and were run once, by the survivor
        assert any(r.delivery > 1 and r.node_id == "kill-1" for r in runs)
    finally:
        if nc is not None:
            await nc.close()
        for proc in procs:
            proc.stop()
        server.close()
