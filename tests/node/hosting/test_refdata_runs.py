"""Hosted runs get the reference-data accessors, point in time at the trigger's bar (issue 19)."""

from __future__ import annotations

import msgspec
import pandas as pd
import pytest

from backtest.refdata_records import fact_from_row
from backtest.refdata_store import RefDataStore
from backtest.store import BarStore
from node.hosting.client import HostingClient

from .support import arrays, bar_range, one_bar, stream_msgs, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

READS_FUNDAMENTALS = """
def strategy(data):
    pe = get_fundamental_data("RF1", ["pe_ratio"])["pe_ratio"]
    print(str(data.index[-1].date()), pe)
    return "BUY" if pe < 20 else "HOLD"
"""


def _day(full, i: int) -> str:
    return str(pd.Timestamp(int(full.column("timestamp")[i]), unit="ns").date())


async def test_a_hosted_run_reads_only_the_fundamentals_known_by_its_bar(nc, nodes):
    full = arrays(20, seed=5)
    bars = BarStore(nc.jetstream(), nc)
    await bars.load("RF1", "1d", bar_range(full, 0, 10))
    refdata = RefDataStore(nc.jetstream())
    await refdata.load_facts("fundamentals", [
        fact_from_row("fundamentals", {"symbol": "RF1", "known_date": _day(full, 0), "pe_ratio": 30}, "t"),
        # known at the end of bar 12's day: bars 10..12 must not see it, bars 13.. must
        fact_from_row("fundamentals", {"symbol": "RF1", "known_date": _day(full, 12), "pe_ratio": 11}, "t"),
    ])
    hosting = HostingClient(nc)
    await hosting.put_strategy("fundamental", READS_FUNDAMENTALS)
    await hosting.create_deployment("rf", strategy="fundamental", symbols=["RF1"], timeframe="1d", lookback=5)
    for i in range(10, 15):
        await bars.load("RF1", "1d", one_bar(full, i))
        await wait_for(lambda n=i - 9: _ran(hosting, n))
    runs = (await hosting.runs("rf", limit=100)).runs
    assert [r.status for r in runs] == ["ok"] * 5, [r.error for r in runs]
    logs = await stream_msgs(nc.jetstream(), "STRATEGY_LOGS", "strategy.logs.local.rf")
    lines = sorted(line.strip() for m in logs for line in msgspec.json.decode(m.data)["lines"])
    assert lines == sorted([f"{_day(full, i)} 30.0" for i in (10, 11, 12)] +
                           [f"{_day(full, i)} 11.0" for i in (13, 14)])
    signalled = sorted(r.bar_time[:10] for r in runs if r.signal is not None)
    assert signalled == [_day(full, 13), _day(full, 14)]


async def _ran(hosting, n: int) -> bool:
    return len((await hosting.runs("rf", limit=100)).runs) >= n
