"""Bar times at decode: what int64 epoch-nanoseconds can hold, or INVALID_REQUEST naming the item."""

from __future__ import annotations

import pytest

from contracts.bars import MAX_EPOCH_MS, MIN_EPOCH_MS, to_epoch_ns


@pytest.mark.parametrize("value", [1e17, 9.3e15, -1e17, 10**19, MAX_EPOCH_MS, MIN_EPOCH_MS - 1])
def test_epoch_milliseconds_outside_the_range_name_the_field_and_index(value):
    stamps = [1_704_067_200_000, 1_704_067_260_000, 1_704_067_320_000, value]
    with pytest.raises(ValueError, match=r"^bars\.timestamp\[3\] is out of range \(.* ms\)"):
        to_epoch_ns(stamps, "bars.timestamp")


@pytest.mark.parametrize("value", ["9999-12-31T00:00:00Z", "0001-01-01", "1677-09-21", "2262-04-12"])
def test_iso_times_outside_the_range_name_the_field_and_index(value):
    with pytest.raises(ValueError, match=r"^market_data\.timestamp\[1\] is out of range"):
        to_epoch_ns(["2024-01-01", value], "market_data.timestamp")


def test_the_first_out_of_range_bar_is_named_not_a_repeat_of_its_neighbour():
    # 20 bars past the range used to wrap to equal int64 values: "timestamp[1] repeats timestamp[0]"
    with pytest.raises(ValueError, match=r"bars\.timestamp\[0\] is out of range"):
        to_epoch_ns([1e17 + i for i in range(20)], "bars.timestamp")


def test_a_non_finite_epoch_names_its_index():
    with pytest.raises(ValueError, match=r"bars\.timestamp\[2\] is nan"):
        to_epoch_ns([1.0, 2.0, float("nan")], "bars.timestamp")


def test_times_at_the_edges_of_the_range_are_kept_exactly():
    out = to_epoch_ns([MIN_EPOCH_MS, MAX_EPOCH_MS - 1], "bars.timestamp")
    assert out.tolist() == [MIN_EPOCH_MS * 1_000_000, (MAX_EPOCH_MS - 1) * 1_000_000]
    assert to_epoch_ns(["1678-01-01", "2261-12-31T23:59:59Z"]).tolist()[0] == MIN_EPOCH_MS * 1_000_000
