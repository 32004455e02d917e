"""Native metric definitions (backtest/metrics.py docstring), one per test, on tiny series.

Expected values are worked out by hand from the definitions; `approx(rel=1e-12)` only absorbs
floating-point rounding of a formula's last bits.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from backtest import run_backtest
from backtest.metrics import infer_periods_per_year
from contracts import BacktestOptions

DAY = 86_400 * 10**9
T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z, a Monday


def exact(x):
    return pytest.approx(x, rel=1e-12, abs=0)


def run(close, signals, *, ts=None, warmup=0, **options):
    close = np.asarray(close, dtype=np.float64)
    ts = T0 + DAY * np.arange(len(close), dtype=np.int64) if ts is None else np.asarray(ts, np.int64)
    options.setdefault("initial_cash", 800.0)
    return run_backtest(ts, close, close, close, close, np.zeros(len(close)),
                        np.asarray(signals, dtype=np.int8), BacktestOptions(**options),
                        warmup=warmup)


# Long 100 units from 8, marked at 10, 6, 10: equity 800 → 1000 → 600 → 1000.
SWING = ([8, 10, 6, 10], [1, 0, 0, 0])
# Three round trips of 100 units: +200 (10→12), -100 (12→11), +50 (11→11.5); cash 1000.
THREE = ([10, 12, 12, 11, 11, 11.5], [1, -1, 1, -1, 1, -1])


# --- account ---------------------------------------------------------------------------------

def test_total_return_and_pnl_are_measured_against_initial_cash():
    perf = run(*SWING)
    assert (perf.total_return, perf.total_pnl, perf.final_equity) == (25.0, 200.0, 1000.0)


def test_peak_equity_is_the_highest_mark_including_initial_cash():
    assert run(*SWING).peak_equity == 1000.0
    assert run([8, 6, 7], [1, 0, 0]).peak_equity == 800.0


def test_max_drawdown_is_the_deepest_fall_from_the_running_peak_as_a_negative_percent():
    assert run(*SWING).max_drawdown == exact(-40.0)


def test_equity_curve_drawdown_pct_is_the_fall_from_the_running_peak():
    perf = run(*SWING)
    assert [p.drawdown_pct for p in perf.equity_curve] == [0.0, 0.0, exact(-40.0), 0.0]


def test_drawdown_counts_from_initial_cash_when_the_first_bar_loses():
    perf = run([8, 8], [1, 0], commission_fixed=80.0)  # 80 on each fill: 800 → 720 → 640
    assert perf.equity_curve[0].equity == 720.0
    assert perf.max_drawdown == exact(-20.0)


def test_max_drawdown_duration_runs_from_the_peak_to_the_recovery():
    assert run(*SWING).max_drawdown_duration_s == 2 * 86_400.0  # peak day 1, back on day 3


def test_an_unrecovered_drawdown_lasts_until_the_last_bar():
    perf = run([8, 10, 9, 9, 9], [1, 0, 0, 0, 0])
    assert perf.max_drawdown_duration_s == 3 * 86_400.0


def test_no_drawdown_has_no_duration():
    assert run([8, 9, 10], [1, 0, 0]).max_drawdown_duration_s is None


def test_exposure_is_the_share_of_bars_closed_holding_a_position():
    perf = run([8, 9, 10, 11, 12], [0, 1, 0, -1, 0])  # held at the closes of bars 1 and 2
    assert perf.exposure == 40.0


def test_commissions_sum_every_fill():
    perf = run(*THREE, initial_cash=1000.0, commission_fixed=1.0)
    assert perf.commissions == 6.0


def test_buy_and_hold_return_and_outperformance():
    perf = run(*SWING)
    assert perf.buy_and_hold_return == 25.0
    assert perf.outperformance == 0.0


def test_buy_and_hold_starts_after_the_warmup_bars():
    perf = run([8, 5, 10], [0, 0, 0], warmup=1)
    assert perf.buy_and_hold_return == 100.0


# --- risk and return ---------------------------------------------------------------------------

SWING_RETURNS = [0.0, 0.25, -0.4, 2 / 3]  # 800 (initial) → 800 → 1000 → 600 → 1000


def test_sharpe_is_mean_over_sample_std_of_per_bar_returns_annualized():
    perf = run(*SWING, periods_per_year=4)
    want = statistics.mean(SWING_RETURNS) / statistics.stdev(SWING_RETURNS) * math.sqrt(4)
    assert perf.sharpe_ratio == exact(want)


def test_sharpe_subtracts_the_risk_free_rate_per_period():
    perf = run(*SWING, periods_per_year=4, risk_free_rate=0.2)
    want = (statistics.mean(SWING_RETURNS) - 0.05) / statistics.stdev(SWING_RETURNS) * 2
    assert perf.sharpe_ratio == exact(want)


def test_sortino_divides_by_the_downside_deviation_over_all_periods():
    perf = run(*SWING, periods_per_year=4)
    downside = math.sqrt(0.4**2 / 4)
    assert perf.sortino_ratio == exact(statistics.mean(SWING_RETURNS) / downside * 2)


def test_sortino_without_a_losing_period_is_undefined():
    assert run([8, 9, 10], [1, 0, 0], periods_per_year=4).sortino_ratio is None


def test_annualized_return_compounds_total_growth_over_the_bar_count():
    perf = run(*SWING, periods_per_year=8)  # 4 bars = half a year: 1.25^2
    assert perf.annualized_return == exact(56.25)


def test_annualized_volatility_is_the_sample_std_scaled_by_sqrt_periods():
    perf = run(*SWING, periods_per_year=4)
    assert perf.annualized_volatility == exact(statistics.stdev(SWING_RETURNS) * 2 * 100)


def test_cagr_compounds_over_calendar_years_of_365_25_days():
    year = int(365.25 * DAY)
    perf = run([8, 10, 18], [1, 0, 0], ts=[T0, T0 + year, T0 + 2 * year])  # 800 → 1800 in 2 years
    assert perf.cagr == exact(50.0)


def test_calmar_is_cagr_over_the_absolute_max_drawdown():
    year = int(365.25 * DAY)
    perf = run([8, 6, 18], [1, 0, 0], ts=[T0, T0 + year, T0 + 2 * year])
    assert perf.max_drawdown == exact(-25.0)
    assert perf.calmar_ratio == exact(50.0 / 25.0)


def test_calmar_without_drawdown_is_undefined():
    assert run([8, 9, 10], [1, 0, 0]).calmar_ratio is None


def test_periods_per_year_option_overrides_the_inferred_one():
    a = run(*SWING, periods_per_year=4).annualized_volatility
    b = run(*SWING, periods_per_year=16).annualized_volatility
    assert b == exact(2 * a)


# --- periods per year inferred from bar spacing ---------------------------------------------

def weekdays(n, step_ns, start=T0):
    ts = start + step_ns * np.arange(n * 3, dtype=np.int64)
    return ts[((ts // DAY + 3) % 7) < 5][:n]


def test_daily_bars_without_weekends_are_252_a_year():
    assert infer_periods_per_year(weekdays(500, DAY)) == 252.0


def test_daily_bars_with_weekends_are_365_a_year():
    assert infer_periods_per_year(T0 + DAY * np.arange(500)) == 365.0


def test_minute_bars_without_weekends_fill_6_5_hour_sessions():
    assert infer_periods_per_year(weekdays(5000, 60 * 10**9)) == 252 * 390


def test_hourly_bars_with_weekends_fill_24_hour_days():
    assert infer_periods_per_year(T0 + 3600 * 10**9 * np.arange(500)) == 365 * 24


def test_weekly_bars_count_calendar_weeks():
    assert infer_periods_per_year(T0 + 7 * DAY * np.arange(100)) == 365.25 / 7


# --- trades ----------------------------------------------------------------------------------

def test_trade_pnl_and_return_pct_are_net_of_commission():
    perf = run(*THREE, initial_cash=1000.0)
    assert [t.pnl for t in perf.trades] == [exact(200.0), exact(-100.0), exact(50.0)]
    assert [t.return_pct for t in perf.trades] == [exact(20.0), exact(-100 / 1200 * 100),
                                                   exact(50 / 1100 * 100)]


def test_win_rate_is_the_percent_of_trades_with_positive_pnl():
    perf = run(*THREE, initial_cash=1000.0)
    assert (perf.total_trades, perf.profitable_trades) == (3, 2)
    assert perf.win_rate == exact(200 / 3)


def test_avg_win_and_avg_loss_are_mean_pnl_in_money():
    perf = run(*THREE, initial_cash=1000.0)
    assert (perf.avg_win, perf.avg_loss) == (exact(125.0), exact(-100.0))


def test_profit_factor_is_gross_profit_over_gross_loss():
    assert run(*THREE, initial_cash=1000.0).profit_factor == exact(2.5)


def test_profit_factor_without_a_losing_trade_is_undefined():
    assert run([10, 12], [1, -1]).profit_factor is None


def test_profit_factor_without_a_winning_trade_is_zero():
    assert run([10, 8], [1, -1]).profit_factor == 0.0


def test_expectancy_is_mean_pnl_per_trade():
    assert run(*THREE, initial_cash=1000.0).expectancy == exact(50.0)


def test_sqn_is_root_n_times_mean_pnl_over_its_sample_std():
    assert run(*THREE, initial_cash=1000.0).sqn == exact(math.sqrt(3) * 50 / 150)


def test_sqn_of_a_single_trade_is_undefined():
    assert run([10, 12], [1, -1]).sqn is None


def test_best_worst_and_avg_trade_are_over_trade_return_pct():
    perf = run(*THREE, initial_cash=1000.0)
    returns = [20.0, -100 / 1200 * 100, 50 / 1100 * 100]
    assert (perf.best_trade, perf.worst_trade) == (exact(20.0), exact(returns[1]))
    assert perf.avg_trade == exact(sum(returns) / 3)


def test_trade_durations_are_in_seconds_of_bar_time():
    perf = run([10, 11, 12, 13, 14, 15], [1, -1, 1, 0, 0, -1])
    assert (perf.max_trade_duration_s, perf.avg_trade_duration_s) == (3 * 86_400.0, 2 * 86_400.0)


def test_trade_metrics_without_trades_are_undefined():
    perf = run([10, 12], [0, 0])
    assert (perf.win_rate, perf.avg_win, perf.avg_loss, perf.expectancy, perf.best_trade,
            perf.avg_trade, perf.max_trade_duration_s) == (None,) * 7


# --- the fuller set: average drawdown, alpha/beta, Kelly, expectancy %, duration -----------

def test_average_drawdown_is_the_mean_of_each_periods_deepest_fall():
    # long 100 from 8: equity 800, 1000, 600, 1000, 900, 800, 1000 → periods -40 % and -20 %
    perf = run([8, 10, 6, 10, 9, 8, 10], [1, 0, 0, 0, 0, 0, 0])
    assert perf.avg_drawdown == exact(-30.0)
    assert perf.avg_drawdown_duration_s == (2 + 3) / 2 * 86_400.0


def test_no_drawdown_has_no_average_drawdown():
    perf = run([8, 9, 10], [1, 0, 0])
    assert perf.avg_drawdown is None and perf.avg_drawdown_duration_s is None


def test_beta_of_a_fully_invested_long_is_one_and_alpha_zero():
    close = 100 * np.exp(np.cumsum(np.random.default_rng(4).normal(0, 0.01, 300)))
    perf = run(close, [1] + [0] * 299, initial_cash=10_000.0)
    assert perf.beta == pytest.approx(1.0, rel=1e-9)
    assert perf.alpha == pytest.approx(perf.total_return - perf.buy_and_hold_return, abs=1e-9)


def test_alpha_is_jensens_alpha_with_the_risk_free_rate():
    close = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, 200)))
    sig = np.zeros(200, np.int8)
    sig[[10, 80]], sig[[50, 150]] = 1, -1
    perf = run(close, sig, initial_cash=10_000.0, risk_free_rate=0.02)
    equity = np.array([p.equity for p in perf.equity_curve])
    cov = np.cov(equity[1:] / equity[:-1] - 1, close[1:] / close[:-1] - 1)  # simple returns (native)
    beta = cov[0, 1] / cov[1, 1]
    assert perf.beta == pytest.approx(beta, rel=1e-9)
    assert perf.alpha == pytest.approx(perf.total_return - 2 - beta * (perf.buy_and_hold_return - 2), rel=1e-12)


def test_kelly_criterion_from_win_rate_and_win_loss_ratio():
    perf = run(*THREE, initial_cash=1000.0)  # wins 200, 50; loss -100: W = 2/3, ratio 125 / 100
    assert perf.kelly_criterion == exact(2 / 3 - (1 / 3) / 1.25)


def test_kelly_needs_a_winner_and_a_loser():
    assert run([10, 12], [1, -1]).kelly_criterion is None


def test_expectancy_pct_is_the_mean_trade_return():
    perf = run(*THREE, initial_cash=1000.0)
    assert perf.expectancy_pct == exact(statistics.mean(t.return_pct for t in perf.trades))
    assert perf.expectancy == exact((200 - 100 + 50) / 3)


def test_duration_is_the_span_of_the_bars():
    assert run(*SWING).duration_s == 3 * 86_400.0


def test_native_trade_durations_are_exact_not_rounded():
    hour = 3_600 * 10**9
    ts = T0 + np.array([0, 1, 2, 3, 5]) * hour + np.array([0, 0, 0, 0, 17 * 10**9])
    perf = run([10, 11, 12, 13, 14], [1, 0, 0, 0, -1], ts=ts)
    assert perf.max_trade_duration_s == 5 * 3600 + 17


# --- the running peak ------------------------------------------------------------------------

def _series(kind: str, n: int, rng) -> np.ndarray:
    drift = {"falling": -0.002, "flat": 0.0, "rising": 0.002, "nan": 0.0, "ties": 0.0}[kind]
    x = 1_000 * np.exp(np.cumsum(rng.normal(drift, 0.01, n)))
    if kind == "nan" and n > 2:
        x[rng.integers(1, n, 3)] = np.nan
    if kind == "ties":
        x = np.round(x / 10) * 10
    return x


@pytest.mark.parametrize("kind", ["falling", "flat", "rising", "nan", "ties"])
def test_running_max_is_the_plain_accumulate_bit_for_bit(kind):
    """metrics.running_max (blocks, only the rising ones accumulated) is what the drawdown of
    every backtest uses; it must give np.maximum.accumulate's bits on any series."""
    from backtest.metrics import running_max

    rng = np.random.default_rng(len(kind))
    for n in (1, 2, 511, 512, 2_047, 2_048, 2_049, 10_000, 100_003):
        x = _series(kind, n, rng)
        assert running_max(x).tobytes() == np.maximum.accumulate(x).tobytes(), (kind, n)


def test_running_max_of_a_series_starting_at_or_below_zero_is_the_plain_accumulate():
    from backtest.metrics import running_max

    x = np.concatenate(([-0.0, 0.0], np.zeros(5_000), -np.ones(5_000)))
    assert running_max(x).tobytes() == np.maximum.accumulate(x).tobytes()


# --- what a sweep chunk computes once (BarFacts) and the passes saved per backtest ------------

def _walk(n: int, seed: int, step_ns: int = 60 * 10**9):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = T0 + step_ns * np.arange(n, dtype=np.int64)
    fast = np.convolve(close, np.ones(10) / 10, "same") > np.convolve(close, np.ones(60) / 60, "same")
    return ts, close, np.diff(fast.astype(np.int8), prepend=0).astype(np.int8)


@pytest.mark.parametrize("options", [
    {}, {"risk_free_rate": 0.04}, {"periods_per_year": 252.0}, {"allow_short": True, "fill": "next_open"},
    {"commission_rate": 0.001, "commission_fixed": 1.0, "fractional": False}, {"stop_loss_pct": 1.5},
])
def test_bar_facts_shared_by_many_backtests_give_every_figure_bit_for_bit(options):
    """A sweep chunk's points share one BarFacts (periods per year, beta's market side): each
    point's Performance must be byte-identical to the one computed without it."""
    from backtest.metrics import BarFacts
    from msgspec import msgpack

    ts, close, signals = _walk(20_000, 11)
    facts = BarFacts(ts, close)
    for shift in (0, 3, 40):  # several 'points' on the same facts
        sig = np.roll(signals, shift)
        opts = BacktestOptions(**options)
        plain = run_backtest(ts, close, close, close, close, np.ones(len(close)), sig, opts)
        shared = run_backtest(ts, close, close, close, close, np.ones(len(close)), sig, opts, facts=facts)
        assert msgpack.encode(shared) == msgpack.encode(plain), (options, shift)


def test_run_backtest_refuses_the_facts_of_other_bars():
    from backtest.metrics import BarFacts

    ts, close, signals = _walk(1_000, 12)
    other = close.copy()
    with pytest.raises(ValueError, match="other bars"):
        run_backtest(ts, close, close, close, close, np.ones(len(close)), signals, BacktestOptions(),
                     facts=BarFacts(ts, other))


def test_drawdown_periods_of_a_nonpositive_series_are_the_abs_paths_bit_for_bit():
    """The native drawdown is never above 0 (its peak includes the positive initial cash), so the
    depths are found without an abs() copy; zeros of either sign, NaN and -inf included."""
    from backtest.metrics import drawdown_periods

    rng = np.random.default_rng(4)
    for n in (1, 2, 3, 50, 5_000):
        dd = -np.abs(rng.normal(0, 0.05, n))
        dd[rng.random(n) < 0.3] = 0.0
        dd[rng.random(n) < 0.1] = -0.0
        if n > 10:
            dd[[3, 7]] = np.nan
            dd[9] = -np.inf
        ts = T0 + DAY * np.arange(n, dtype=np.int64)
        for tail in (True, False):
            plain = drawdown_periods(ts, dd, tail_of_one_bar=tail)
            fast = drawdown_periods(ts, dd, tail_of_one_bar=tail, nonpositive=True)
            assert [a.tobytes() for a in fast] == [a.tobytes() for a in plain], (n, tail)


def test_peak_equity_from_the_running_peak_is_the_maximum_even_with_a_nan():
    close = [8.0, 10.0, 6.0, 10.0]
    assert run(close, [1, 0, 0, 0]).peak_equity == 1000.0
    broken = run([8.0, np.nan, 6.0, 10.0], [1, 0, 0, 0])
    plain = max(800.0, float(np.max(np.array([800.0, np.nan, 600.0, 1000.0]))))
    assert broken.peak_equity == plain or (math.isnan(broken.peak_equity) and math.isnan(plain))


@pytest.mark.parametrize("kind", ["falling", "flat", "rising", "nan", "ties"])
def test_running_max_with_a_floor_is_the_accumulate_then_the_floor_bit_for_bit(kind):
    """The drawdown's peak including the initial cash, in the running peak's own pass."""
    from backtest.metrics import running_max

    rng = np.random.default_rng(7 + len(kind))
    for n in (1, 2, 511, 2_048, 2_049, 100_003):
        x = _series(kind, n, rng)
        for floor in (1e-9, float(np.nanmedian(x)) if n else 1.0, 1_000.0, 1e12):
            expected = np.maximum(np.maximum.accumulate(x), floor)
            assert running_max(x, floor=floor).tobytes() == expected.tobytes(), (kind, n, floor)
    with pytest.raises(ValueError):
        running_max(np.ones(10), floor=0.0)
