"""Raw-data accessors for the classify_symbol style: behaviour, copies, and errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.accessors import DataUnavailable, frame_from_arrays, make_accessors
from contracts import BarArrays


def daily(n: int = 60, start: str = "2024-01-01", base: float = 100.0) -> pd.DataFrame:
    index = pd.date_range(start, periods=n, freq="D", tz="UTC")
    close = base + np.arange(n, dtype=np.float64)
    return pd.DataFrame(
        {"open": close - 0.5, "high": close + 1, "low": close - 1, "close": close, "volume": 1000.0},
        index=index,
    )


@pytest.fixture
def frames():
    return {("AAPL", "1d"): daily(), ("MSFT", "1d"): daily(base=300.0), ("AAPL", "1h"): daily(10)}


@pytest.fixture
def acc(frames):
    return make_accessors(frames, default_timeframe="1d")


def test_get_price_data_returns_all_bars_of_the_default_timeframe(acc):
    df = acc["get_price_data"]("AAPL")
    assert len(df) == 60 and list(df.columns) == ["open", "high", "low", "close", "volume"]


def test_get_price_data_days_counts_calendar_days_back_from_the_last_bar(acc):
    df = acc["get_price_data"]("AAPL", days=7)
    assert len(df) == 7
    assert df.index[-1] == pd.Timestamp("2024-02-29", tz="UTC")


def test_get_price_data_honours_an_explicit_timeframe(acc):
    assert len(acc["get_price_data"]("AAPL", "1h")) == 10


def test_unknown_symbol_raises_data_unavailable(acc):
    with pytest.raises(DataUnavailable, match="no data for NOPE 1d; available: AAPL 1d"):
        acc["get_price_data"]("NOPE")
    assert issubclass(DataUnavailable, LookupError)


def test_unknown_timeframe_raises_data_unavailable(acc):
    with pytest.raises(DataUnavailable):
        acc["get_price_data"]("AAPL", "5m")


def test_non_positive_days_is_rejected(acc):
    with pytest.raises(ValueError, match="days must be a positive number"):
        acc["get_price_data"]("AAPL", days=0)


def test_returned_frames_are_copies_the_caller_cannot_corrupt(acc, frames):
    df = acc["get_price_data"]("AAPL")
    df["close"] = -1.0
    df.iloc[0, 0] = -1.0
    assert (acc["get_price_data"]("AAPL")["close"] > 0).all()
    assert frames[("AAPL", "1d")]["close"].iloc[0] == 100.0


def test_later_changes_to_the_provider_mapping_do_not_leak_in(frames):
    acc = make_accessors(frames, "1d")
    frames[("NEW", "1d")] = daily()
    with pytest.raises(DataUnavailable):
        acc["get_price_data"]("NEW")


def test_get_historical_data_is_inclusive_and_treats_naive_times_as_utc(acc):
    df = acc["get_historical_data"]("AAPL", start="2024-01-10", end=pd.Timestamp("2024-01-12"))
    assert df["close"].tolist() == [109.0, 110.0, 111.0]


def test_get_historical_data_rejects_start_after_end(acc):
    with pytest.raises(ValueError, match="after end"):
        acc["get_historical_data"]("AAPL", start="2024-02-01", end="2024-01-01")


def test_get_multiple_symbols_data_returns_a_frame_per_symbol(acc):
    out = acc["get_multiple_symbols_data"](["AAPL", "MSFT"], days=5)
    assert set(out) == {"AAPL", "MSFT"} and all(len(df) == 5 for df in out.values())
    assert out["MSFT"]["close"].iloc[-1] == 359.0


def test_get_multiple_symbols_data_raises_for_an_unknown_symbol(acc):
    with pytest.raises(DataUnavailable):
        acc["get_multiple_symbols_data"](["AAPL", "NOPE"])


def test_calculate_returns_is_the_pct_change_of_close_without_the_leading_nan(acc):
    df = acc["get_price_data"]("AAPL")
    r = acc["calculate_returns"](df)
    assert len(r) == 59 and r.iloc[0] == pytest.approx(101 / 100 - 1)
    assert acc["calculate_returns"](df["close"], periods=2).iloc[0] == pytest.approx(102 / 100 - 1)


def test_calculate_log_returns(acc):
    r = acc["calculate_log_returns"](acc["get_price_data"]("AAPL"))
    assert r.iloc[0] == pytest.approx(np.log(101 / 100))


def test_returns_reject_a_non_integer_period(acc):
    with pytest.raises(TypeError):
        acc["calculate_returns"](acc["get_price_data"]("AAPL"), periods="1")


@pytest.mark.parametrize("func, expected", [
    ("mean", 101.0), ("std", 1.0), ("min", 100.0), ("max", 102.0), ("sum", 303.0), ("median", 101.0),
])
def test_rolling_window_applies_the_named_function(acc, func, expected):
    s = acc["get_price_data"]("AAPL")["close"]
    out = acc["rolling_window"](s, 3, func)
    assert out.iloc[:2].isna().all() and out.iloc[2] == pytest.approx(expected)


def test_rolling_window_refuses_names_outside_its_table(acc):
    s = acc["get_price_data"]("AAPL")["close"]
    with pytest.raises(ValueError, match="func must be one of"):
        acc["rolling_window"](s, 3, "__class__")
    with pytest.raises(ValueError):
        acc["rolling_window"](s, 3, "apply")


def test_normalize_minmax_scales_to_unit_range(acc):
    out = acc["normalize_data"](acc["get_price_data"]("AAPL")["close"])
    assert out.min() == 0.0 and out.max() == 1.0


def test_normalize_zscore_centres_each_column(acc):
    out = acc["normalize_data"](acc["get_price_data"]("AAPL"), method="zscore")
    assert out["close"].mean() == pytest.approx(0.0) and out["close"].std() == pytest.approx(1.0)
    assert (out["volume"] == 0.0).all()  # a constant column normalises to 0, not NaN


def test_normalize_rejects_an_unknown_method(acc):
    with pytest.raises(ValueError, match="method must be one of"):
        acc["normalize_data"]([1, 2, 3], method="eval")


def test_frame_from_arrays_builds_the_served_shape():
    ts = np.array([1_704_067_200, 1_704_153_600], dtype=np.int64) * 1_000_000_000
    arrays = BarArrays.from_numpy(ts, open=[1, 2], high=[1, 2], low=[1, 2], close=[1, 2], volume=[0, 0])
    df = frame_from_arrays(arrays)
    assert str(df.index.tz) == "UTC" and df.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    assert df["close"].tolist() == [1.0, 2.0]
