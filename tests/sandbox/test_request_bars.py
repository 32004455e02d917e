"""A warm worker decodes its run's bars from the request bytes (sandbox/request_bars.py): it gets
exactly the arrays the node's own decode gives, and refuses exactly what the node refuses."""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest

from contracts import ExecuteRequest, ExecutionError, decode
from contracts.subjects import JSON, MSGPACK
from node.jobs import bars_of
import sandbox.request_bars as request_bars
from sandbox.request_bars import RefusedRequest, bars_of_request
from tests.support import columnar_bars

BUY = "def strategy(data):\n    return 'BUY'\n"


def _encoded(body: dict, kind: str) -> bytes:
    return msgspec.msgpack.encode(body) if kind == MSGPACK else json.dumps(body).encode()


def _node_bars(data: bytes, kind: str):
    bars = bars_of(decode(data, ExecuteRequest, kind))
    if bars is None or bars.count == 0:
        raise ExecutionError("INVALID_REQUEST", "no bars")
    return bars


def _rows(n: int) -> list[dict]:
    cols = columnar_bars(n)
    return [{k: cols[k][i] for k in cols} for i in range(n)]


GOOD = {
    "columnar, epoch ms": {"code": BUY, "bars": columnar_bars(50)},
    "columnar, no volume": {"code": BUY, "bars": {k: v for k, v in columnar_bars(20).items() if k != "volume"}},
    "columnar, ISO times": {"code": BUY, "bars": {**columnar_bars(3), "timestamp": [
        "2024-01-01T00:00:00Z", "2024-01-02T00:00:00+00:00", "2024-01-03"]}},
    "columnar, fractional ms": {"code": BUY, "bars": {**columnar_bars(2), "timestamp": [1.5, 2.25]}},
    "rows": {"code": BUY, "market_data": _rows(25)},
}


@pytest.mark.parametrize("kind", [JSON, MSGPACK])
@pytest.mark.parametrize("case", list(GOOD))
def test_the_worker_gets_the_arrays_the_node_would_build(case, kind):
    data = _encoded(GOOD[case], kind)
    mine, node = bars_of_request(data, kind), _node_bars(data, kind)
    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(mine.column(name), node.column(name)), name


_OK = columnar_bars(10)
BAD = {
    "not the encoding": b"\x00\x01garbage",
    "a string close": {"code": BUY, "bars": {**_OK, "close": ["x"] * 10}},
    "unequal columns": {"code": BUY, "bars": {**_OK, "open": [1.0]}},
    "out of order": {"code": BUY, "bars": {**_OK, "timestamp": _OK["timestamp"][::-1]}},
    "repeated time": {"code": BUY, "bars": {**_OK, "timestamp": [_OK["timestamp"][0]] * 10}},
    "time out of range": {"code": BUY, "bars": {**_OK, "timestamp": [1e17] + _OK["timestamp"][1:]}},
    "empty bars": {"code": BUY, "bars": {k: [] for k in _OK}},
    "no bars": {"code": BUY},
    "both shapes": {"code": BUY, "bars": _OK, "market_data": _rows(2)},
    "unknown column": {"code": BUY, "bars": {**_OK, "vwap": _OK["close"]}},
    "row of another symbol": {"code": BUY, "symbol": "A", "market_data": [{**_rows(1)[0], "symbol": "B"}]},
    "unknown top-level field": {"code": BUY, "bars": _OK, "extra": 1},
}


@pytest.mark.parametrize("kind", [JSON, MSGPACK])
@pytest.mark.parametrize("case", list(BAD))
def test_the_worker_refuses_what_the_node_refuses(case, kind):
    body = BAD[case]
    data = body if isinstance(body, bytes) else _encoded(body, kind)
    with pytest.raises(ExecutionError):
        _node_bars(data, kind)
    with pytest.raises(RefusedRequest):
        bars_of_request(data, kind)


def test_a_nesting_bomb_is_refused_not_raised():
    data = b'{"code": "x", "bars": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(RefusedRequest):
        bars_of_request(data, JSON)


def _cols(n: int = 30, **changes) -> dict:
    cols = {k: [float(x) for x in v] if k != "timestamp" else v for k, v in columnar_bars(n).items()}
    cols.update(changes)
    return cols


# msgpack requests whose columns are all float64 (timestamps all 64-bit integers or float64)
COLUMNAR = {
    "float64 columns, uint64 times": _cols(),
    "negative (pre-1970) int64 times": _cols(3, timestamp=[-2_000_000_000_000, -1_999_000_000_000, -1_998_000_000_000]),
    "fractional float64 times": _cols(2, timestamp=[1_700_000_000_000.25, 1_700_000_000_001.5]),
    "no volume": {k: v for k, v in _cols(10).items() if k != "volume"},
    "volume null": _cols(10, volume=None),
    "NaN and infinity among prices": _cols(3, close=[math.nan, math.inf, -math.inf]),
}


@pytest.mark.parametrize("case", list(COLUMNAR))
def test_msgpack_float64_columns_are_read_without_the_full_decode(case, monkeypatch):
    data = msgspec.msgpack.encode({"code": BUY, "bars": COLUMNAR[case], "symbol": "S"})
    node = _node_bars(data, MSGPACK)

    def no_full_decode(*_a, **_k):
        raise AssertionError("the full decode was used")

    monkeypatch.setattr(request_bars, "decode", no_full_decode)
    mine = bars_of_request(data, MSGPACK)
    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(mine.column(name), node.column(name), equal_nan=True), name


MIXED = {
    "small integers among prices": _cols(3, close=[1, 2.5, 3]),
    "uint32 times": _cols(3, timestamp=[1, 2, 3]),
    "ISO times": _cols(2, timestamp=["2024-01-01", "2024-01-02"]),
    "times of mixed widths": _cols(2, timestamp=[5, 1_700_000_000_000]),
}


@pytest.mark.parametrize("case", list(MIXED))
def test_other_msgpack_columns_take_the_full_decode_with_the_same_result(case):
    data = msgspec.msgpack.encode({"code": BUY, "bars": MIXED[case]})
    mine, node = bars_of_request(data, MSGPACK), _node_bars(data, MSGPACK)
    for name in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(mine.column(name), node.column(name)), name


def test_a_time_the_node_refuses_is_refused_on_the_column_path_too():
    for stamps in ([1e17, 2e17], [math.nan, 1.0], [2.0, 1.0], [1.0, 1.0]):
        data = msgspec.msgpack.encode({"code": BUY, "bars": _cols(2, timestamp=stamps)})
        with pytest.raises(ExecutionError):
            _node_bars(data, MSGPACK)
        with pytest.raises(RefusedRequest):
            bars_of_request(data, MSGPACK)


def test_the_undecoded_head_has_every_field_of_the_execute_request_with_the_same_type_and_default():
    """ExecuteHead mirrors ExecuteRequest field by field (only the bars stay raw): a field added
    to the request and not to the head would be refused as unknown on the warm path only."""
    head = {f.name: f for f in msgspec.structs.fields(request_bars.ExecuteHead)}
    full = {f.name: f for f in msgspec.structs.fields(ExecuteRequest)}
    assert head.keys() == full.keys()
    assert request_bars.ExecuteHead.__struct_config__.forbid_unknown_fields
    for name in full.keys() - {"bars", "market_data"}:
        assert head[name].type == full[name].type, name
        assert head[name].default == full[name].default, name
        assert head[name].default_factory == full[name].default_factory, name
