"""Parameters and grid values are checked at decode, the same way for every request type."""

from __future__ import annotations

import json

import msgspec
import pytest

from contracts import BacktestRequest, ErrorCode, ExecuteRequest, ExecutionError, ScreenRequest, decode, subjects
from contracts.limits import MAX_GRID_VALUE_BYTES, MAX_SWEEP_PARAMETER_BYTES, MAX_VALUE_DEPTH

BASES = {
    ExecuteRequest: {"code": "x"},
    BacktestRequest: {"code": "x"},
    ScreenRequest: {"code": "x", "symbols": ["A"]},
}


def refusal(type_, body: dict, kind: str = subjects.JSON) -> str:
    data = json.dumps(body).encode() if kind == subjects.JSON else msgspec.msgpack.encode(body)
    with pytest.raises(ExecutionError) as caught:
        decode(data, type_, kind)
    assert caught.value.code == ErrorCode.INVALID_REQUEST
    return caught.value.message


@pytest.mark.parametrize("type_", list(BASES))
@pytest.mark.parametrize("value", [2**64, 2**70, -(2**63) - 1, 10**30])
def test_an_integer_past_64_bits_in_parameters_is_refused_naming_it(type_, value):
    message = refusal(type_, {**BASES[type_], "parameters": {"n": {"deep": [1, value]}}})
    assert "parameters.n.deep[1]" in message and "64 bits" in message


@pytest.mark.parametrize("type_", list(BASES))
def test_parameters_nested_past_the_depth_limit_are_refused(type_):
    value: object = 1
    for _ in range(MAX_VALUE_DEPTH + 1):
        value = [value]
    assert "nested more than" in refusal(type_, {**BASES[type_], "parameters": {"n": value}})


def test_a_msgpack_value_with_no_json_form_is_refused():
    body = {"code": "x", "parameters": {"raw": b"\x00\x01"}}
    assert "parameters.raw is a bytes" in refusal(ExecuteRequest, body, subjects.MSGPACK)


@pytest.mark.parametrize("value", [2**70, 10**30])
def test_an_integer_past_64_bits_in_a_grid_is_refused_naming_it(value):
    message = refusal(BacktestRequest, {"code": "x", "grid": {"fast": [5, value]}})
    assert "grid.fast[1]" in message


def test_a_grid_value_longer_than_the_limit_is_refused():
    message = refusal(BacktestRequest, {"code": "x", "grid": {"tag": ["v" * MAX_GRID_VALUE_BYTES]}})
    assert "grid.tag[0]" in message and f"at most {MAX_GRID_VALUE_BYTES}" in message


def test_a_sweep_whose_points_would_carry_too_many_parameter_bytes_is_refused():
    body = {"code": "x", "parameters": {"blob": "b" * 4000},
            "grid": {"a": list(range(100)), "b": list(range(100))}}
    message = refusal(BacktestRequest, body)
    assert "10,000 points" in message and f"{MAX_SWEEP_PARAMETER_BYTES:,}" in message


def test_ordinary_parameters_and_grids_decode():
    req = decode(json.dumps({"code": "x", "parameters": {"fast": 5, "w": [0.5, None, "x"], "nested": {"a": True}},
                             "grid": {"slow": [20, 30], "mode": ["a", "b"]}}).encode(), BacktestRequest)
    assert req.grid == {"slow": [20, 30], "mode": ["a", "b"]}
    assert decode(json.dumps({"code": "x", "parameters": {"big": 2**64 - 1, "neg": -(2**63)}}).encode(),
                  ExecuteRequest).parameters["big"] == 2**64 - 1
