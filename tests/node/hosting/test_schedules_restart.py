"""A nats-server restart (same file store) keeps deployments, schedules and paused states:
scheduled deployments keep firing once a second, none runs a fire twice, a paused one stays silent."""

from __future__ import annotations

import asyncio
import time

import pytest

from backtest.store import BarStore
from node.hosting.client import HostingClient

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def strategy(data):\n    return 'BUY'\n"


def fire_s(run_id: str) -> float:
    return int(run_id.rsplit(".fire", 1)[1]) / 1e9


async def _runs(hosting, dep):
    try:
        return (await hosting.runs(dep, limit=1000)).runs
    except Exception:  # noqa: BLE001 - the server is coming back
        return []


async def test_schedules_keep_firing_across_a_server_restart_and_paused_ones_stay_silent(server, nodes, nc):
    hosting = HostingClient(nc, timeout=20)
    await BarStore(nc.jetstream(), nc).load("RS", "1d", arrays(30, seed=21))
    await hosting.put_strategy("tick", CODE)
    await hosting.create_deployment("tick-every", strategy="tick", symbols=["RS"], timeframe="1d",
                                    schedule="@every 1s")
    await hosting.create_deployment("tick-cron", strategy="tick", symbols=["RS"], timeframe="1d",
                                    schedule="* * * * * *", tz="America/New_York")
    await hosting.create_deployment("tick-paused", strategy="tick", symbols=["RS"], timeframe="1d",
                                    schedule="@every 1s", desired="paused")

    async def at_least(dep, n):
        runs = await _runs(hosting, dep)
        return runs if len(runs) >= n else None

    for dep in ("tick-every", "tick-cron"):
        await wait_for(lambda dep=dep: at_least(dep, 2), timeout=15)
    server.stop()
    await asyncio.sleep(2.0)
    server.start()
    restarted = time.time()

    async def fired_after_restart(dep):
        runs = await _runs(hosting, dep)
        late = [r for r in runs if fire_s(r.run_id) > restarted + 0.5]
        return runs if len(late) >= 3 else None

    for dep in ("tick-every", "tick-cron"):
        runs = await wait_for(lambda dep=dep: fired_after_restart(dep), timeout=40)
        assert len({r.run_id for r in runs}) == len(runs)  # no fire ran twice
        assert {r.status for r in runs} == {"ok"}
        fires = sorted(fire_s(r.run_id) for r in runs if fire_s(r.run_id) > restarted + 0.5)
        gaps = [b - a for a, b in zip(fires, fires[1:])]
        assert all(0.7 <= g <= 1.3 for g in gaps), gaps  # on time again after the restart
    assert await _runs(hosting, "tick-paused") == []
    got = (await hosting.get_deployment("tick-paused"))
    assert got.deployment.desired == "paused" and got.deployment.schedule == "@every 1s"
