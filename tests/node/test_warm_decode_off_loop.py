"""Warm runs: the tenant's worker decodes the request's bars, not the node's event loop (issue 18).

Through NATS on a real node in warm mode (TENANT_WARM_RUNS, TRUST_BODY_USER_ID: the server has
no accounts). The same request bytes sent with a `user_id` (warm worker, bars decoded in the
worker) and without one (fresh child, bars decoded by the node) must get the same reply: every
error code and message, the request id, and the results.
"""

from __future__ import annotations

import json

import msgspec
import numpy as np
import nats
import pytest
import pytest_asyncio

import node.endpoints as endpoints_mod
import node.raw_execute as raw_mod
from contracts import ExecuteRequest, subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from sandbox.pool import SandboxPool
from tests.support import columnar_bars

BUY = "def strategy(data):\n    return 'BUY'\n"
SMA = ("def strategy(data):\n    close = data['close']\n"
       "    above = (close.rolling(5).mean() > close.rolling(20).mean()).astype('int8')\n"
       "    return above.diff().fillna(0)\n")
MSGPACK = {"Content-Type": "application/msgpack"}


@pytest_asyncio.fixture(scope="module")
async def warm_node():
    server = EmbeddedServer().start()
    settings = Settings.from_env({"NATS_URL": server.url, "NODE_ID": "warm-decode", "MAX_WORKERS": "4",
                                  "MAX_TIMEOUT_SECONDS": "10", "MAX_MEMORY_MB": "512",
                                  "TENANT_WARM_RUNS": "1000", "TENANT_WARM_WORKERS": "1",
                                  "TENANT_WARM_MAX": "4", "TRUST_BODY_USER_ID": "true"})
    node = Node(settings, server.url)
    await node.start()
    conn = await nats.connect(server.url)
    yield node, conn
    await conn.drain()
    await node.stop()
    server.close()


def _encode(body: dict, msgpack: bool) -> bytes:
    return msgspec.msgpack.encode(body) if msgpack else json.dumps(body).encode()


async def _reply(nc, body: dict, msgpack: bool = False) -> dict:
    msg = await nc.request(subjects.EXECUTE, _encode(body, msgpack), timeout=20,
                           headers=MSGPACK if msgpack else None)
    return msgspec.msgpack.decode(msg.data) if msgpack else json.loads(msg.data)


def _comparable(reply: dict) -> dict:
    return {k: v for k, v in reply.items() if k != "execution_time_ms"}


async def _warm_and_fresh(nc, body: dict, msgpack: bool = False) -> tuple[dict, dict]:
    warm = await _reply(nc, {**body, "user_id": "tenant-decode"}, msgpack)
    fresh = await _reply(nc, body, msgpack)
    return _comparable(warm), _comparable(fresh)


@pytest.fixture
def spies(monkeypatch):
    """Which path a request took: runs of the pool (the job it got) and node-side full decodes."""
    seen = {"decodes": 0, "jobs": []}
    real_decode, real_run = endpoints_mod.decode, SandboxPool.run

    def decode(data, type_, kind="application/json"):
        if type_ is ExecuteRequest:
            seen["decodes"] += 1
        return real_decode(data, type_, kind)

    async def run(self, job, tenant=None):
        seen["jobs"].append((job, tenant))
        return await real_run(self, job, tenant)

    monkeypatch.setattr(endpoints_mod, "decode", decode)
    monkeypatch.setattr(raw_mod, "decode", decode)
    monkeypatch.setattr(SandboxPool, "run", run)
    return seen


def _bars(n: int = 40, **changes) -> dict:
    bars = columnar_bars(n)
    bars.update(changes)
    return bars


# -- the path ------------------------------------------------------------------------------------
@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
async def test_a_warm_request_hands_its_bytes_to_the_worker_undecoded(warm_node, spies, msgpack):
    _, nc = warm_node
    body = {"code": BUY, "bars": _bars(), "user_id": "tenant-path", "request_id": "r-path"}
    reply = await _reply(nc, body, msgpack)
    assert reply["success"] is True and reply["request_id"] == "r-path"
    assert spies["decodes"] == 0  # the node never decoded the whole request
    (job, tenant), = spies["jobs"]
    assert tenant is not None
    assert job.bars is None and job.request == _encode(body, msgpack)
    assert job.request_kind == ("application/msgpack" if msgpack else "application/json")


async def test_a_request_without_a_tenant_is_decoded_by_the_node(warm_node, spies):
    _, nc = warm_node
    reply = await _reply(nc, {"code": BUY, "bars": _bars()})
    assert reply["success"] is True
    assert spies["decodes"] == 1
    (job, tenant), = spies["jobs"]
    assert tenant is None and job.request is None and job.bars is not None and job.bars.count == 40


async def test_a_strategy_reading_reference_data_is_decoded_by_the_node(warm_node, spies):
    _, nc = warm_node
    code = "def strategy(data):\n    get_security_info('X')\n    return 'HOLD'\n"
    await _reply(nc, {"code": code, "bars": _bars(), "user_id": "tenant-ref"})
    assert spies["decodes"] == 1
    assert all(job.request is None for job, _ in spies["jobs"])


# -- the same replies ----------------------------------------------------------------------------
@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("code", [BUY, SMA], ids=["trivial", "sma"])
async def test_results_are_the_same_as_when_the_node_decodes(warm_node, msgpack, code):
    _, nc = warm_node
    warm, fresh = await _warm_and_fresh(nc, {"code": code, "bars": _bars(80), "request_id": "same"}, msgpack)
    assert warm["success"] is True
    assert warm == fresh


async def test_row_bars_give_the_same_result_as_when_the_node_decodes(warm_node):
    _, nc = warm_node
    cols = _bars(30)
    rows = [{k: cols[k][i] for k in cols} for i in range(30)]
    warm, fresh = await _warm_and_fresh(nc, {"code": SMA, "market_data": rows, "symbol": "AAA"})
    assert warm["success"] is True and warm == fresh


def _nested(depth: int) -> list:
    value: list = [1]
    for _ in range(depth):
        value = [value]
    return value


_OK = _bars()
BAD = {
    "a string among the closes": {"code": BUY, "bars": _bars(close=["x"] + _OK["close"][1:])},
    "columns of unequal length": {"code": BUY, "bars": _bars(open=_OK["open"][:-1])},
    "times out of order": {"code": BUY, "bars": _bars(timestamp=[_OK["timestamp"][1], _OK["timestamp"][0]]
                                                      + _OK["timestamp"][2:])},
    "a repeated time": {"code": BUY, "bars": _bars(timestamp=[_OK["timestamp"][0]] + _OK["timestamp"][:-1])},
    "a time out of range": {"code": BUY, "bars": _bars(timestamp=[1e17] + _OK["timestamp"][1:])},
    "an unparseable ISO time": {"code": BUY, "bars": _bars(timestamp=["yesterday"] + _OK["timestamp"][1:])},
    "no bars at all": {"code": BUY, "bars": {"timestamp": [], "open": [], "high": [], "low": [], "close": []}},
    "bars that are a list": {"code": BUY, "bars": [1, 2, 3]},
    "an unknown column": {"code": BUY, "bars": {**_OK, "vwap": _OK["close"]}},
    "bars and market_data both": {"code": BUY, "bars": _OK,
                                  "market_data": [{"timestamp": 1, "open": 1, "high": 1, "low": 1, "close": 1}]},
    "a row with an unknown key": {"code": BUY, "market_data": [
        {"timestamp": 1_600_000_000_000, "open": 1, "high": 1, "low": 1, "close": 1, "vwap": 1}]},
    "rows of two symbols": {"code": BUY, "market_data": [
        {"timestamp": 1_600_000_000_000, "open": 1, "high": 1, "low": 1, "close": 1, "symbol": "A"},
        {"timestamp": 1_600_086_400_000, "open": 1, "high": 1, "low": 1, "close": 1, "symbol": "B"}]},
    "rows of another symbol than the request's": {"code": BUY, "symbol": "A", "market_data": [
        {"timestamp": 1_600_000_000_000, "open": 1, "high": 1, "low": 1, "close": 1, "symbol": "B"}]},
    "no rows": {"code": BUY, "market_data": []},
    "bars null": {"code": BUY, "bars": None},
    "no bars field": {"code": BUY},
    "code that does not compile, with bad bars": {"code": "def strategy(:\n", "bars": _bars(open=[1.0])},
    "code that does not compile": {"code": "def strategy(:\n", "bars": _OK},
    "forbidden code, with bad bars": {"code": "import os\ndef strategy(data):\n    return 'BUY'\n",
                                      "bars": _bars(close=["x"] + _OK["close"][1:])},
    "an unsupported language, with bad bars": {"code": BUY, "language": "ruby", "bars": _bars(open=[1.0])},
    "an unsupported language": {"code": BUY, "language": "ruby", "bars": _OK},
    "a timeout over the node's limit, with bad bars": {"code": BUY, "timeout_ms": 20_000,
                                                       "bars": _bars(open=[1.0])},
    "a timeout over the node's limit": {"code": BUY, "timeout_ms": 20_000, "bars": _OK},
    "memory over the node's limit": {"code": BUY, "memory_mb": 4096, "bars": _OK},
    "an unknown top-level field": {"code": BUY, "bars": _OK, "timout_ms": 5},
    "empty code": {"code": "", "bars": _OK},
    "parameters nested too deep": {"code": BUY, "bars": _OK, "parameters": {"x": _nested(40)}},
    "a strategy that raises": {"code": "def strategy(data):\n    raise ValueError('boom')\n", "bars": _OK},
}


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("case", list(BAD))
async def test_every_error_is_the_same_as_when_the_node_decodes(warm_node, case, msgpack):
    _, nc = warm_node
    warm, fresh = await _warm_and_fresh(nc, {**BAD[case], "request_id": "req-bad"}, msgpack)
    assert warm["success"] is False and warm["error"]["code"] != "INTERNAL"
    assert warm == fresh


async def test_bad_bars_never_reach_the_strategy(warm_node):
    """A worker that refuses the bars runs nothing: the strategy's log never appears."""
    _, nc = warm_node
    code = "def strategy(data):\n    log('ran')\n    return 'BUY'\n"
    reply = await _reply(nc, {"code": code, "bars": _bars(timestamp=[_OK["timestamp"][0]] * 40),
                              "user_id": "tenant-norun"})
    assert reply["error"]["code"] == "INVALID_REQUEST" and reply["logs"] == []


async def test_a_request_not_json_at_all_is_refused_the_same(warm_node):
    _, nc = warm_node
    replies = []
    for data in (b'{"code": "x", "user_id": "t", "bars": {', b"\xff\x00"):
        msg = await nc.request(subjects.EXECUTE, data, timeout=20)
        replies.append(json.loads(msg.data))
    assert all(r["error"]["code"] == "INVALID_REQUEST" for r in replies)


async def test_a_runs_writes_to_its_frame_never_reach_the_next_runs_bars(warm_node):
    """The worker decodes each run's bars after the tenant's earlier runs: what an earlier run
    wrote into its frame must not change what the next run is handed."""
    _, nc = warm_node
    poison = ("def strategy(data):\n    data['close'] = 0.0\n    data.iloc[0, 0] = -1.0\n"
              "    return 'HOLD'\n")
    probe = ("def strategy(data):\n    return {'close': float(data['close'].sum()), "
             "'open0': float(data['open'].iloc[0]), 'n': len(data)}\n")
    bars = _bars(50)
    expected = {"close": float(np.sum(bars["close"])), "open0": bars["open"][0], "n": 50}
    for _ in range(2):
        assert (await _reply(nc, {"code": poison, "bars": bars, "user_id": "tenant-poison"}))["success"]
        for msgpack in (False, True):
            reply = await _reply(nc, {"code": probe, "bars": bars, "user_id": "tenant-poison"}, msgpack)
            assert reply["success"] and reply["result"]["n"] == 50
            assert reply["result"]["close"] == pytest.approx(expected["close"], rel=1e-12)
            assert reply["result"]["open0"] == expected["open0"]


@pytest.mark.parametrize("bomb", [b"[" * 50_000 + b"]" * 50_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000],
                         ids=["arrays", "objects"])
async def test_a_nesting_bomb_in_the_bars_gets_the_same_refusal(warm_node, bomb):
    _, nc = warm_node
    replies = []
    for user in (b'"user_id": "tenant-bomb", ', b""):
        data = b'{' + user + b'"code": "def strategy(data):\\n    return 1\\n", "bars": ' + bomb + b"}"
        msg = await nc.request(subjects.EXECUTE, data, timeout=20)
        replies.append(_comparable(json.loads(msg.data)))
    assert replies[0]["error"]["code"] == "INVALID_REQUEST"
    assert replies[0] == replies[1]
