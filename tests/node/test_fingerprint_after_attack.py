"""Runs that share a process start clean: a poisoning run, then an honest run, whose reply must be
bit-identical to the same honest request in a fresh process.

Two paths run several jobs in one process: a sweep chunk (its grid points, one after another)
and a tenant's warm worker (TENANT_WARM_RUNS). Each poison below leaves something behind in
its process on purpose: an `np.errstate` held open by a suspended generator in cyclic garbage
(all errors raising, or a callback raising attacker-chosen text), a generator whose `finally`
re-arms itself every time the collector finalizes it, a class kept alive by the guards'
caches. The honest strategy trips every floating-point condition (divide, invalid, overflow),
prints arrays, uses talib and pandas, so any of that state would change its reply.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import nats
import pytest
import pytest_asyncio

from contracts import subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from tests.support import columnar_bars, request_json

BARS = columnar_bars(150, seed=31)
ROW_OPTIONS = {"max_trades": 0, "equity_points": 0}

HONEST_BODY = '''
def honest(data):
    close = data['close']
    c = close.to_numpy()
    ratio = np.float64(1.0) / np.float64(0.0)
    logs = np.log(np.zeros(2))
    roots = np.sqrt(-np.ones(2))
    big = np.exp(np.array([1000.0]))
    log('fp', ratio, logs, roots, big, np.array([1.5, 2.25, 1e-9]))
    log('frame', close.head(3).round(4).tolist())
    rsi = talib.RSI(c, 14)
    indicator('rsi', rsi)
    fast = close.rolling(5).mean()
    slow = close.ewm(span=20).mean()
    return np.where(fast > slow, 1, -1) * (np.nan_to_num(rsi) < 80)
'''

HONEST = "import numpy as np\nimport talib\n" + HONEST_BODY + "\ndef strategy(data):\n    return honest(data)\n"

POISONS: dict[str, str] = {
    "errstate raise left open": '''
def poison():
    def arm():
        with np.errstate(all='raise'):
            yield 1
            yield 2
    g = arm()
    next(g)
    loop = [g]
    loop.append(loop)
''',
    "error callback left open": '''
def poison():
    def cb(kind, flag):
        raise ValueError('poisoned by an earlier run: ' + kind)
    def arm():
        with np.errstate(all='call', call=cb):
            yield 1
            yield 2
    g = arm()
    next(g)
    loop = [g]
    loop.append(loop)
''',
    "callback that records later runs": '''
SEEN = []
def poison():
    def cb(kind, flag):
        SEEN.append(kind)
        log('seen', kind)
    def arm():
        with np.errstate(all='call', call=cb):
            yield 1
            yield 2
    g = arm()
    next(g)
    loop = [g, SEEN]
    loop.append(loop)
''',
    "finalizer that re-arms itself": '''
def arm():
    try:
        with np.errstate(all='raise'):
            yield 1
            yield 2
    finally:
        again = arm()
        next(again)
        loop = [again]
        loop.append(loop)
def poison():
    g = arm()
    next(g)
    loop = [g]
    loop.append(loop)
''',
    "class kept by the attribute cache": '''
class Holder:
    blob = list(range(100000))
    def __init__(self):
        self.value = 1
def poison():
    h = Holder()
    h.value
    Holder.blob
    getattr(h, 'value')
''',
}

NAMES = sorted(POISONS)


def poisoned(name: str) -> str:
    """One strategy: the poison when params['mode'] == 'poison', the honest rule otherwise."""
    return ("import numpy as np\nimport talib\n" + HONEST_BODY + POISONS[name]
            + "\ndef strategy(data, params):\n"
              "    if params['mode'] == 'poison':\n"
              "        poison()\n"
              "        return np.zeros(len(data))\n"
              "    return honest(data)\n")


def warm_pids(node, tenant: str) -> list[int] | None:
    """The pids of `tenant`'s warm workers (keyed by the tenant name, or by an identity whose
    last part is the body's user_id on a node that trusts it), None if it has none."""
    for key, pids in node.pool.warm_children().items():
        if key == tenant or (isinstance(key, tuple) and key and key[-1] == tenant):
            return pids
    return None


def fingerprint(reply: dict) -> str:
    keep = ("success", "signals", "indicators", "performance", "result", "logs", "error", "signals_count", "bars")
    return json.dumps({k: reply.get(k) for k in keep}, sort_keys=True)


# -- sweep chunks (the session node) ------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def fresh_row(nc) -> dict:
    reply = await request_json(nc, subjects.BACKTEST,
                               {"code": HONEST, "bars": BARS, "options": ROW_OPTIONS}, timeout=30)
    assert reply["success"] is True, reply["error"]
    return reply["performance"]


@pytest.mark.parametrize("name", NAMES)
async def test_sweep_points_after_a_poisoning_point_match_a_fresh_process(nc, fresh_row, name):
    grid = {"mode": ["poison", "honest-1", "honest-2", "honest-3", "honest-4"]}
    reply = await request_json(nc, subjects.BACKTEST, {"code": poisoned(name), "bars": BARS, "grid": grid},
                               timeout=60)
    rows = {row["parameters"]["mode"]: row for row in reply["sweep"]}
    assert rows["poison"]["error"] is None, rows["poison"]["error"]
    for mode in grid["mode"][1:]:
        assert rows[mode]["error"] is None, rows[mode]["error"]
        assert json.dumps(rows[mode]["performance"], sort_keys=True) == json.dumps(fresh_row, sort_keys=True)


# -- warm workers -------------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module")
async def warm():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "fingerprint-warm", "MAX_WORKERS": "2",
                                  "TENANT_WARM_RUNS": "1000", "TENANT_WARM_WORKERS": "1",
                                  "TENANT_WARM_MAX": "4",
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


@pytest.mark.parametrize("subject", [subjects.EXECUTE, subjects.BACKTEST])
@pytest.mark.parametrize("name", NAMES)
async def test_a_warm_workers_honest_run_after_a_poisoning_run_matches_a_fresh_process(warm, name, subject):
    node, nc = warm
    tenant = "fp-" + uuid.uuid4().hex[:8]
    code = poisoned(name)
    attack = await request_json(nc, subject, {"code": code, "bars": BARS, "user_id": tenant,
                                              "parameters": {"mode": "poison"}}, timeout=30)
    assert attack["success"] is True, attack["error"]
    after = await request_json(nc, subject, {"code": code, "bars": BARS, "user_id": tenant,
                                             "parameters": {"mode": "honest"}}, timeout=30)
    fresh = await request_json(nc, subject, {"code": code, "bars": BARS, "parameters": {"mode": "honest"}},
                               timeout=30)
    assert fresh["success"] is True, fresh["error"]
    assert fingerprint(after) == fingerprint(fresh)


async def test_a_warm_worker_is_reused_after_a_poison_it_can_clean(warm):
    node, nc = warm
    tenant = "reuse-" + uuid.uuid4().hex[:8]
    code = poisoned("error callback left open")
    await request_json(nc, subjects.EXECUTE, {"code": code, "bars": BARS, "user_id": tenant,
                                              "parameters": {"mode": "poison"}})
    pids = warm_pids(node, tenant)
    assert pids
    after = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": BARS, "user_id": tenant,
                                                      "parameters": {"mode": "honest"}})
    assert after["success"] is True, after["error"]
    assert warm_pids(node, tenant) == pids


async def test_a_warm_worker_that_cannot_be_shown_clean_is_retired(warm):
    node, nc = warm
    tenant = "retire-" + uuid.uuid4().hex[:8]
    code = poisoned("finalizer that re-arms itself")
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": BARS, "user_id": tenant,
                                                      "parameters": {"mode": "poison"}})
    assert reply["success"] is True, reply["error"]
    # The reply goes out before the worker scrubs (sandbox/serve.py); its report retires it.
    deadline = time.monotonic() + 5
    while warm_pids(node, tenant) is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert warm_pids(node, tenant) is None  # a kept worker would still be listed (see above)


# -- screens (one fresh child per symbol: a poisoned symbol cannot reach the next) -------------


SCREEN_CODE = '''
import numpy as np
def classify_symbol(symbol):
    if symbol == params['poison']:
        def cb(kind, flag):
            raise ValueError('poisoned by an earlier symbol')
        def arm():
            with np.errstate(all='call', call=cb):
                yield 1
                yield 2
        g = arm()
        next(g)
        loop = [g]
        loop.append(loop)
        return False
    close = get_price_data(symbol)['close'].to_numpy()
    ratio = np.float64(1.0) / np.float64(0.0)
    return {'ratio': str(ratio), 'log0': str(np.log(np.zeros(1))[0]), 'last': float(close[-1]),
            'rising': bool(close[-1] > close[0])}
'''


async def test_screen_symbols_after_a_poisoning_symbol_match_a_fresh_screen(nc):
    import numpy as np

    from backtest.store import BarStore
    from contracts import BarArrays

    tag = uuid.uuid4().hex[:6].upper()
    symbols = [f"PZ{tag}", f"HA{tag}", f"HB{tag}"]
    store = BarStore(nc.jetstream())
    for k, symbol in enumerate(symbols):
        close = 100 + (k - 1) * 0.3 * np.arange(80, dtype=np.float64)
        ts = (1_704_067_200_000 + np.arange(80, dtype=np.int64) * 86_400_000) * 1_000_000
        await store.load(symbol, "1d", BarArrays.from_numpy(ts, open=close, high=close + 1, low=close - 1,
                                                            close=close, volume=np.ones(80)))
    params = {"poison": symbols[0]}
    after = await request_json(nc, subjects.SCREEN, {"code": SCREEN_CODE, "symbols": symbols,
                                                     "parameters": params}, timeout=30)
    fresh = await request_json(nc, subjects.SCREEN, {"code": SCREEN_CODE, "symbols": symbols[1:],
                                                     "parameters": params}, timeout=30)
    assert after["success"] is True and fresh["success"] is True, (after["error"], fresh["error"])
    assert json.dumps(after["results"][1:], sort_keys=True) == json.dumps(fresh["results"], sort_keys=True)
    assert fresh["results"][0]["result"]["ratio"] == "inf"
