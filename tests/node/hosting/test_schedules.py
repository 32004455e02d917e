"""Scheduled deployments on JetStream message schedules, through a real nats-server and two nodes."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from backtest.store import BarStore
from contracts import subjects
from datetime import datetime, timezone

from node.hosting import schedules, sessions
from node.hosting.client import HostingClient

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

CODE = "def strategy(data):\n    print('scheduled', env.get('MODE'))\n    return 'BUY'\n"


def fire_s(run_id: str) -> float:
    return int(run_id.rsplit(".fire", 1)[1]) / 1e9


async def _ready(nc):
    hosting = HostingClient(nc)
    if not (await hosting.list_strategies()).strategies:
        await BarStore(nc.jetstream(), nc).load("SCH", "1d", arrays(30, seed=9))
        await hosting.put_strategy("sched", CODE)
    return hosting


async def _runs(hosting, dep):
    return (await hosting.runs(dep, limit=1000)).runs


async def test_every_1s_and_a_non_utc_cron_fire_once_a_second_on_time(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("every", strategy="sched", symbols=["SCH"], timeframe="1d",
                                    schedule="@every 1s", env={"MODE": "every"})
    await hosting.create_deployment("cron", strategy="sched", symbols=["SCH"], timeframe="1d",
                                    schedule="* * * * * *", tz="Asia/Kolkata")
    for dep in ("every", "cron"):
        runs = await wait_for(lambda dep=dep: _ready_runs(hosting, dep, 3), timeout=15)
        fires = sorted(fire_s(r.run_id) for r in runs)
        assert len(set(r.run_id for r in runs)) == len(runs)  # none twice
        assert {r.status for r in runs} == {"ok"} and all(r.signal is not None for r in runs)
        gaps = [b - a for a, b in zip(fires, fires[1:])]
        assert all(0.7 <= g <= 1.3 for g in gaps), gaps
    status = (await hosting.get_deployment("cron")).status
    assert status.next_fire is not None and status.next_fire.endswith("+05:30")
    await hosting.delete_deployment("every")
    await hosting.delete_deployment("cron")


async def _ready_runs(hosting, dep, n):
    runs = await _runs(hosting, dep)
    return runs if len(runs) >= n else None


async def test_a_scheduled_deployment_runs_on_its_fires_not_on_new_bars(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("fires-only", strategy="sched", symbols=["SCH"], timeframe="1d",
                                    schedule="@every 1s")
    await wait_for(lambda: _ready_runs(hosting, "fires-only", 1), timeout=10)
    await BarStore(nc.jetstream(), nc).load("SCH", "1d", arrays(31, seed=9, start=30))
    await asyncio.sleep(1.5)
    runs = await _runs(hosting, "fires-only")
    assert runs and all(".fire" in r.run_id for r in runs)
    await hosting.delete_deployment("fires-only")


async def test_a_paused_scheduled_deployment_stays_silent_and_resumes(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("pausable", strategy="sched", symbols=["SCH"], timeframe="1d",
                                    schedule="@every 1s")
    await wait_for(lambda: _ready_runs(hosting, "pausable", 1), timeout=10)
    await hosting.pause("pausable")
    await asyncio.sleep(1.0)  # a run already triggered may finish
    before = len(await _runs(hosting, "pausable"))
    await asyncio.sleep(2.2)
    assert len(await _runs(hosting, "pausable")) == before
    await hosting.resume("pausable")
    await wait_for(lambda: _ready_runs(hosting, "pausable", before + 2), timeout=10)
    await hosting.delete_deployment("pausable")


async def test_a_fire_older_than_the_catchup_window_is_skipped_and_recorded(nc, nodes):
    hosting = await _ready(nc)
    for node in nodes:  # no node takes fires for a while (as in an outage of every node)
        await node.hosting.fires.loop.stop()
    try:
        await hosting.create_deployment("late", strategy="sched", symbols=["SCH"], timeframe="1d",
                                        schedule="@every 1s", catchup_s=1)
        await asyncio.sleep(3.0)
    finally:
        for node in nodes:
            node.hosting.fires = schedules.Fires(node.hosting)
            node.hosting.fires.loop.start()
    runs = await wait_for(lambda: _ready_runs(hosting, "late", 4), timeout=15)
    skipped = [r for r in runs if r.status == "skipped"]
    assert len(skipped) >= 2 and all("catch-up window of 1s" in r.note for r in skipped)
    assert len({r.run_id for r in runs}) == len(runs)
    await wait_for(lambda: _has_ok(hosting, "late"), timeout=10)  # fresh fires run again
    await hosting.delete_deployment("late")


async def _has_ok(hosting, dep):
    return any(r.status == "ok" for r in await _runs(hosting, dep))


async def test_deleting_a_scheduled_deployment_removes_its_schedule(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("gone", strategy="sched", symbols=["SCH"], timeframe="1d",
                                    schedule="@every 1s")
    js = nc.jetstream()
    msg = await js.get_last_msg(schedules.STREAM, "strategy.schedules.local.gone")
    assert msg.headers["Nats-Schedule"] == "@every 1s"
    await hosting.delete_deployment("gone")
    with pytest.raises(Exception):
        await js.get_last_msg(schedules.STREAM, "strategy.schedules.local.gone")
    info = await js.stream_info(schedules.STREAM, subjects_filter="strategy.fires.local.gone")
    await asyncio.sleep(1.5)
    after = await js.stream_info(schedules.STREAM, subjects_filter="strategy.fires.local.gone")
    assert not (after.state.subjects or {}) and not (info.state.subjects or {})


async def test_schedules_live_in_their_own_stream_never_in_bars(nc, nodes):
    js = nc.jetstream()
    info = await js.stream_info(schedules.STREAM)
    assert info.config.allow_msg_schedules is True
    assert set(info.config.subjects) == {"strategy.schedules.>", "strategy.fires.>"}
    assert not (await js.stream_info("BARS")).config.allow_msg_schedules


@pytest.mark.parametrize("fields, named", [
    ({"schedule": "* * * *"}, "6 fields"),
    ({"schedule": "@every 1x"}, "@every"),
    ({"schedule": "@daily"}, "6-field cron"),
    ({"schedule": "* * * * * *", "tz": "Mars/Base"}, "IANA"),
    ({"tz": "Asia/Kolkata"}, "tz applies to a schedule only"),
    ({"schedule": "@every 1s", "tz": "Asia/Kolkata"}, "tz applies to a cron schedule only"),
])
async def test_a_bad_schedule_or_zone_is_invalid_request_naming_it(nc, nodes, fields, named):
    await _ready(nc)
    body = {"id": "bad-sched", "strategy": "sched", "symbols": ["SCH"], "timeframe": "1d", **fields}
    msg = await nc.request(f"{subjects.DEPLOYMENTS}.create", msgspec.json.encode(body), timeout=10)
    reply = msgspec.json.decode(msg.data)
    assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST" and named in reply["error"]["message"]


async def test_a_session_deployment_runs_exactly_when_its_exchange_is_open(nc, nodes):
    hosting = HostingClient(nc)
    await BarStore(nc.jetstream(), nc).load("SS", "1d", arrays(30, seed=13))
    await hosting.put_strategy("sess", "def strategy(data):\n    return 'BUY'\n")
    for exchange in ("XNYS", "XBOM"):
        await hosting.create_deployment(f"sess-{exchange}", strategy="sess", symbols=["SS"], timeframe="1d",
                                        schedule="* * * * * *", session=exchange, overlap="allow")
    await asyncio.sleep(3.5)
    for exchange in ("XNYS", "XBOM"):
        runs = (await hosting.runs(f"sess-{exchange}")).runs
        status = (await hosting.get_deployment(f"sess-{exchange}")).status
        fired = datetime.fromisoformat(status.last_fire.replace("Z", "+00:00"))
        if sessions.is_open(exchange, fired):
            assert runs and all(sessions.is_open(exchange, datetime.fromtimestamp(
                int(r.run_id.rsplit(".fire", 1)[1]) / 1e9, timezone.utc)) for r in runs)
        else:
            assert runs == []  # fired (last_fire is set) but outside its session: nothing ran
        await hosting.delete_deployment(f"sess-{exchange}")


@pytest.mark.parametrize("fields, named", [
    ({"schedule": "* * * * * *", "session": "XNSEE"}, "not an exchange calendar"),
    ({"session": "XNYS"}, "session applies to a schedule only"),
])
async def test_a_bad_session_is_invalid_request_naming_it(nc, nodes, fields, named):
    await HostingClient(nc).put_strategy("sess-bad", "def strategy(data):\n    return 'BUY'\n")
    body = {"id": "sess-bad", "strategy": "sess-bad", "symbols": ["SS"], "timeframe": "1d", **fields}
    msg = await nc.request(f"{subjects.DEPLOYMENTS}.create", msgspec.json.encode(body), timeout=10)
    reply = msgspec.json.decode(msg.data)
    assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST" and named in reply["error"]["message"]
