"""A scheduled deployment's status shows its next fire from the moment it is created (before the
first fire), after each fire, and not while it is paused; the CLI shows it in `deployments ls`
(NEXT FIRE) and `deployments get`. Checked against the server's own fires and Nats-Schedule-Next."""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta, timezone

import pytest

from backtest.store import BarStore
from node.hosting import firetimes, schedules
from node.hosting.client import HostingClient
from tests.test_readme import run

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
NODE_NAMES = ("host-a",)  # one node takes every fire (two-node fires: test_schedules.py)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


async def _ready(nc) -> HostingClient:
    hosting = HostingClient(nc)
    if not any(s.name == "nf" for s in (await hosting.list_strategies()).strategies):
        await BarStore(nc.jetstream(), nc).load("NF", "1d", arrays(30, seed=23))
        await hosting.put_strategy("nf", "def strategy(data):\n    return 'HOLD'\n")
    return hosting


async def _fired(hosting, dep_id):
    status = (await hosting.get_deployment(dep_id)).status
    return status if status.last_fire else None


async def test_a_cron_shows_its_next_fire_before_the_first_and_the_server_fires_then(nc, nodes):
    hosting = await _ready(nc)
    reply = await hosting.create_deployment("nf-cron", strategy="nf", symbols=["NF"], timeframe="1d",
                                            schedule="*/3 * * * * *", tz="Asia/Kolkata")
    assert reply.status.last_fire is None and reply.status.next_fire.endswith("+05:30")
    promised = firetimes.parse_time(reply.status.next_fire)
    status = await wait_for(lambda: _fired(hosting, "nf-cron"), timeout=10)
    first = firetimes.parse_time(status.last_fire)
    assert abs((first - promised).total_seconds()) < 0.9, (status.last_fire, reply.status.next_fire)
    # after a fire: the same instant the server stamped on it as its next
    fire = await nc.jetstream().get_last_msg(schedules.STREAM, schedules.fires_subject("local", "nf-cron"))
    status = (await hosting.get_deployment("nf-cron")).status
    server_next = firetimes.parse_time(fire.headers[schedules.NEXT])
    ours = firetimes.parse_time(status.next_fire)
    assert ours == server_next or ours == server_next + timedelta(seconds=3)  # a newer fire may be in
    await hosting.delete_deployment("nf-cron")


async def test_an_every_shows_its_next_fire_and_follows_the_servers_cadence(nc, nodes):
    hosting = await _ready(nc)
    before = datetime.now(timezone.utc)
    reply = await hosting.create_deployment("nf-every", strategy="nf", symbols=["NF"], timeframe="1d",
                                            schedule="@every 2s")
    promised = firetimes.parse_time(reply.status.next_fire)
    assert reply.status.next_fire.endswith("Z") and 1.5 <= (promised - before).total_seconds() <= 3.0
    await wait_for(lambda: _fired(hosting, "nf-every"), timeout=10)
    fire = await nc.jetstream().get_last_msg(schedules.STREAM, schedules.fires_subject("local", "nf-every"))
    server_next = firetimes.parse_time(fire.headers[schedules.NEXT])
    ours = firetimes.parse_time((await hosting.get_deployment("nf-every")).status.next_fire)
    assert abs((ours - server_next).total_seconds()) in (0.0, 2.0)
    await hosting.delete_deployment("nf-every")


async def test_a_one_off_at_shows_its_time_then_none_once_it_fired(nc, nodes):
    hosting = await _ready(nc)
    at = (datetime.now(timezone.utc) + timedelta(seconds=2)).replace(microsecond=0)
    text = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    reply = await hosting.create_deployment("nf-at", strategy="nf", symbols=["NF"], timeframe="1d",
                                            schedule=f"@at {text}")
    assert reply.status.next_fire == text
    status = await wait_for(lambda: _fired(hosting, "nf-at"), timeout=10)
    assert status.next_fire is None  # not the server's "purge"
    await hosting.delete_deployment("nf-at")


async def test_a_paused_deployment_shows_no_next_fire_and_resume_brings_it_back(nc, nodes):
    hosting = await _ready(nc)
    reply = await hosting.create_deployment("nf-pause", strategy="nf", symbols=["NF"], timeframe="1d",
                                            schedule="0 0 12 * * *", tz="Europe/London", desired="paused")
    assert reply.status.next_fire is None
    resumed = await hosting.resume("nf-pause")
    assert resumed.status.next_fire is not None and "T12:00:00" in resumed.status.next_fire
    assert (await hosting.pause("nf-pause")).status.next_fire is None
    assert (await hosting.resume("nf-pause")).status.next_fire == resumed.status.next_fire
    assert (await hosting.stop("nf-pause")).status.next_fire is None
    await hosting.delete_deployment("nf-pause")


async def test_an_update_of_the_schedule_moves_the_next_fire(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("nf-move", strategy="nf", symbols=["NF"], timeframe="1d",
                                    schedule="0 0 12 * * *", tz="Europe/London")
    moved = await hosting.update_deployment("nf-move", schedule="0 30 9 * * MON-FRI", tz="America/New_York")
    assert "T09:30:00-05:00" in moved.status.next_fire
    bars = await hosting.update_deployment("nf-move", schedule="")
    assert bars.status.next_fire is None  # back to every new bar
    await hosting.delete_deployment("nf-move")


async def test_the_cli_shows_the_next_fire_in_ls_and_get(server, nc, nodes):
    hosting = await _ready(nc)
    reply = await hosting.create_deployment("nf-cli", strategy="nf", symbols=["NF"], timeframe="1d",
                                            schedule="0 15 9 * * MON-FRI", tz="Asia/Kolkata", desired="paused")
    expected = (await hosting.resume("nf-cli")).status.next_fire
    assert reply.status.next_fire is None and expected.endswith("+05:30")
    await hosting.pause("nf-cli")
    await hosting.update_deployment("nf-cli", catchup_s=60)  # paused: still no next fire
    await hosting.resume("nf-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = server.url
    listing = await run([sys.executable, "-m", "node", "deployments", "ls"], ROOT, env)
    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert "NEXT FIRE" in header
    row = next(r for r in rows if r.startswith("nf-cli "))
    assert row[header.index("NEXT FIRE"):].startswith(expected)
    shown = await run([sys.executable, "-m", "node", "deployments", "get", "nf-cli"], ROOT, env)
    assert f"next fire {expected}" in shown.stdout
    await hosting.delete_deployment("nf-cli")
