"""Per-day windows of schedules (`window`: start and stop times, weekdays, in the schedule's zone),
alone and with a trading session: on a fixed clock, then through a real nats-server and node."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest

from backtest.store import BarStore
from contracts import subjects
from contracts.hosting import Deployment
from contracts.schedule import parse_window
from node.hosting import firetimes
from node.hosting.client import HostingClient

from .support import arrays, wait_for

IST = ZoneInfo("Asia/Kolkata")
NY = ZoneInfo("America/New_York")


def dep(**fields) -> Deployment:
    return Deployment(id="w", strategy="s", version=1, symbols=["A"], timeframe="1m", lookback=5, **fields)


# -- on a fixed clock -------------------------------------------------------------------------

@pytest.mark.parametrize("moment, taken", [
    (datetime(2026, 12, 1, 9, 20, tzinfo=IST), True),      # the window's start is inside
    (datetime(2026, 12, 1, 9, 15, tzinfo=IST), False),     # the session is open, the window not yet
    (datetime(2026, 12, 1, 15, 10, tzinfo=IST), False),    # the stop is outside
    (datetime(2026, 12, 1, 15, 9, 59, tzinfo=IST), True),
    (datetime(2026, 12, 5, 11, 0, tzinfo=IST), False),     # a Saturday: not a window day
])
def test_a_fire_is_taken_only_inside_the_window_on_its_weekdays(moment, taken):
    d = dep(schedule="0 */5 * * * *", tz="Asia/Kolkata", window="MON-FRI 09:20-15:10")
    assert (firetimes.refusal(d, moment) is None) is taken


def test_a_window_with_a_session_also_skips_the_exchanges_holidays():
    d = dep(schedule="0 */5 * * * *", tz="Asia/Kolkata", window="09:20-15:10", session="XNSE")
    reason = firetimes.refusal(d, datetime(2026, 10, 2, 11, 0, tzinfo=IST))  # Gandhi Jayanti, in the window
    assert reason is not None and "XNSE is closed" in reason
    assert firetimes.refusal(d, datetime(2026, 12, 1, 11, 0, tzinfo=IST)) is None


def test_a_window_with_a_session_follows_an_early_close():
    # the day after Thanksgiving XNYS closes at 13:00, inside the 09:30-16:00 window
    d = dep(schedule="0 */5 * * * *", tz="America/New_York", window="09:30-16:00", session="XNYS")
    assert firetimes.refusal(d, datetime(2026, 11, 27, 12, 55, tzinfo=NY)) is None
    assert "XNYS is closed" in firetimes.refusal(d, datetime(2026, 11, 27, 13, 30, tzinfo=NY))
    assert firetimes.next_fire(d, datetime(2026, 11, 27, 12, 55, tzinfo=NY)) == datetime(2026, 11, 30, 9, 30,
                                                                                         tzinfo=NY)


def test_a_window_is_in_the_schedules_zone():
    d = dep(schedule="@every 1m", tz="America/New_York", window="09:30-16:00")
    assert firetimes.refusal(d, datetime(2026, 12, 1, 14, 30, tzinfo=timezone.utc)) is None  # 09:30 New York
    assert "outside the window 09:30-16:00 (America/New_York)" in firetimes.refusal(
        d, datetime(2026, 12, 1, 9, 30, tzinfo=timezone.utc))


def test_the_next_fire_jumps_over_the_night_to_the_windows_start():
    d = dep(schedule="0 */5 9-15 * * MON-FRI", tz="Asia/Kolkata", window="09:20-15:10", session="XNSE")
    after = datetime(2026, 12, 1, 15, 6, tzinfo=IST)
    assert firetimes.next_fire(d, after) == datetime(2026, 12, 2, 9, 20, tzinfo=IST)


def test_the_next_fire_skips_a_weekend_and_a_holiday_inside_the_window():
    d = dep(schedule="0 0 * * * *", tz="America/New_York", window="10:00-12:00", session="XNYS")
    after = datetime(2026, 12, 24, 12, 30, tzinfo=NY)  # Thursday; Friday 25th is Christmas
    assert firetimes.next_fire(d, after) == datetime(2026, 12, 28, 10, 0, tzinfo=NY)


def test_the_next_fire_of_an_every_keeps_its_cadence_inside_the_window():
    d = dep(schedule="@every 7s", tz="Asia/Kolkata", window="MON-FRI 09:20-15:10")
    anchor = datetime(2026, 12, 5, 10, 0, 3, tzinfo=IST)  # a Saturday
    fire = firetimes.next_fire(d, anchor, anchor=anchor)
    assert fire.astimezone(IST).date().isoformat() == "2026-12-07"  # Monday
    assert (fire - anchor).total_seconds() % 7 == 0 and fire.astimezone(IST).time().isoformat() >= "09:20:00"
    assert (fire - timedelta(seconds=7)).astimezone(IST).time().isoformat() < "09:20:00"


@pytest.mark.parametrize("text, spans, days", [
    ("09:20-15:10", ((9 * 3600 + 1200, 15 * 3600 + 600),), set(range(7))),
    ("mon-fri 09:20-15:10", ((9 * 3600 + 1200, 15 * 3600 + 600),), {0, 1, 2, 3, 4}),
    ("MON,WED 10:00-11:00,14:00-15:00", ((36000, 39600), (50400, 54000)), {0, 2}),
    ("SAT-SUN 22:00-24:00", ((79200, 86400),), {5, 6}),
])
def test_window_forms(text, spans, days):
    window = parse_window(text)
    assert window.spans == spans and window.days == days


# -- through a real server and node -----------------------------------------------------------

pytestmark_async = pytest.mark.asyncio(loop_scope="module")
NODE_NAMES = ("host-a",)  # one node takes every fire (two-node fires: test_schedules.py)


def _zone_away_from_midnight() -> str:
    """A zone whose clock is at least 10 minutes from midnight now (windows do not cross it)."""
    for name in ("UTC", "Asia/Kolkata", "America/New_York"):
        local = datetime.now(ZoneInfo(name))
        if 10 <= local.hour * 60 + local.minute <= 24 * 60 - 10:
            return name
    return "Asia/Tokyo"


def _window_around_now(tz: str, inside: bool) -> str:
    local = datetime.now(ZoneInfo(tz))
    if inside:
        start, stop = local - timedelta(minutes=2), local + timedelta(minutes=5)
    else:  # later today: every fire now is outside
        start, stop = local + timedelta(minutes=6), local + timedelta(minutes=8)
        if stop.date() != local.date():
            start, stop = local - timedelta(minutes=8), local - timedelta(minutes=6)
    return f"{start:%H:%M}-{stop:%H:%M}"


@pytestmark_async
async def test_fires_outside_the_window_are_skipped_and_counted_inside_ones_run(nc, nodes):
    hosting = HostingClient(nc)
    await BarStore(nc.jetstream(), nc).load("WIN", "1d", arrays(30, seed=5))
    await hosting.put_strategy("win", "def strategy(data):\n    return 'BUY'\n")
    tz = _zone_away_from_midnight()
    inside, outside = _window_around_now(tz, True), _window_around_now(tz, False)
    await hosting.create_deployment("win-in", strategy="win", symbols=["WIN"], timeframe="1d",
                                    schedule="* * * * * *", tz=tz, window=inside, overlap="allow")
    created = await hosting.create_deployment("win-out", strategy="win", symbols=["WIN"], timeframe="1d",
                                              schedule="@every 1s", tz=tz, window=outside)
    # before any fire: the next one is the window's start, in the schedule's zone
    start = outside.split("-")[0]
    assert created.status.next_fire is not None and f"T{start}:" in created.status.next_fire

    async def counted():
        status = (await hosting.get_deployment("win-out")).status
        return status if status.fires_outside >= 2 else None

    status = await wait_for(counted, timeout=15)
    assert f"outside the window {outside} ({tz})" in status.fire_note
    assert f"T{start}:" in status.next_fire  # still the window's start, not the server's next second
    assert (await hosting.runs("win-out")).runs == []
    runs = await wait_for(lambda: _runs_at_least(hosting, "win-in", 2), timeout=15)
    assert {r.status for r in runs} == {"ok"}
    assert (await hosting.get_deployment("win-in")).status.fires_outside == 0
    for d in ("win-in", "win-out"):
        await hosting.delete_deployment(d)


async def _runs_at_least(hosting, dep_id, n):
    runs = (await hosting.runs(dep_id)).runs
    return runs if len(runs) >= n else None


@pytestmark_async
async def test_update_sets_and_removes_a_window_and_a_session(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("win-up", "def strategy(data):\n    return 'BUY'\n")
    await hosting.create_deployment("win-up", strategy="win-up", symbols=["WIN"], timeframe="1d",
                                    schedule="0 */5 * * * *", tz="Asia/Kolkata", desired="paused")
    reply = await hosting.update_deployment("win-up", window="MON-FRI 09:20-15:10", session="XNSE")
    assert (reply.deployment.window, reply.deployment.session) == ("MON-FRI 09:20-15:10", "XNSE")
    reply = await hosting.update_deployment("win-up", window="", session="")
    assert (reply.deployment.window, reply.deployment.session) == (None, None)
    await hosting.delete_deployment("win-up")


BASE = {"id": "bad-win", "strategy": "win-bad", "symbols": ["WIN"], "timeframe": "1d"}


@pytestmark_async
@pytest.mark.parametrize("fields, named", [
    ({"window": "09:20-15:10"}, "window applies to a schedule only"),
    ({"schedule": "* * * * * *", "window": "9:20-15:10"}, "window '9:20-15:10'"),
    ({"schedule": "* * * * * *", "window": "15:10-09:20"}, "must stop after it starts"),
    ({"schedule": "* * * * * *", "window": "25:00-26:00"}, "not a time of day"),
    ({"schedule": "* * * * * *", "window": "FRI-MON 09:00-10:00"}, "weekday range goes forward"),
    ({"schedule": "* * * * * *", "window": "XYZ 09:00-10:00"}, "weekdays are MON..SUN"),
    ({"schedule": "@at 2026-12-31T10:00:00Z", "window": "09:00-10:00"}, "window applies to a cron or @every"),
    ({"schedule": "* * * * * *", "window": "SAT-SUN 10:00-11:00", "session": "XNYS"}, "never fires"),
    ({"schedule": "@every 1m", "tz": "Asia/Kolkata"}, "tz applies to a cron schedule only"),
])
async def test_a_bad_window_is_invalid_request_naming_it(nc, nodes, fields, named):
    await HostingClient(nc).put_strategy("win-bad", "def strategy(data):\n    return 'BUY'\n")
    msg = await nc.request(f"{subjects.DEPLOYMENTS}.create", msgspec.json.encode({**BASE, **fields}), timeout=10)
    reply = msgspec.json.decode(msg.data)
    assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST", reply
    assert named in reply["error"]["message"]
    assert "bad-win" not in {v.deployment.id for v in (await HostingClient(nc).list_deployments()).deployments}


@pytestmark_async
@pytest.mark.parametrize("fields, named", [
    ({"window": "09:20-15:10"}, "window applies to a schedule only"),  # the deployment has no schedule
    ({"session": "XNYS"}, "session applies to a schedule only"),
    ({"session": "NOPE"}, "not an exchange calendar"),
    ({"window": "10:00-09:00"}, "must stop after it starts"),
])
async def test_an_update_that_does_not_fit_the_deployment_is_refused_and_changes_nothing(nc, nodes, fields, named):
    hosting = HostingClient(nc)
    await hosting.put_strategy("win-bad", "def strategy(data):\n    return 'BUY'\n")
    await hosting.create_deployment("bar-only", strategy="win-bad", symbols=["WIN"], timeframe="1d", desired="paused")
    try:
        msg = await nc.request(f"{subjects.DEPLOYMENTS}.update", msgspec.json.encode({"id": "bar-only", **fields}),
                               timeout=10)
        reply = msgspec.json.decode(msg.data)
        assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST" and named in reply["error"]["message"]
        dep = (await hosting.get_deployment("bar-only")).deployment
        assert (dep.window, dep.session, dep.schedule) == (None, None, None)
    finally:
        await hosting.delete_deployment("bar-only")
