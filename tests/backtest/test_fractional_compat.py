"""`mode="backtesting_py"` with fractional sizing against backtesting.py's own FractionalBacktest.

Acceptance of issue 14: three datasets (GOOG daily, EURUSD hourly, BTCUSD monthly) by three
strategies (SMA crossover long-only with commission, SMA crossover long/short with spread and a
fixed fee, state-style signals with stop-loss and take-profit brackets), each run by
backtesting.py 0.6.6 itself (``FractionalBacktest(fractional_unit=u)``) and by our compat mode
(``fractional=true, fractional_unit=u``); per-bar equity within 1e-7 relative, trades alike.
``position_size`` below 1 follows ``buy(size=f)`` (a fraction of equity).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from backtesting.test import BTCUSD, EURUSD, GOOG

from contracts import BacktestOptions

from .test_backtesting_py_compat import FromArray, SmaCross, positions, run_both, sma_cross_signals

REL = 1e-7
DATASETS = {"GOOG-daily": GOOG, "EURUSD-hourly": EURUSD, "BTCUSD-monthly": BTCUSD}
SMA = {"BTCUSD-monthly": (3, 8)}  # 156 monthly bars: shorter averages to trade at all


def state_signals(close: pd.Series) -> tuple[np.ndarray, int]:
    fast, slow = close.rolling(5).mean().values, close.rolling(20).mean().values
    sig = np.where(fast > slow, 1, -1).astype(np.int8)
    sig[:19] = 0
    return sig, 19


def run(dataset: str, strategy: str, unit: float | None = 1e-6, size: float | None = None):
    data = DATASETS[dataset]
    fast, slow = SMA.get(dataset, (10, 30))
    sma = dict(warmup=slow - 1, signals=sma_cross_signals(data.Close, fast, slow), fast=fast, slow=slow)
    if strategy == "sma-long-commission":
        return run_both(data, SmaCross, commission=0.002, unit=unit, size=size, **sma)
    if strategy == "sma-short-spread-fixed":
        return run_both(data, SmaCross, short=True, spread=0.0005, fixed=1.0, commission=0.001,
                        unit=unit, size=size, **sma)
    sig, warmup = state_signals(data.Close)
    klass = type("Signals", (FromArray,), {"signals": sig, "warmup": warmup})
    return run_both(data, klass, warmup=warmup, signals=sig, short=True, sl=2.0, tp=3.0,
                    commission=0.0005, unit=unit, size=size)


STRATEGIES = ["sma-long-commission", "sma-short-spread-fixed", "state-with-stops"]


@lru_cache(maxsize=None)
def cached(dataset, strategy, unit=1e-6, size=None):
    return run(dataset, strategy, unit, size)


def their_trades(stats):
    return [(r.EntryBar, r.ExitBar, float(r.Size)) for r in stats._trades.itertuples()]


def our_trades(perf, ts):
    from contracts import ns_to_iso

    bar = {ns_to_iso(t): i for i, t in enumerate(ts.tolist())}
    return [(bar[t.entry_time], bar[t.exit_time], t.quantity if t.side == "long" else -t.quantity)
            for t in perf.trades]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_fractional_equity_matches_fractional_backtest_bar_by_bar(dataset, strategy):
    stats, perf, ts = cached(dataset, strategy)
    theirs = stats._equity_curve.Equity.to_numpy()
    ours = np.array([p.equity for p in perf.equity_curve])
    assert len(ours) == len(theirs) == len(ts)
    assert len(stats._trades) > 5
    np.testing.assert_allclose(ours, theirs, rtol=REL, atol=0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("dataset", DATASETS)
def test_fractional_trades_match_fractional_backtest(dataset, strategy):
    stats, perf, ts = cached(dataset, strategy)
    ours, theirs = our_trades(perf, ts), their_trades(stats)
    assert [t[:2] for t in ours] == [t[:2] for t in theirs]
    assert [t[2] for t in ours] == pytest.approx([t[2] for t in theirs], rel=1e-12, abs=0)
    assert [t.entry_price for t in perf.trades] == pytest.approx(
        stats._trades.EntryPrice.tolist(), rel=1e-12, abs=0)
    assert [t.pnl for t in perf.trades] == pytest.approx(stats._trades.PnL.tolist(), rel=REL, abs=1e-9)


def test_fractional_sizing_holds_quantities_that_are_not_whole_units():
    stats, perf, _ = cached("BTCUSD-monthly", "sma-long-commission")
    quantities = [t.quantity for t in perf.trades]
    assert any(q != int(q) for q in quantities)
    assert all(abs(q / 1e-6 - round(q / 1e-6)) < 1e-6 for q in quantities)  # multiples of the unit


def test_fractional_final_equity_differs_from_whole_units_as_backtesting_py_does():
    frac, frac_perf, _ = cached("BTCUSD-monthly", "sma-long-commission")
    whole, whole_perf, _ = cached("BTCUSD-monthly", "sma-long-commission", None)
    assert frac_perf.final_equity == pytest.approx(frac["Equity Final [$]"], rel=REL)
    assert whole_perf.final_equity == pytest.approx(whole["Equity Final [$]"], rel=REL)
    assert frac_perf.final_equity != pytest.approx(whole_perf.final_equity, rel=1e-4)


@pytest.mark.parametrize("unit", [None, 1e-6])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_position_size_is_buy_size_as_a_fraction_of_equity(strategy, unit):
    stats, perf, ts = cached("GOOG-daily", strategy, unit, 0.5)
    np.testing.assert_allclose([p.equity for p in perf.equity_curve],
                               stats._equity_curve.Equity.to_numpy(), rtol=REL, atol=0)
    n = len(ts)
    assert np.allclose(positions([(a, b, 0, 0, q) for a, b, q in our_trades(perf, ts)], n),
                       positions([(a, b, 0, 0, q) for a, b, q in their_trades(stats)], n), rtol=1e-12)


def test_half_position_size_invests_about_half_the_equity():
    _, perf, _ = cached("GOOG-daily", "sma-long-commission", 1e-6, 0.5)
    first = perf.trades[0]
    # notional plus the 0.2 % commission is half the cash, to within one unit of 1e-6
    spent = first.quantity * first.entry_price * 1.002
    assert 0.5 * 10_000 - first.entry_price * 1.002e-6 <= spent <= 0.5 * 10_000


def test_default_compat_options_are_fractional_with_a_micro_unit():
    from backtest.compat import unit_of

    assert unit_of(BacktestOptions(mode="backtesting_py")) == 1e-6
    assert unit_of(BacktestOptions(mode="backtesting_py", fractional=False)) == 1.0
    assert unit_of(BacktestOptions(mode="backtesting_py", fractional_unit=1e-8)) == 1e-8
