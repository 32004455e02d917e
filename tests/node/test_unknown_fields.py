"""Every field applies or is refused: a field a request Struct does not declare (a misspelling,
an option sent to a subject that has none, a key nested in bars or a bar source) is refused with
INVALID_REQUEST naming it and where it is, on every path, through a real node, as any client
sends it (JSON and msgpack). Nothing in a request is silently ignored.
"""

from __future__ import annotations

import msgspec
import pytest

from contracts import ErrorCode, subjects
from node import jobs_client
from node.durable import DEAD_STREAM, dead_subject
from tests.support import columnar_bars, request_json, row_bars

FUNC = "def strategy(data):\n    return 'BUY'\n"
VECTOR = ("import numpy as np\n"
          "def strategy(data):\n"
          "    return np.where(data['close'] > data['close'].shift(1), 'BUY', 'SELL')\n")
CLASSIFY = "def classify_symbol(symbol):\n    return True\n"
REF = {"symbol": "UNKNOWNFIELDS", "timeframe": "1d"}


def refused(reply: dict, field: str, at: str = "$") -> None:
    error = reply["error"]
    assert error is not None, reply
    assert error["code"] == ErrorCode.INVALID_REQUEST, error
    assert f"unknown field `{field}` at `{at}`" in error["message"], error["message"]


# (subject, a request that is otherwise valid, the stray field's name, where it sits)
CASES = {
    "execute: options has no meaning there": (
        subjects.EXECUTE, {"code": FUNC, "bars": columnar_bars(10), "options": {"fill": "next_open"}},
        "options", "$"),
    "execute: misspelt timeout_ms": (
        subjects.EXECUTE, {"code": FUNC, "bars": columnar_bars(10), "timout_ms": 100}, "timout_ms", "$"),
    "execute: a key inside bars": (
        subjects.EXECUTE, {"code": FUNC, "bars": {**columnar_bars(10), "vwap": [1.0] * 10}}, "vwap", "$.bars"),
    "execute: a key inside a market_data row": (
        subjects.EXECUTE, {"code": FUNC, "market_data": [*row_bars(5)[:2], {**row_bars(5)[2], "trades": 7}]},
        "trades", "$.market_data[2]"),
    "validate: options": (
        subjects.VALIDATE, {"code": FUNC, "options": {}}, "options", "$"),
    "validate: parameters has no meaning there": (
        subjects.VALIDATE, {"code": FUNC, "parameters": {"n": 1}}, "parameters", "$"),
    "backtest: misspelt grid": (
        subjects.BACKTEST, {"code": VECTOR, "bars": columnar_bars(40), "grids": {"n": [1, 2]}}, "grids", "$"),
    "backtest: a key inside source": (
        subjects.BACKTEST, {"code": VECTOR, "source": {**REF, "limit": 10}}, "limit", "$.source"),
    "backtest: a key inside a market_data row": (
        subjects.BACKTEST, {"code": VECTOR, "market_data": [{**r, "vwap": 1.0} for r in row_bars(5)]},
        "vwap", "$.market_data[0]"),
    "backtest.point: a stray field": (
        subjects.BACKTEST_POINT, {"code": VECTOR, "bars": columnar_bars(40), "chunk": 3}, "chunk", "$"),
    "screen: options": (
        subjects.SCREEN, {"code": CLASSIFY, "symbols": ["AAPL"], "options": {"fill": "close"}}, "options", "$"),
    "screen: misspelt max_bars": (
        subjects.SCREEN, {"code": CLASSIFY, "symbols": ["AAPL"], "maxbars": 10}, "maxbars", "$"),
}


@pytest.mark.parametrize("subject,body,field,at", CASES.values(), ids=list(CASES))
async def test_an_unknown_field_is_invalid_request_naming_it(nc, subject, body, field, at):
    refused(await request_json(nc, subject, body), field, at)


@pytest.mark.parametrize("subject,body,field,at", CASES.values(), ids=list(CASES))
async def test_an_unknown_field_in_msgpack_is_invalid_request_naming_it(nc, subject, body, field, at):
    msg = await nc.request(subject, msgspec.msgpack.encode(body), timeout=15,
                           headers={subjects.CONTENT_TYPE: subjects.MSGPACK})
    refused(msgspec.msgpack.decode(msg.data), field, at)


async def test_the_same_request_without_the_unknown_field_runs(nc):
    body = {"code": FUNC, "bars": columnar_bars(10), "timeout_ms": 5000}
    reply = await request_json(nc, subjects.EXECUTE, body)
    assert reply["success"] is True, reply["error"]


async def test_a_row_symbol_matching_the_request_symbol_runs(nc):
    rows = [{**r, "symbol": "AAPL"} for r in row_bars(20)]
    reply = await request_json(nc, subjects.EXECUTE, {"code": FUNC, "market_data": rows, "symbol": "AAPL"})
    assert reply["success"] is True, reply["error"]


async def test_a_row_symbol_other_than_the_request_symbol_is_invalid_request(nc):
    rows = [{**r, "symbol": "AAPL"} for r in row_bars(20)]
    rows[7]["symbol"] = "MSFT"
    for subject, code in ((subjects.EXECUTE, FUNC), (subjects.BACKTEST, VECTOR)):
        reply = await request_json(nc, subject, {"code": code, "market_data": rows, "symbol": "AAPL"})
        assert reply["error"]["code"] == ErrorCode.INVALID_REQUEST
        assert "market_data[7].symbol is 'MSFT' but the request's `symbol` is 'AAPL'" in reply["error"]["message"]


async def test_rows_naming_two_symbols_are_invalid_request(nc):
    rows = [{**r, "symbol": "AAPL"} for r in row_bars(20)]
    rows[3]["symbol"] = "MSFT"
    reply = await request_json(nc, subjects.EXECUTE, {"code": FUNC, "market_data": rows})
    assert reply["error"]["code"] == ErrorCode.INVALID_REQUEST
    assert "market_data[3].symbol is 'MSFT' but market_data[0].symbol is 'AAPL'" in reply["error"]["message"]


JOBS = {
    "execute job: misspelt timeout_ms": (
        "execute", {"code": FUNC, "bars": columnar_bars(10), "timout_ms": 100}, "timout_ms", "$"),
    "execute job: a key inside bars": (
        "execute", {"code": FUNC, "bars": {**columnar_bars(10), "vwap": [1.0] * 10}}, "vwap", "$.bars"),
    "backtest job: options misspelt": (
        "backtest", {"code": VECTOR, "bars": columnar_bars(40), "option": {"fill": "next_open"}}, "option", "$"),
    "backtest job: a key inside source": (
        "backtest", {"code": VECTOR, "source": {**REF, "limit": 10}}, "limit", "$.source"),
}


@pytest.mark.parametrize("kind,body,field,at", JOBS.values(), ids=list(JOBS))
@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
async def test_a_durable_job_with_an_unknown_field_stores_invalid_request_without_retry(nc, kind, body, field,
                                                                                        at, msgpack):
    job_id = await jobs_client.submit(nc, kind, body, msgpack=msgpack)
    stored = await jobs_client.result(nc, job_id, wait=15)
    assert stored is not None, "no result stored"
    assert stored.success is False
    refused(msgspec.to_builtins(stored), field, at)
    info = await nc.jetstream().stream_info(DEAD_STREAM, subjects_filter=dead_subject(job_id))
    assert not (info.state.subjects or {}), "a refused job must complete, not go to the dead letters"
