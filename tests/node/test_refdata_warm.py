"""Reference data in a tenant's warm worker: a run cannot keep a statement for a later run of
the same worker whose bars end before that statement was published, and a walked backtest of a
warm tenant reads statements exactly as a fresh one does."""

from __future__ import annotations

import uuid

import nats
import numpy as np
import pytest
import pytest_asyncio

from backtest.refdata_records import fact_from_row
from backtest.refdata_store import RefDataStore
from backtest.store import BarStore
from contracts import BarArrays, subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from tests.support import columnar_bars, request_json

N = 120
PUBLISHED = "2024-02-15"

KEEPER = '''
import numpy as np
class Carrier(Exception):
    pass
def hold(values):
    def cb(kind, flag):
        raise Carrier(values)
    with np.errstate(divide='call', call=cb):
        yield 1
        yield 2
def strategy(data):
    kept = None
    try:
        np.divide(np.ones(1), np.zeros(1))
    except Carrier as exc:
        kept = exc.args[0]
    try:
        mine = [float(v) for v in get_financial_statements(SYMBOL, "income", 4)["revenue"]]
    except LookupError:
        mine = None
    if mine is not None:
        g = hold(mine)
        next(g)
        loop = [g]
        loop.append(loop)
    log(repr(kept if kept is not None else mine))
    return "HOLD"
'''

WALKED = '''
def strategy(data):
    try:
        st = get_financial_statements(SYMBOL, "income", 4)
    except LookupError:
        return "HOLD"
    return "BUY"
'''


@pytest_asyncio.fixture(scope="module")
async def warm():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "refdata-warm", "MAX_WORKERS": "2",
                                  "TENANT_WARM_RUNS": "1000", "TENANT_WARM_WORKERS": "1", "TENANT_WARM_MAX": "2",
                                  "TRUST_BODY_USER_ID": "1"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    symbol = "WM" + uuid.uuid4().hex[:6].upper()
    cols = columnar_bars(N, seed=5)
    ts = np.asarray(cols["timestamp"], dtype=np.int64) * 1_000_000
    await BarStore(conn.jetstream()).load(symbol, "1d", BarArrays.from_numpy(
        ts, **{k: np.asarray(cols[k]) for k in ("open", "high", "low", "close", "volume")}))
    await RefDataStore(conn.jetstream()).load_facts("statements", [fact_from_row("statements", {
        "symbol": symbol, "statement_type": "income", "period_end": "2023-12-31", "published": PUBLISHED,
        "revenue": 1000}, "test")])
    yield node, conn, symbol, cols
    await conn.drain()
    await node.stop()
    server.close()


def warm_pids(node, tenant: str):
    for key, pids in node.pool.warm_children().items():
        if key == tenant or (isinstance(key, tuple) and key and key[-1] == tenant):
            return pids
    return None


async def test_a_warm_workers_later_run_cannot_read_a_statement_an_earlier_run_was_handed(warm):
    node, nc, symbol, cols = warm
    tenant = "keeper-" + uuid.uuid4().hex[:6]
    code = KEEPER.replace("SYMBOL", repr(symbol))
    first = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": cols, "symbol": symbol,
                                                      "timeframe": "1d", "user_id": tenant}, timeout=30)
    assert first["success"] is True, first["error"]
    assert first["logs"][-1] == "[1000.0]"  # all 120 bars: the statement is known by the last one
    pids = warm_pids(node, tenant)
    assert pids
    early = {k: v[:40] for k, v in cols.items()}  # ends 2024-02-09, before the publication
    second = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": early, "symbol": symbol,
                                                       "timeframe": "1d", "user_id": tenant}, timeout=30)
    assert warm_pids(node, tenant) == pids  # the same process served both
    assert second["success"] is True, second["error"]
    assert second["logs"][-1] == "None"


async def test_a_warm_tenants_walked_backtest_reads_statements_as_a_fresh_one_does(warm):
    node, nc, symbol, _ = warm
    body = {"code": WALKED.replace("SYMBOL", repr(symbol)), "source": {"symbol": symbol, "timeframe": "1d"},
            "timeout_ms": 9000}
    fresh = await request_json(nc, subjects.BACKTEST, body, timeout=60)
    assert fresh["success"] is True, fresh["error"]
    assert fresh["signals_count"] == N - 46  # HOLD through 2024-02-15, BUY from 2024-02-16
    tenant = "walker-" + uuid.uuid4().hex[:6]
    for _ in range(2):
        reply = await request_json(nc, subjects.BACKTEST, {**body, "user_id": tenant}, timeout=60)
        assert reply["success"] is True, reply["error"]
        assert (reply["signals_count"], reply["performance"]) == (fresh["signals_count"], fresh["performance"])
    assert warm_pids(node, tenant)
