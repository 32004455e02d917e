"""The standard-library attacks on every path, not only execute: vectorized and walked backtests,
sweeps, screens and durable jobs compile and run the same guarded code, and each must refuse
the same attacks with SECURITY_VIOLATION."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from backtest.store import BarStore
from contracts import BarArrays, subjects
from node import jobs_client
from tests.support import DAY_MS, START_MS, columnar_bars, request_json

SV = "SECURITY_VIOLATION"

pytestmark = pytest.mark.usefixtures("node")

ATTACKS = {
    "attrgetter": "import operator\n    leak = operator.attrgetter('__class__')(data)",
    "partial-getattr": "import functools\n    leak = functools.partial(getattr, data)('__class__')",
    "dataclass-library-class": "import dataclasses\n    dataclasses.dataclass(pd.Timestamp)",
    "match-keyword": "match data:\n        case object(__class__=c):\n            leak = c",
    "random-seed": "import random\n    random.seed(1)",
    "decimal-context": "import decimal\n    decimal.setcontext",
}


def function(attack: str, ret: str) -> str:
    return f"def strategy(data):\n    {attack}\n    return {ret}\n"


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_vectorized_backtest_refuses_it(nc, name):
    reply = await request_json(nc, subjects.BACKTEST, {"code": function(ATTACKS[name], "[0] * len(data)"),
                                                      "bars": columnar_bars(50)})
    assert reply["error"]["code"] == SV, reply["error"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_walked_backtest_refuses_it(nc, name):
    code = ("def strategy(data):\n    if len(data) != 30:  # the probe sees 50 bars: only a walk call reaches the attack\n        return 'HOLD'\n"
            f"    {ATTACKS[name]}\n    return 'BUY'\n")
    reply = await request_json(nc, subjects.BACKTEST, {"code": code, "bars": columnar_bars(50)})
    assert reply["error"]["code"] == SV, reply["error"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_sweep_refuses_it_at_every_point(nc, name):
    code = function(ATTACKS[name], "[0] * len(data)")
    reply = await request_json(nc, subjects.BACKTEST, {"code": code, "bars": columnar_bars(50),
                                                      "grid": {"p": [1, 2, 3]}}, timeout=30)
    if reply.get("sweep"):
        assert {row["error"]["code"] for row in reply["sweep"]} == {SV}
    else:
        assert reply["error"]["code"] == SV, reply["error"]


@pytest.fixture
async def stored_symbol(nc) -> str:
    symbol = "STD" + uuid.uuid4().hex[:6].upper()
    n = 40
    ts = (START_MS + np.arange(n, dtype=np.int64) * DAY_MS) * 1_000_000
    close = np.linspace(100, 120, n)
    await BarStore(nc.jetstream()).load(symbol, "1d", BarArrays.from_numpy(
        ts, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(n)))
    return symbol


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_screen_refuses_it(nc, stored_symbol, name):
    code = f"def classify_symbol(symbol):\n    data = get_price_data(symbol)\n    {ATTACKS[name]}\n    return True\n"
    reply = await request_json(nc, subjects.SCREEN, {"code": code, "symbols": [stored_symbol]}, timeout=30)
    if reply["success"]:
        assert reply["passed"] == []
        assert reply["results"][0]["error"]["code"] == SV, reply["results"][0]
    else:
        assert reply["error"]["code"] == SV, reply["error"]


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_durable_job_refuses_it(nc, name):
    job_id = await jobs_client.submit(nc, "execute", {"code": function(ATTACKS[name], "'HOLD'"),
                                                      "bars": columnar_bars(20)})
    result = await jobs_client.result(nc, job_id, wait=30)
    assert result is not None and result.error is not None
    assert result.error.code == SV, result.error
