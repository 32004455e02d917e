"""Per-bar output and chart downsampling that never contradicts the metrics (backtest.curves)."""

from __future__ import annotations

import numpy as np
import pytest

from backtest import run_backtest
from backtest.curves import extreme_indices, positions
from backtest.ledger import Ledger
from contracts import BacktestOptions

DAY = 86_400 * 10**9


def walk(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))


def backtest(close, signals, **options):
    n = len(close)
    ts = 1_704_067_200 * 10**9 + np.arange(n, dtype=np.int64) * (DAY if n <= 10_000 else 60 * 10**9)
    return run_backtest(ts, close, close * 1.01, close * 0.99, close, np.ones(n), np.asarray(signals),
                        BacktestOptions(**options))


def sma_signals(close, fast=5, slow=20):
    f = np.convolve(close, np.ones(fast) / fast)[: len(close)]
    s = np.convolve(close, np.ones(slow) / slow)[: len(close)]
    sig = np.sign(f - s).astype(np.int8)
    sig[:slow] = 0
    return sig


def test_downsampled_curve_reaches_the_reported_peak_and_max_drawdown():
    close = walk(200_000)
    perf = backtest(close, sma_signals(close), equity_points=500)
    assert len(perf.equity_curve) <= 500
    assert max(p.equity for p in perf.equity_curve) == perf.peak_equity
    assert min(p.drawdown_pct for p in perf.equity_curve) == pytest.approx(perf.max_drawdown, abs=1e-9)


@pytest.mark.parametrize("mode", ["native", "backtesting_py"])
def test_downsampled_curve_keeps_the_first_and_last_bar_in_time_order(mode):
    close = walk(50_000, seed=9)
    perf = backtest(close, sma_signals(close), equity_points=301, mode=mode)
    times = [p.timestamp for p in perf.equity_curve]
    assert times == sorted(times) and len(set(times)) == len(times) <= 301
    assert times[0] == perf.start and times[-1] == perf.end
    assert perf.equity_curve[-1].equity == perf.final_equity


def test_extreme_indices_keep_each_runs_min_and_max():
    rng = np.random.default_rng(1)
    eq = rng.normal(size=10_000).cumsum()
    dd = eq - np.maximum.accumulate(eq)
    idx = extreme_indices(eq, dd, 32)
    assert len(idx) <= 32
    assert eq[idx].max() == eq.max() and eq[idx].min() == eq.min() and dd[idx].min() == dd.min()


def test_extreme_indices_return_every_bar_when_they_fit():
    assert extreme_indices(np.arange(5.0), np.zeros(5), 5).tolist() == [0, 1, 2, 3, 4]
    assert extreme_indices(np.arange(5.0), np.zeros(5), 0).tolist() == []


def test_per_bar_output_has_every_bar_position_equity_and_drawdown():
    close = walk(3_000)
    sig = sma_signals(close)
    perf = backtest(close, sig, per_bar=True, allow_short=True)
    pb = perf.per_bar
    assert len(pb.timestamp) == len(pb.position) == len(pb.equity) == len(pb.drawdown_pct) == 3_000
    assert len(perf.equity_curve) == 3_000  # the full curve, not 500 points
    assert pb.equity[-1] == perf.final_equity and max(pb.equity) == perf.peak_equity
    assert min(pb.drawdown_pct) == pytest.approx(perf.max_drawdown, abs=1e-9)
    assert {np.sign(p) for p in pb.position} == {-1.0, 0.0, 1.0}


def test_per_bar_position_is_each_trades_quantity_over_its_bars():
    close = np.array([10, 11, 12, 13, 14, 15.0])
    perf = backtest(close, [1, 0, -1, 0, 0, 0], per_bar=True)
    t = perf.trades[0]
    assert perf.per_bar.position == [t.quantity, t.quantity, 0, 0, 0, 0]


def test_per_bar_is_absent_unless_asked():
    close = walk(100)
    assert backtest(close, sma_signals(close)).per_bar is None


def test_trades_carry_entry_and_exit_bar_indices_and_duration():
    close = walk(2_000)
    perf = backtest(close, sma_signals(close), max_trades=100_000)
    for t in perf.trades:
        assert t.exit_bar - t.entry_bar == t.bars_held
        assert t.duration_s == t.bars_held * 86_400.0
    assert perf.trades[0].entry_bar >= 20


def test_warmup_bar_is_reported():
    close = walk(300)
    n = len(close)
    ts = np.arange(n, dtype=np.int64) * DAY
    perf = run_backtest(ts, close, close, close, close, np.ones(n), sma_signals(close),
                        BacktestOptions(mode="backtesting_py"), warmup=19)
    assert perf.warmup_bar == 19
    assert perf.buy_and_hold_return == pytest.approx((close[-1] / close[19] - 1) * 100)


def test_positions_from_an_empty_ledger_are_flat():
    assert positions(4, Ledger.from_rows([])).tolist() == [0.0] * 4


def test_monthly_returns_chain_month_end_equity_and_skip_empty_months():
    from backtest.curves import monthly_returns

    days = np.array(["2024-01-05", "2024-01-31", "2024-02-10", "2024-04-02", "2024-04-30"], dtype="datetime64[D]")
    ts = days.astype("datetime64[ns]").astype(np.int64)
    equity = np.array([100.0, 110.0, 99.0, 120.0, 132.0])
    got = monthly_returns(ts, equity, 100.0)
    assert [m for m, _ in got] == ["2024-01", "2024-02", "2024-04"]
    assert [r for _, r in got] == pytest.approx([10.0, -10.0, 100 * (132 / 99 - 1)])
