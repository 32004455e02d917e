"""Hosted runs are as tight as execute: attacks fail the run with their code, nothing leaks into
signals, state or the next run, and a run never sees a bar after its own."""

from __future__ import annotations

import msgspec
import pytest

from backtest.store import BarStore
from contracts import ErrorCode
from node.hosting.client import HostingClient

from .support import arrays, bar_range, one_bar, stream_msgs, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

SV, RT, OL = ErrorCode.SECURITY_VIOLATION, ErrorCode.RUNTIME_ERROR, ErrorCode.OUTPUT_LIMIT
ATTACKS = {
    "attrgetter-dunder": ("import operator\n    leak = operator.attrgetter('__class__')(data)", SV),
    "methodcaller-writer": ("import operator\n    operator.methodcaller('to_csv', 'x.csv')(data)", SV),
    "reduce-getattr": ("import functools\n    leak = functools.reduce(getattr, ['__class__', '__subclasses__'], data)", SV),
    "setitem-module": ("import operator\n    operator.setitem(np.random, 'x', 1)", SV),
    "fields-library-object": ("import dataclasses\n    leak = dataclasses.fields(data)", SV),
    "state-holds-a-frame": ("state['frame'] = data", RT),
    "state-holds-a-function": ("state['f'] = log", RT),
    "state-too-large": ("state['big'] = 'x' * 70000", OL),
}


def attack(body: str) -> str:
    return f"import numpy as np\n\ndef strategy(data):\n    {body}\n    return 'BUY'\n"


async def test_attacks_fail_their_run_with_their_code_and_publish_nothing(nc, nodes):
    hosting = HostingClient(nc)
    store = BarStore(nc.jetstream(), nc)
    full = arrays(20, seed=41)
    await store.load("ATK", "1d", bar_range(full, 0, 10))
    for i, (name, (body, _code)) in enumerate(sorted(ATTACKS.items())):
        await hosting.put_strategy(f"atk{i}", attack(body))
        await hosting.create_deployment(f"atk{i}", strategy=f"atk{i}", symbols=["ATK"], timeframe="1d", lookback=5,
                                        overlap="allow")
    await store.load("ATK", "1d", one_bar(full, 10))
    for i, (name, (_body, code)) in enumerate(sorted(ATTACKS.items())):
        runs = await wait_for(lambda d=f"atk{i}": _runs(hosting, d))
        (run,) = runs
        assert run.status == "error" and run.error.code == code, (name, run.error)
        assert run.signal is None
        status = (await hosting.get_deployment(f"atk{i}")).status
        assert status.state == "error" and status.last_error.code == code and status.last_error_at
        kv = await nc.jetstream().key_value("DEPLOYMENT_STATE")
        with pytest.raises(Exception):
            await kv.get(f"local.atk{i}.ATK")  # a failed run stores no state
    stored = await stream_msgs(nc.jetstream(), "SIGNALS", "signals.local.>")
    assert not [m for m in stored if m.subject.startswith("signals.local.atk")]


async def _runs(hosting, dep):
    return (await hosting.runs(dep)).runs or None


async def test_a_run_sees_no_bar_after_its_own_even_when_later_bars_are_stored(nc, nodes):
    hosting = HostingClient(nc)
    store = BarStore(nc.jetstream(), nc)
    full = arrays(40, seed=42)
    await store.load("LA1", "1d", bar_range(full, 0, 10))
    code = ("def strategy(data):\n    print(str(data.index[-1]), len(data))\n"
            "    n = 0\n    while n < 200000:\n        n += 1\n    return 'BUY'\n")
    await hosting.put_strategy("peek", code)
    await hosting.create_deployment("peek", strategy="peek", symbols=["LA1"], timeframe="1d", lookback=8,
                                    overlap="allow")
    for i in range(10, 30):  # faster than the runs: later bars are stored before earlier runs start
        await store.load("LA1", "1d", one_bar(full, i))
    runs = await wait_for(lambda: _n_runs(hosting, "peek", 20), timeout=60)
    logs = await stream_msgs(nc.jetstream(), "STRATEGY_LOGS", "strategy.logs.local.peek")
    seen = {}
    for msg in logs:
        body = msgspec.json.decode(msg.data)
        stamp, count = body["lines"][0].split()[:2], None
        seen[body["bar_time"]] = body["lines"][0]
    assert len(seen) == 20
    for bar_time, line in seen.items():
        last, count = line.rsplit(" ", 1)
        assert last.startswith(bar_time[:10]) and int(count) == 8, (bar_time, line)
    assert all(r.status == "ok" for r in runs)


async def _n_runs(hosting, dep, n):
    runs = (await hosting.runs(dep)).runs
    return runs if len(runs) == n else None


async def test_a_failed_run_leaves_the_state_the_last_good_run_stored(nc, nodes):
    hosting = HostingClient(nc)
    store = BarStore(nc.jetstream(), nc)
    full = arrays(20, seed=43)
    await store.load("SP1", "1d", bar_range(full, 0, 10))
    code = ("def strategy(data):\n    state['n'] = state.get('n', 0) + 1\n"
            "    if data.index[-1].day == 12:\n        raise ValueError('the run on the 12th fails')\n    return 'BUY'\n")
    await hosting.put_strategy("counter", code)
    await hosting.create_deployment("counter", strategy="counter", symbols=["SP1"], timeframe="1d", lookback=3)
    for i in (10, 11, 12):
        await store.load("SP1", "1d", one_bar(full, i))
        await wait_for(lambda n=i - 9: _n_runs(hosting, "counter", n))
    kv = await nc.jetstream().key_value("DEPLOYMENT_STATE")
    stored = msgspec.json.decode((await kv.get("local.counter.SP1")).value)
    # run 1 stored n=1; run 2 failed (its n=2 discarded); run 3 started from n=1 and stored n=2
    assert stored["state"] == {"n": 2}
    runs = (await hosting.runs("counter")).runs
    assert [r.status for r in runs] == ["ok", "error", "ok"]
    assert (await hosting.get_deployment("counter")).status.state == "running"
