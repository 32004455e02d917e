"""Every node killed with -9 and new ones started: a scheduled deployment's fires kept in
STRATEGY_SCHEDULES meanwhile are each run once (none lost, none twice), and it keeps firing."""

from __future__ import annotations

import asyncio
import time

import nats
import pytest

from backtest.store import BarStore
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient
from tests.node.test_faults import NodeProc

from .support import arrays, wait_for

CODE = "def strategy(data):\n    return 'BUY'\n"


def fire_s(run_id: str) -> float:
    return int(run_id.rsplit(".fire", 1)[1]) / 1e9


@pytest.mark.asyncio
async def test_killing_every_node_loses_no_fire_and_runs_none_twice(tmp_path):
    server = EmbeddedServer().start()
    procs: list[NodeProc] = []
    nc = None
    env = {"MAX_WORKERS": "2", "JOBS_ACK_WAIT_SECONDS": "2", "MAX_TIMEOUT_SECONDS": "10"}
    try:
        procs = [NodeProc(tmp_path, f"sk-{i}", server.url, **env) for i in range(2)]
        nc = await nats.connect(server.url)
        hosting = HostingClient(nc, timeout=20)

        async def served():
            try:
                return await hosting.list_strategies()
            except Exception:  # noqa: BLE001 - nodes still starting
                return None

        await wait_for(served, timeout=60, every=0.3)
        await BarStore(nc.jetstream(), nc).load("KS", "1d", arrays(30, seed=31))
        await hosting.put_strategy("tick", CODE)
        # overlap "allow": the backlog of fires kept while no node ran is taken at once when nodes
        # return; under the default "skip" the overlapping ones would be recorded as skipped
        await hosting.create_deployment("tick", strategy="tick", symbols=["KS"], timeframe="1d", schedule="@every 1s",
                                        overlap="allow")
        await hosting.create_deployment("tick-paused", strategy="tick", symbols=["KS"], timeframe="1d",
                                        schedule="@every 1s", desired="paused")

        async def runs_at_least(n):
            runs = (await hosting.runs("tick", limit=1000)).runs
            return runs if len(runs) >= n else None

        await wait_for(lambda: runs_at_least(2), timeout=30)
        for proc in procs:
            proc.kill9()
        killed = time.time()
        await asyncio.sleep(2.0)
        procs += [NodeProc(tmp_path, f"sk-new-{i}", server.url, **env) for i in range(2)]

        async def fired_after_restart():
            try:
                runs = (await hosting.runs("tick", limit=1000)).runs
            except Exception:  # noqa: BLE001 - no node serves control requests yet
                return None
            return runs if len([r for r in runs if fire_s(r.run_id) > killed + 4]) >= 3 else None

        runs = await wait_for(fired_after_restart, timeout=90, every=0.3)
        assert len({r.run_id for r in runs}) == len(runs)  # no fire ran twice
        assert {r.status for r in runs} == {"ok"}, [r.note for r in runs if r.status != "ok"]
        fires = sorted(fire_s(r.run_id) for r in runs)
        gaps = [round(b - a, 2) for a, b in zip(fires, fires[1:])]
        assert all(0.7 <= g <= 1.3 for g in gaps), gaps  # every fire while no node ran was kept and run
        assert {r.node_id for r in runs if fire_s(r.run_id) > killed + 4} <= {"sk-new-0", "sk-new-1"}
        assert (await hosting.runs("tick-paused")).runs == []
    finally:
        if nc is not None:
            await nc.close()
        for proc in procs:
            proc.stop()
        server.close()
