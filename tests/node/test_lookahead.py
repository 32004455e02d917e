"""Look-ahead through NATS: a walked strategy cannot see a bar after its own, wherever it hides it.

A strategy that returns one signal per call is walked: bar i's signal comes from a call on bars
0..i. Before the walk, one call on every bar (the probe) tells a per-bar strategy from a
vectorized one. Each attack below plants the whole close series somewhere on its first call and
looks for it on later calls; with it, a call would trade bar i on bar i+1's close. Without it,
the attack falls back to the honest rule. So every attack must give exactly the honest
strategy's reply (same signal count, same metrics to the last digit), on every path that walks:
single backtests, sweeps, warm workers, durable jobs. A hiding place the sandbox refuses
outright (a SECURITY_VIOLATION) is listed with that code instead.

`test_the_attacks_profit_when_handed_the_future` shows that the check can fail: given the
series in its parameters, the same code does beat the honest rule.
"""

from __future__ import annotations

import asyncio
import uuid

import msgspec
import nats
import pytest
import pytest_asyncio

from contracts import subjects
from node import jobs_client
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from tests.support import columnar_bars, request_json

BARS = columnar_bars(90, seed=23)

TAIL = '''
def honest(data):
    c = data['close']
    if len(c) < 2:
        return 'HOLD'
    return 'BUY' if c.iloc[-1] < c.iloc[-2] else 'SELL'


def strategy(data, params):
    fut = leak(data, params)
    i = len(data) - 1
    if fut is not None and len(fut) > i + 1:
        return 'BUY' if fut[i + 1] > fut[i] else 'SELL'
    return honest(data)
'''

HONEST = "def leak(data, params):\n    return None\n" + TAIL

#: name -> (code defining `leak(data, params)`, extra parameters, expected error code or None)
HIDING_PLACES: dict[str, tuple[str, dict, str | None]] = {
    "params": ('''
def leak(data, params):
    if 'fut' not in params:
        params['fut'] = list(data['close'])
    return params['fut']
''', {}, None),
    "a list nested in params": ('''
def leak(data, params):
    box = params['box']
    if not box:
        box.append(list(data['close']))
    return box[0]
''', {"box": []}, None),
    "a dict nested in params": ('''
def leak(data, params):
    box = params['box']
    if 'fut' not in box:
        box['fut'] = list(data['close'])
    return box['fut']
''', {"box": {"x": 1}}, None),
    "the parameters alias": ('''
def leak(data, params):
    if 'fut' not in parameters:
        parameters['fut'] = list(data['close'])
    return parameters['fut']
''', {}, None),
    "module global list": ('''
STASH = []
def leak(data, params):
    if not STASH:
        STASH.append(list(data['close']))
    return STASH[0]
''', {}, None),
    "global statement": ('''
FUT = None
def leak(data, params):
    global FUT
    if FUT is None:
        FUT = list(data['close'])
    return FUT
''', {}, None),
    "default argument": ('''
def leak(data, params, box=[]):
    if not box:
        box.append(list(data['close']))
    return box[0]
''', {}, None),
    "closure": ('''
def make():
    box = []
    def inner(data, params):
        if not box:
            box.append(list(data['close']))
        return box[0]
    return inner
leak = make()
''', {}, None),
    "class attribute": ('''
class Box:
    store = []
def leak(data, params):
    if not Box.store:
        Box.store.append(list(data['close']))
    return Box.store[0]
''', {}, None),
    "instance attribute": ('''
class Box:
    pass
BOX = Box()
def leak(data, params):
    if getattr(BOX, 'fut', None) is None:
        BOX.fut = list(data['close'])
    return BOX.fut
''', {}, None),
    "suspended generator in module state": ('''
def keeper(values):
    while True:
        yield values
HELD = []
def leak(data, params):
    if not HELD:
        HELD.append(keeper(list(data['close'])))
    return next(HELD[0])
''', {}, None),
    "suspended generator in params": ('''
def keeper(values):
    while True:
        yield values
def leak(data, params):
    if 'g' not in params:
        params['g'] = keeper(list(data['close']))
    return next(params['g'])
''', {}, None),
    "exception kept alive": ('''
class Carrier(Exception):
    pass
HELD = []
def leak(data, params):
    if not HELD:
        try:
            raise Carrier(list(data['close']))
        except Carrier as exc:
            HELD.append(exc)
    return HELD[0].args[0]
''', {}, None),
    "numpy error callback in a suspended generator": ('''
import numpy as np
class Carrier(Exception):
    pass
def hold(values):
    def cb(kind, flag):
        raise Carrier(values)
    with np.errstate(divide='call', call=cb):
        yield 1
        yield 2
def leak(data, params):
    try:
        np.divide(np.ones(1), np.zeros(1))
    except Carrier as exc:
        return exc.args[0]
    g = hold(list(data['close']))
    next(g)
    loop = [g]
    loop.append(loop)  # cyclic garbage: outlives this call until the collector runs
    return None
''', {}, None),
    "numpy error callback that signals later bars": ('''
import numpy as np
def hold(fn):
    with np.errstate(divide='call', call=fn):
        yield 1
        yield 2
def leak(data, params):
    try:
        np.divide(np.ones(1), np.zeros(1))  # runs a callback an earlier call left installed
    except Exception:
        pass
    c = list(data['close'])
    def mark(kind, flag):
        for j in range(len(c) - 1):
            signal('BUY' if c[j + 1] > c[j] else 'SELL', at=j)
    g = hold(mark)
    next(g)
    loop = [g]
    loop.append(loop)
    return None
''', {}, None),
    "signal() rewriting an earlier bar": ('''
def leak(data, params):
    c = data['close']
    if len(c) >= 2:
        try:
            signal('BUY' if c.iloc[-1] > c.iloc[-2] else 'SELL', at=len(c) - 2)
        except Exception:
            pass
    return None
''', {}, None),
    "pandas frame attrs": ('''
def leak(data, params):
    if 'fut' not in data.attrs:
        data.attrs['fut'] = list(data['close'])
    return data.attrs['fut']
''', {}, None),
    "pandas index name": ('''
def leak(data, params):
    name = data.index.name
    if isinstance(name, tuple):
        return list(name)
    data.index.name = tuple(data['close'])
    return None
''', {}, None),
    "pandas columns name": ('''
def leak(data, params):
    name = data.columns.name
    if isinstance(name, tuple):
        return list(name)
    data.columns.name = tuple(data['close'])
    return None
''', {}, None),
    "numpy dtype metadata": ('''
import numpy as np
def leak(data, params):
    meta = np.dtype('float64').metadata
    if meta:
        return meta['fut']
    return None
''', {}, None),
    "function attribute": ('''
def leak(data, params):
    fut = getattr(strategy, 'fut', None)
    if fut is None:
        strategy.fut = list(data['close'])
    return fut
''', {}, "SECURITY_VIOLATION"),
    "module proxy attribute": ('''
import numpy as np
def leak(data, params):
    fut = getattr(np, 'fut', None)
    if fut is None:
        np.fut = list(data['close'])
    return fut
''', {}, "SECURITY_VIOLATION"),
    "library class attribute": ('''
import pandas as pd
def leak(data, params):
    pd.Series.fut = list(data['close'])
    return None
''', {}, "SECURITY_VIOLATION"),
    "strategy API module": ('''
import strategy_api
def leak(data, params):
    strategy_api.fut = list(data['close'])
    return None
''', {}, "SECURITY_VIOLATION"),
}

NAMES = sorted(HIDING_PLACES)


def attack(name: str) -> tuple[str, dict, str | None]:
    code, params, refused = HIDING_PLACES[name]
    return code + TAIL, params, refused


def body(code: str, parameters: dict, **extra) -> dict:
    return {"code": code, "bars": BARS, "parameters": parameters, "timeout_ms": 9000, **extra}


def same_as_honest(reply: dict, honest: dict, refused: str | None) -> None:
    if refused is not None:
        assert reply["success"] is False and reply["error"]["code"] == refused, reply["error"]
        return
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == honest["signals_count"]
    assert reply["performance"] == honest["performance"]


@pytest_asyncio.fixture(scope="module")
async def honest(nc) -> dict:
    reply = await request_json(nc, subjects.BACKTEST, body(HONEST, {}), timeout=30)
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] > 0
    return reply


async def test_the_attacks_profit_when_handed_the_future(nc, honest):
    code, _, _ = attack("params")
    reply = await request_json(nc, subjects.BACKTEST, body(code, {"fut": BARS["close"]}), timeout=30)
    assert reply["success"] is True, reply["error"]
    assert reply["performance"]["win_rate"] > honest["performance"]["win_rate"]
    assert reply["performance"]["total_return"] > honest["performance"]["total_return"]


@pytest.mark.parametrize("name", NAMES)
async def test_a_walked_backtest_cannot_see_a_later_bar_through(nc, honest, name):
    code, params, refused = attack(name)
    reply = await request_json(nc, subjects.BACKTEST, body(code, params), timeout=30)
    same_as_honest(reply, honest, refused)


@pytest_asyncio.fixture(scope="module")
async def honest_row(nc) -> dict:
    """The honest strategy's metrics as a sweep row carries them (no trades, no equity curve)."""
    reply = await request_json(nc, subjects.BACKTEST, body(HONEST, {}, options=ROW_OPTIONS), timeout=30)
    assert reply["success"] is True, reply["error"]
    return reply["performance"]


ROW_OPTIONS = {"max_trades": 0, "equity_points": 0}


@pytest.mark.parametrize("name", NAMES)
async def test_a_walked_sweep_cannot_see_a_later_bar_through(nc, honest_row, name):
    code, params, refused = attack(name)
    reply = await request_json(nc, subjects.BACKTEST, body(code, params, grid={"k": [1, 2, 3]}), timeout=60)
    rows = reply["sweep"]
    assert len(rows) == 3
    for row in rows:
        if refused is not None:
            assert row["error"]["code"] == refused, row
        else:
            assert row["error"] is None, row["error"]
            assert row["performance"] == honest_row


@pytest.mark.parametrize("name", ["params", "a list nested in params",
                                  "numpy error callback in a suspended generator"])
async def test_a_walked_durable_job_cannot_see_a_later_bar_through(nc, honest, name):
    code, params, refused = attack(name)
    job_id = await jobs_client.submit(nc, "backtest", body(code, params))
    result = await jobs_client.result(nc, job_id, wait=30)
    assert result is not None, "the durable job produced no result"
    assert result.success is True, result.error
    assert result.signals_count == honest["signals_count"]
    assert msgspec.to_builtins(result.performance) == honest["performance"]


# -- warm workers -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def warm():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "lookahead-warm", "MAX_WORKERS": "2",
                                  "TENANT_WARM_RUNS": "1000", "TENANT_WARM_WORKERS": "1",
                                  "TENANT_WARM_MAX": "2",
                                  # requests here come from the node's own account: the body's
                                  # user_id names the tenant only on a node told to trust it
                                  "TRUST_BODY_USER_ID": "1"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    yield node, conn
    await conn.drain()
    await node.stop()
    server.close()


@pytest.mark.parametrize("name", NAMES)
async def test_a_walked_backtest_in_a_warm_worker_cannot_see_a_later_bar_through(warm, honest, name):
    node, nc = warm
    tenant = "walker"
    code, params, refused = attack(name)
    reply = await request_json(nc, subjects.BACKTEST, body(code, params, user_id=tenant), timeout=30)
    same_as_honest(reply, honest, refused)


VECTOR_LEAK = '''
import numpy as np
class Carrier(Exception):
    pass
def hold(values):
    def cb(kind, flag):
        raise Carrier(values)
    with np.errstate(divide='call', call=cb):
        yield 1
        yield 2
def strategy(data, params):
    fut = None
    try:
        np.divide(np.ones(1), np.zeros(1))
    except Carrier as exc:
        fut = exc.args[0]
    c = data['close'].to_numpy()
    g = hold(list(c))
    next(g)
    loop = [g]
    loop.append(loop)
    honest = np.sign(np.concatenate([[0.0], c[:-1] - c[1:]]))
    if fut is not None and len(fut) > len(c):
        ahead = np.array(fut[1:len(c) + 1])
        return np.sign(ahead - c)
    return honest
'''

VECTOR_HONEST = '''
import numpy as np
def strategy(data, params):
    c = data['close'].to_numpy()
    return np.sign(np.concatenate([[0.0], c[:-1] - c[1:]]))
'''


def warm_pids(node, tenant: str) -> list[int] | None:
    """The pids of `tenant`'s warm workers (keyed by the tenant name, or by an identity whose
    last part is the body's user_id on a node that trusts it), None if it has none."""
    for key, pids in node.pool.warm_children().items():
        if key == tenant or (isinstance(key, tuple) and key and key[-1] == tenant):
            return pids
    return None


def prefix(bars: dict, n: int) -> dict:
    return {k: v[:n] for k, v in bars.items()}


@pytest.mark.parametrize("subject", [subjects.BACKTEST, subjects.EXECUTE])
async def test_a_warm_workers_later_run_on_fewer_bars_cannot_read_an_earlier_runs_bars(warm, subject):
    """Same tenant, same worker: run 1 sees 90 bars and leaves its series behind a numpy error
    callback; run 2 sees the first 60 and must match the honest strategy on those 60."""
    node, nc = warm
    tenant = "vector-" + uuid.uuid4().hex[:6]
    first = await request_json(nc, subject, {"code": VECTOR_LEAK, "bars": BARS, "user_id": tenant})
    assert first["success"] is True, first["error"]
    pids = warm_pids(node, tenant)
    assert pids
    short = prefix(BARS, 60)
    second = await request_json(nc, subject, {"code": VECTOR_LEAK, "bars": short, "user_id": tenant})
    assert warm_pids(node, tenant) == pids  # the same process served both
    honest = await request_json(nc, subject, {"code": VECTOR_HONEST, "bars": short})
    assert second["success"] is True, second["error"]
    assert second["performance"] == honest["performance"]
    assert second.get("signals") == honest.get("signals")
    assert second.get("signals_count") == honest.get("signals_count")


async def test_every_walked_backtest_of_a_warm_tenant_matches_a_fresh_one(warm, honest):
    node, nc = warm
    tenant = "serial-walker"
    code, params, _ = attack("numpy error callback in a suspended generator")
    replies = await asyncio.gather(*(request_json(nc, subjects.BACKTEST, body(code, params, user_id=tenant),
                                                  timeout=60) for _ in range(4)))
    for reply in replies:
        same_as_honest(reply, honest, None)
    assert warm_pids(node, tenant)  # the probes ran in the tenant's warm worker


@pytest.mark.parametrize("subject", [subjects.BACKTEST, subjects.EXECUTE])
async def test_a_later_run_on_fewer_bars_cannot_read_an_earlier_runs_bars(nc, subject):
    """Without warm workers every run has a fresh process: the same two requests as above."""
    first = await request_json(nc, subject, {"code": VECTOR_LEAK, "bars": BARS})
    assert first["success"] is True, first["error"]
    short = prefix(BARS, 60)
    second = await request_json(nc, subject, {"code": VECTOR_LEAK, "bars": short})
    honest = await request_json(nc, subject, {"code": VECTOR_HONEST, "bars": short})
    assert second["success"] is True, second["error"]
    assert second["performance"] == honest["performance"]
    assert second.get("signals") == honest.get("signals")
