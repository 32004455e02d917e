"""The accessors over reference data and the new bar accessors, as the sandbox serves them:
point-in-time at the clock, fresh copies, DataUnavailable naming what is missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtest.accessors import Clock, DataUnavailable, make_accessors, vectorized_operation
from backtest.refdata_bundle import RefBundle
from backtest.refdata_records import fact_from_row

DAYS = pd.date_range("2024-01-01", periods=200, freq="D", tz="UTC", name="timestamp")


def bars(seed: int, n: int = 200) -> pd.DataFrame:
    close = 100 + np.cumsum(np.random.default_rng(seed).normal(0, 1, n))
    return pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close,
                         "volume": np.arange(1, n + 1, dtype=float) * 10}, index=DAYS[:n])


def facts():
    rows = [
        ("fundamentals", {"symbol": "AAA", "known_date": "2024-02-01", "pe_ratio": 20, "pb_ratio": 3}),
        ("fundamentals", {"symbol": "AAA", "known_date": "2024-05-01", "pe_ratio": 18, "pb_ratio": ""}),
        ("earnings", {"symbol": "AAA", "period": "Q4", "report_date": "2024-02-01", "eps_actual": 1.2, "eps_estimate": 1.0}),
        ("earnings", {"symbol": "AAA", "period": "Q1", "report_date": "2024-05-01", "eps_actual": 0.9, "eps_estimate": 1.0}),
        ("statements", {"symbol": "AAA", "statement_type": "income", "period_end": "2023-12-31",
                        "published": "2024-02-01", "revenue": 100, "net_income": 10}),
        ("statements", {"symbol": "AAA", "statement_type": "income", "period_end": "2023-12-31",
                        "published": "2024-04-01", "revenue": 95, "net_income": 9}),  # restated
        ("statements", {"symbol": "AAA", "statement_type": "balance", "period_end": "2023-12-31",
                        "published": "2024-02-01", "total_assets": 500}),
    ]
    return [fact_from_row(kind, row, "test") for kind, row in rows]


def bundle(**over) -> RefBundle:
    base = dict(
        securities={"AAA": {"symbol": "AAA", "name": "Alpha", "sector": "Tech", "lot_size": 1},
                    "BBB": {"symbol": "BBB", "name": "Beta", "sector": "Tech", "lot_size": 1}},
        facts=facts(), indices=["IDX"], sectors={"Tech": ["AAA", "BBB"]},
        loaded=["fundamentals", "earnings", "statements", "securities", "sectors", "indices"],
    )
    base.update(over)
    return RefBundle(**base)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def acc(clock):
    frames = {("AAA", "1d"): bars(1), ("BBB", "1d"): bars(2), ("IDX", "1d"): bars(3)}
    return make_accessors(frames, "1d", refdata=bundle(), clock=clock)


def at(day: str) -> int:
    return pd.Timestamp(day, tz="UTC").value


def test_security_info_is_a_fresh_dict_each_call(acc):
    info = acc["get_security_info"]("AAA")
    assert info["name"] == "Alpha"
    info["name"] = "changed"
    assert acc["get_security_info"]("AAA")["name"] == "Alpha"


def test_unknown_security_names_the_symbol(acc):
    with pytest.raises(DataUnavailable, match="no security info for ZZZ in the security master"):
        acc["get_security_info"]("ZZZ")


def test_fundamentals_are_the_latest_value_per_metric_known_at_the_clock(acc, clock):
    assert acc["get_fundamental_data"]("AAA") == {"pe_ratio": 18.0, "pb_ratio": 3.0}
    clock.ns = at("2024-05-01")  # that day's report is known from the end of the day
    assert acc["get_fundamental_data"]("AAA", ["pe_ratio"]) == {"pe_ratio": 20.0}


def test_fundamentals_before_any_report_are_unavailable(acc, clock):
    clock.ns = at("2024-01-15")
    with pytest.raises(DataUnavailable, match=r"no fundamentals for AAA known by 2024-01-15"):
        acc["get_fundamental_data"]("AAA")


def test_a_missing_metric_is_named_with_the_available_ones(acc):
    with pytest.raises(DataUnavailable, match=r"no roe for AAA; available: pb_ratio, pe_ratio"):
        acc["get_fundamental_data"]("AAA", ["pe_ratio", "roe"])


def test_earnings_carry_the_surprise_oldest_first(acc, clock):
    frame = acc["get_earnings_data"]("AAA", 4)
    assert list(frame["period"]) == ["Q4", "Q1"]
    assert frame["eps_surprise"].round(6).tolist() == [0.2, -0.1]
    assert frame["eps_surprise_pct"].round(6).tolist() == [20.0, -10.0]
    assert frame.index[0] == pd.Timestamp("2024-02-01", tz="UTC")
    clock.ns = at("2024-03-01")
    assert list(acc["get_earnings_data"]("AAA", 4)["period"]) == ["Q4"]


def test_statements_show_the_version_known_at_the_clock(acc, clock):
    assert acc["get_financial_statements"]("AAA", "income", 4)["revenue"].tolist() == [95.0]
    clock.ns = at("2024-03-01")
    frame = acc["get_financial_statements"]("AAA", "income", 4)
    assert frame["revenue"].tolist() == [100.0] and frame["published"].tolist() == ["2024-02-01"]
    assert list(acc["get_financial_statements"]("AAA", "balance").columns) == ["total_assets", "published"]
    clock.ns = at("2024-01-15")
    with pytest.raises(DataUnavailable, match=r"no income statements for AAA known by 2024-01-15"):
        acc["get_financial_statements"]("AAA")


def test_statement_type_is_checked(acc):
    with pytest.raises(ValueError, match="statement_type must be one of income, balance, cash_flow"):
        acc["get_financial_statements"]("AAA", "ratios")


def test_sector_data_aggregates_the_members_bars(acc):
    frame = acc["get_sector_data"]("tech")
    a, b = bars(1)["close"].pct_change(), bars(2)["close"].pct_change()
    assert np.allclose(frame["return"].iloc[1:], ((a + b) / 2).iloc[1:])
    assert frame["members"].iloc[-1] == 2
    assert frame["volume"].iloc[-1] == 2 * 2000.0
    with pytest.raises(DataUnavailable, match=r"no sector 'Energy'; sectors of this run: Tech"):
        acc["get_sector_data"]("Energy")


def test_market_indices_are_bars_cut_at_the_clock(acc, clock):
    clock.ns = at("2024-01-10")
    idx = acc["get_market_indices"](["IDX"])["IDX"]
    assert idx.index[-1] == pd.Timestamp("2024-01-10", tz="UTC") and len(idx) == 10
    with pytest.raises(DataUnavailable, match=r"no market index 'SPY'; loaded indices: IDX"):
        acc["get_market_indices"]("SPY")


def test_price_data_is_cut_at_the_clock(acc, clock):
    clock.ns = at("2024-01-05")
    assert len(acc["get_price_data"]("AAA")) == 5
    assert acc["get_historical_data"]("AAA", "1d", "2024-01-01", "2024-12-31").index[-1] == pd.Timestamp("2024-01-05", tz="UTC")


def test_data_kinds_the_node_did_not_load_are_unavailable():
    acc = make_accessors({}, "1d", refdata=RefBundle(loaded=["securities"]))
    with pytest.raises(DataUnavailable, match="no fundamentals were loaded for this run"):
        acc["get_fundamental_data"]("AAA")


def test_lagged_historical_data_takes_periods_and_offset(acc):
    full = acc["get_price_data"]("AAA")
    lagged = acc["get_historical_data"]("AAA", "1d", 10, 5)
    assert lagged.index.equals(full.index[-15:-5])
    assert acc["get_historical_data"]("AAA", "1d", periods=3).index.equals(full.index[-3:])
    with pytest.raises(DataUnavailable, match="offset 500 leaves none"):
        acc["get_historical_data"]("AAA", "1d", 10, 500)
    with pytest.raises(ValueError, match="either start/end or periods/offset"):
        acc["get_historical_data"]("AAA", "1d", "2024-01-01", periods=3)


def test_volume_data_has_dollar_volume(acc):
    frame = acc["get_volume_data"]("AAA", days=10)
    full = bars(1)
    assert len(frame) == 10
    assert np.allclose(frame["dollar_volume"], (full["close"] * full["volume"]).iloc[-10:])


@pytest.mark.parametrize("op, operand, expected", [
    ("add", 1, [2.0, 3.0, 5.0]),
    ("multiply", [2, 2, 2], [2.0, 4.0, 8.0]),
    ("divide", 0, [np.inf, np.inf, np.inf]),
    ("log", None, list(np.log([1.0, 2.0, 4.0]))),
    ("diff", None, [np.nan, 1.0, 2.0]),
    ("pct_change", None, [np.nan, 1.0, 1.0]),
    ("shift", 2, [np.nan, np.nan, 1.0]),
])
def test_vectorized_operation_applies_the_named_operation(op, operand, expected):
    out = vectorized_operation([1, 2, 4], op, operand)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, expected)


def test_vectorized_operation_keeps_a_series_a_series():
    s = pd.Series([1.0, 2.0], index=DAYS[:2])
    out = vectorized_operation(s, "subtract", s)
    assert isinstance(out, pd.Series) and out.index.equals(s.index) and out.tolist() == [0.0, 0.0]


def test_vectorized_operation_refuses_names_outside_its_table_and_bad_operands():
    with pytest.raises(ValueError, match="operation must be one of"):
        vectorized_operation([1], "__class__")
    with pytest.raises(ValueError, match="add needs an operand"):
        vectorized_operation([1], "add")
    with pytest.raises(ValueError, match="operand has 2 values but values has 1"):
        vectorized_operation([1], "add", [1, 2])
