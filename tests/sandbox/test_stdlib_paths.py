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


# -- warm workers: the same attacks, and nothing a run does to the stdlib reaches the next run --

import nats  # noqa: E402
import pytest_asyncio  # noqa: E402

from node.config import Settings  # noqa: E402
from node.embedded import EmbeddedServer  # noqa: E402
from node.service import Node  # noqa: E402


@pytest_asyncio.fixture(scope="module")
async def warm_node():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "warm-stdlib", "MAX_WORKERS": "2",
                                  "TENANT_WARM_RUNS": "50", "TENANT_WARM_WORKERS": "1",
                                  "TENANT_WARM_MAX": "2", "TRUST_BODY_USER_ID": "true"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    yield node, conn
    await conn.drain()
    await node.stop()
    server.close()


async def warm(nc, code: str, user: str = "tenant-a") -> dict:
    return await request_json(nc, subjects.EXECUTE, {"code": code, "bars": columnar_bars(60), "user_id": user})


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_a_warm_worker_refuses_it_and_serves_the_tenant_after(warm_node, name):
    _, nc = warm_node
    reply = await warm(nc, function(ATTACKS[name], "'HOLD'"), user=f"mallory-{name}")
    assert reply["error"]["code"] == SV, reply["error"]
    after = await warm(nc, "def strategy(data):\n    return 'BUY'\n", user=f"mallory-{name}")
    assert after["success"], after["error"]


async def test_a_warm_workers_random_draws_differ_from_run_to_run(warm_node):
    node, nc = warm_node
    code = "import random\ndef strategy(data):\n    log(random.getrandbits(64))\n    return 'HOLD'\n"
    draws = [(await warm(nc, code, user="dice"))["logs"][0] for _ in range(3)]
    assert len(set(draws)) == 3
    assert len([t for t in node.pool.warm_children() if t.user_id == "dice"]) == 1  # one worker served all


async def test_talib_abstract_settings_of_one_warm_run_do_not_reach_the_next(warm_node):
    _, nc = warm_node
    tamper = ("from talib import abstract\ndef strategy(data):\n    f = abstract.Function('SMA')\n"
              "    f.set_parameters(timeperiod=3)\n    return 'HOLD'\n")
    check = ("from talib import abstract\ndef strategy(data):\n"
             "    log(round(float(abstract.SMA(data).iloc[-1]) - float(data['close'].iloc[-30:].mean()), 9))\n"
             "    return 'HOLD'\n")
    assert (await warm(nc, tamper, user="ta"))["success"]
    reply = await warm(nc, check, user="ta")
    assert reply["success"], reply["error"]
    assert reply["logs"] == ["0.0"]
