"""Session windows of schedules: exchange_calendars data with a fixed clock, and through a real
nats-server a deployment fires only while its exchange is open."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import msgspec
import pytest

from backtest.store import BarStore
from contracts import subjects
from node.hosting import sessions
from node.hosting.client import HostingClient

from .support import arrays, wait_for

IST = ZoneInfo("Asia/Kolkata")
NY = ZoneInfo("America/New_York")


@pytest.mark.parametrize("exchange, moment, open_", [
    ("XBOM", datetime(2026, 12, 1, 10, 0, tzinfo=IST), True),       # a Tuesday, 10:00 in Mumbai
    ("XBOM", datetime(2026, 12, 1, 9, 0, tzinfo=IST), False),       # before the 09:15 open
    ("XBOM", datetime(2026, 12, 1, 15, 45, tzinfo=IST), False),     # after the 15:30 close
    ("XBOM", datetime(2026, 10, 2, 11, 0, tzinfo=IST), False),      # Gandhi Jayanti: a holiday
    ("XBOM", datetime(2026, 12, 5, 11, 0, tzinfo=IST), False),      # a Saturday
    ("XNYS", datetime(2026, 12, 1, 9, 35, tzinfo=NY), True),        # 5 minutes after the open
    ("XNYS", datetime(2026, 12, 25, 11, 0, tzinfo=NY), False),      # Christmas
    ("XNYS", datetime(2026, 11, 27, 13, 30, tzinfo=NY), False),     # day after Thanksgiving: closed at 13:00
])
def test_a_fire_is_taken_only_while_the_exchange_is_in_session(exchange, moment, open_):
    assert sessions.is_open(exchange, moment) is open_


@pytest.mark.asyncio(loop_scope="module")
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


@pytest.mark.asyncio(loop_scope="module")
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
