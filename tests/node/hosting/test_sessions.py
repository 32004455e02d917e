"""Session windows of schedules on exchange_calendars data, with a fixed clock (the same rule
through a real nats-server: tests/node/hosting/test_schedules.py)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from node.hosting import sessions


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
