"""Decoding refuses bad requests with INVALID_REQUEST and a message naming the field."""

import msgspec
import numpy as np
import pytest

from contracts import (
    ErrorCode,
    ExecuteRequest,
    ExecuteResult,
    ExecutionError,
    content_type,
    decode,
    encode,
    from_columns,
    from_rows,
    ns_to_iso,
    to_epoch_ns,
)
from contracts.bars import BarRow, Bars


def test_json_is_the_default_content_type():
    assert content_type(None) == "application/json"
    assert content_type({"Content-Type": "text/plain"}) == "application/json"


def test_msgpack_is_chosen_by_header():
    assert content_type({"Content-Type": "application/msgpack"}) == "application/msgpack"


def test_round_trip_in_both_encodings():
    result = ExecuteResult(success=True, result={"a": 1})
    for kind in ("application/json", "application/msgpack"):
        assert decode(encode(result, kind), ExecuteResult, kind) == result


def test_validation_error_names_the_field_path():
    with pytest.raises(ExecutionError) as err:
        decode(b'{"code": "x", "memory_mb": 1}', ExecuteRequest)
    assert err.value.code is ErrorCode.INVALID_REQUEST
    assert "$.memory_mb" in err.value.message


def test_bars_and_market_data_together_are_refused():
    payload = msgspec.json.encode({
        "code": "x", "bars": {"timestamp": [1], "open": [1], "high": [1], "low": [1], "close": [1]},
        "market_data": [{"timestamp": 1, "open": 1, "high": 1, "low": 1, "close": 1}],
    })
    with pytest.raises(ExecutionError, match="not both"):
        decode(payload, ExecuteRequest)


def test_nan_and_infinity_encode_as_null_in_json():
    assert encode({"x": float("nan"), "y": float("inf")}) == b'{"x":null,"y":null}'


@pytest.mark.parametrize("text,expected", [
    ("2024-01-01T00:00:00Z", 1_704_067_200_000_000_000),
    ("2024-01-01T01:00:00+01:00", 1_704_067_200_000_000_000),
    ("2024-01-01", 1_704_067_200_000_000_000),
    ("2024-01-01T00:00:00.5", 1_704_067_200_500_000_000),
])
def test_iso_timestamps_normalize_to_utc_epoch_ns(text, expected):
    assert to_epoch_ns([text])[0] == expected


def test_epoch_milliseconds_normalize_to_epoch_ns():
    assert to_epoch_ns([1_704_067_200_000, 1_704_067_260_000]).tolist() == [
        1_704_067_200_000_000_000, 1_704_067_260_000_000_000]


def test_bad_timestamp_names_its_position():
    with pytest.raises(ValueError, match=r"timestamp\[1\]"):
        to_epoch_ns(["2024-01-01", "tomorrow"])


def test_rows_and_columns_give_identical_arrays():
    ts = [1_704_067_200_000, 1_704_153_600_000]
    cols = Bars(timestamp=ts, open=[1.0, 2.0], high=[2.0, 3.0], low=[0.5, 1.5], close=[1.5, 2.5], volume=[10.0, 20.0])
    rows = [BarRow(timestamp=t, open=o, high=h, low=lo, close=c, volume=v)
            for t, o, h, lo, c, v in zip(ts, cols.open, cols.high, cols.low, cols.close, cols.volume)]
    a, b = from_columns(cols), from_rows(rows)
    assert a == b
    assert np.array_equal(a.column("close"), [1.5, 2.5])


def test_ns_to_iso_is_utc_with_z():
    assert ns_to_iso(1_704_067_200_000_000_000) == "2024-01-01T00:00:00Z"
    assert ns_to_iso(1_704_067_200_250_000_000) == "2024-01-01T00:00:00.250000Z"
