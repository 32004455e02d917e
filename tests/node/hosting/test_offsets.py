"""Offsets from a trading session's open or close ("open+5m", "close-10m" with `session`): the
instants on a fixed clock from exchange_calendars data, then the one-off `@at` schedule chain
through a real nats-server and nodes (published at create, the next one after each fire, put
back by a node at start when it is missing)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest

from backtest.store import BarStore
from contracts import subjects
from contracts.hosting import Deployment
from contracts.schedule import parse_offset
from node.config import Settings
from node.hosting import firetimes, schedules, sessions
from node.hosting.client import HostingClient
from node.service import Node

from .support import arrays, wait_for

NY = ZoneInfo("America/New_York")
IST = ZoneInfo("Asia/Kolkata")


def dep(schedule: str, session: str) -> Deployment:
    return Deployment(id="o", strategy="s", version=1, symbols=["A"], timeframe="1m", lookback=5,
                      schedule=schedule, session=session)


# -- on a fixed clock -------------------------------------------------------------------------

def test_open_plus_5m_lands_five_minutes_after_a_normal_days_open():
    fire = firetimes.next_fire(dep("open+5m", "XNYS"), datetime(2026, 12, 1, 8, 0, tzinfo=NY))
    assert fire == datetime(2026, 12, 1, 9, 35, tzinfo=NY)


def test_open_plus_5m_skips_a_holiday():
    # after Thursday 24 December's open: Friday 25th is Christmas, the weekend follows
    fire = firetimes.next_fire(dep("open+5m", "XNYS"), datetime(2026, 12, 24, 10, 0, tzinfo=NY))
    assert fire == datetime(2026, 12, 28, 9, 35, tzinfo=NY)


def test_close_minus_10m_follows_an_early_close():
    # the day after Thanksgiving closes at 13:00, not 16:00
    fire = firetimes.next_fire(dep("close-10m", "XNYS"), datetime(2026, 11, 27, 9, 0, tzinfo=NY))
    assert fire == datetime(2026, 11, 27, 12, 50, tzinfo=NY)
    assert firetimes.next_fire(dep("close-10m", "XNYS"), fire) == datetime(2026, 11, 30, 15, 50, tzinfo=NY)


def test_an_offset_after_todays_instant_is_the_next_sessions():
    fire = firetimes.next_fire(dep("open+5m", "XNYS"), datetime(2026, 12, 1, 9, 35, tzinfo=NY))
    assert fire == datetime(2026, 12, 2, 9, 35, tzinfo=NY)


def test_xnse_names_the_indian_calendar_of_xbom():
    fire = firetimes.next_fire(dep("open+5m", "XNSE"), datetime(2026, 10, 1, 16, 0, tzinfo=IST))
    assert fire == datetime(2026, 10, 5, 9, 20, tzinfo=IST)  # 2 October (Gandhi Jayanti), then the weekend
    assert sessions.is_open("XNSE", datetime(2026, 12, 1, 10, 0, tzinfo=IST))


@pytest.mark.parametrize("text, seconds", [
    ("open", 0), ("open+5m", 300), ("close-10m", -600), ("open+1h30m", 5400), ("close-90s", -90),
])
def test_offset_forms(text, seconds):
    assert parse_offset(text).seconds == seconds and str(parse_offset(text)) in (text, "close-1m30s")


# -- through a real server and nodes ----------------------------------------------------------

pytestmark_async = pytest.mark.asyncio(loop_scope="module")
NODE_NAMES = ("host-a",)  # one node takes every fire (two-node fires: test_schedules.py)


def _at(moment: datetime) -> str:
    return "@at " + moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _ready(nc) -> HostingClient:
    hosting = HostingClient(nc)
    if not any(s.name == "off" for s in (await hosting.list_strategies()).strategies):
        await BarStore(nc.jetstream(), nc).load("OFF", "1d", arrays(30, seed=17))
        await hosting.put_strategy("off", "def strategy(data):\n    return 'BUY'\n")
    return hosting


@pytestmark_async
async def test_create_publishes_the_next_instant_as_a_one_off_at_and_shows_it(nc, nodes):
    hosting = await _ready(nc)
    reply = await hosting.create_deployment("at-open", strategy="off", symbols=["OFF"], timeframe="1d",
                                            schedule="open+5m", session="XNYS")
    expected = sessions.anchor_after("XNYS", "open", 300, datetime.now(timezone.utc))
    held = await schedules.published(nc.jetstream(), "local", "at-open")
    assert held == _at(expected)
    assert reply.status.next_fire == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    await hosting.delete_deployment("at-open")


@pytestmark_async
async def test_a_fire_runs_and_the_node_publishes_the_following_instant(nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("at-close", strategy="off", symbols=["OFF"], timeframe="1d",
                                    schedule="close-10m", session="XNYS")
    # the calendar instant arrives: the server holds it as a one-off @at a second from now
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    await nc.jetstream().publish(schedules.schedule_subject("local", "at-close"), b"", headers={
        "Nats-Schedule": _at(soon), "Nats-Schedule-Target": schedules.fires_subject("local", "at-close")})

    async def ran():
        runs = (await hosting.runs("at-close")).runs
        return runs or None

    runs = await wait_for(ran, timeout=15)
    assert [r.status for r in runs] == ["ok"] and ".fire" in runs[0].run_id
    expected = sessions.anchor_after("XNYS", "close", -600, datetime.now(timezone.utc))

    async def republished():
        return await schedules.published(nc.jetstream(), "local", "at-close") == _at(expected) or None

    await wait_for(republished, timeout=10)
    status = (await hosting.get_deployment("at-close")).status
    assert status.last_fire is not None and status.next_fire == expected.strftime("%Y-%m-%dT%H:%M:%SZ")
    await asyncio.sleep(1.0)
    assert len((await hosting.runs("at-close")).runs) == 1  # one fire, one run
    await hosting.delete_deployment("at-close")


@pytestmark_async
async def test_a_node_starting_puts_back_a_missing_schedule(server, nc, nodes):
    hosting = await _ready(nc)
    await hosting.create_deployment("at-lost", strategy="off", symbols=["OFF"], timeframe="1d",
                                    schedule="open+5m", session="XNSE", desired="paused")
    js = nc.jetstream()
    # as if the node that stored the deployment died before publishing its schedule
    await js.purge_stream(schedules.STREAM, subject=schedules.schedule_subject("local", "at-lost"))
    assert await schedules.published(js, "local", "at-lost") is None
    node = Node(Settings.from_env({"MAX_WORKERS": "1", "NODE_ID": "host-c"}), server.url)
    await node.start()
    try:
        expected = sessions.anchor_after("XNSE", "open", 300, datetime.now(timezone.utc))

        async def back():
            return await schedules.published(js, "local", "at-lost") == _at(expected) or None

        await wait_for(back, timeout=15)
    finally:
        await node.stop()
    await hosting.delete_deployment("at-lost")


@pytestmark_async
@pytest.mark.parametrize("fields, named", [
    ({"schedule": "open+5m"}, "give `session`"),
    ({"schedule": "open+5m", "session": "XNSX"}, "not an exchange calendar"),
    ({"schedule": "open+5m", "session": "XNYS", "tz": "America/New_York"}, "tz does not apply to the offset"),
    ({"schedule": "close-10m", "session": "XNYS", "window": "09:00-10:00"}, "window does not apply to the offset"),
    ({"schedule": "open+13h", "session": "XNYS"}, "at most 12h"),
    ({"schedule": "open+5x", "session": "XNYS"}, "an offset is `open` or `close`"),
])
async def test_a_bad_offset_is_invalid_request_naming_it(nc, nodes, fields, named):
    await _ready(nc)
    body = {"id": "bad-off", "strategy": "off", "symbols": ["OFF"], "timeframe": "1d", **fields}
    msg = await nc.request(f"{subjects.DEPLOYMENTS}.create", msgspec.json.encode(body), timeout=10)
    reply = msgspec.json.decode(msg.data)
    assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST", reply
    assert named in reply["error"]["message"]


@pytestmark_async
async def test_an_offset_schedule_survives_a_server_restart_and_its_chain_goes_on(server, nc, nodes):
    # last in this module: it restarts the module's server (same file store)
    hosting = await _ready(nc)
    await hosting.create_deployment("at-restart", strategy="off", symbols=["OFF"], timeframe="1d",
                                    schedule="open+5m", session="XNYS")
    held = await schedules.published(nc.jetstream(), "local", "at-restart")
    server.stop()
    await asyncio.sleep(1.0)
    server.start()

    async def kept():
        try:
            return await schedules.published(nc.jetstream(), "local", "at-restart") == held or None
        except Exception:  # noqa: BLE001 - the client is reconnecting
            return None

    await wait_for(kept, timeout=20)
    hosting = HostingClient(nc, timeout=20)
    soon = datetime.now(timezone.utc) + timedelta(seconds=1)
    await nc.jetstream().publish(schedules.schedule_subject("local", "at-restart"), b"", headers={
        "Nats-Schedule": _at(soon), "Nats-Schedule-Target": schedules.fires_subject("local", "at-restart")})

    async def ran_and_chained():
        runs = (await hosting.runs("at-restart")).runs
        expected = _at(sessions.anchor_after("XNYS", "open", 300, datetime.now(timezone.utc)))
        return (runs and await schedules.published(nc.jetstream(), "local", "at-restart") == expected) or None

    await wait_for(ran_and_chained, timeout=20)  # the fire ran, and the next open+5m is held again
    await hosting.delete_deployment("at-restart")
