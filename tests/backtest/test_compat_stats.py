"""Every statistic backtesting.py 0.6.6 reports, from compat mode, against its own output.

Datasets (GOOG daily, EURUSD hourly, BTCUSD monthly, GOOG weekly) by strategies (SMA
crossover long-only with commission, long/short with spread and a fixed fee, state-style
signals with stop-loss/take-profit brackets), each with whole units (``Backtest``) and
fractional units (``FractionalBacktest``). Every key of backtesting.py's stats Series must have a
Performance field here; durations are compared in seconds after backtesting.py's rounding up to
the data's resolution.
"""

from __future__ import annotations

from functools import lru_cache

import math

import numpy as np
import pandas as pd
import pytest
from backtesting.test import GOOG

from contracts import ns_to_iso

from .test_backtesting_py_compat import FromArray, SmaCross, run_both, sma_cross_signals
from .test_fractional_compat import DATASETS, STRATEGIES, run as run_named

REL = 1e-9

STATS = {
    "Duration": "duration_s",
    "Exposure Time [%]": "exposure",
    "Equity Final [$]": "final_equity",
    "Equity Peak [$]": "peak_equity",
    "Commissions [$]": "commissions",
    "Return [%]": "total_return",
    "Buy & Hold Return [%]": "buy_and_hold_return",
    "Return (Ann.) [%]": "annualized_return",
    "Volatility (Ann.) [%]": "annualized_volatility",
    "CAGR [%]": "cagr",
    "Sharpe Ratio": "sharpe_ratio",
    "Sortino Ratio": "sortino_ratio",
    "Calmar Ratio": "calmar_ratio",
    "Alpha [%]": "alpha",
    "Beta": "beta",
    "Max. Drawdown [%]": "max_drawdown",
    "Avg. Drawdown [%]": "avg_drawdown",
    "Max. Drawdown Duration": "max_drawdown_duration_s",
    "Avg. Drawdown Duration": "avg_drawdown_duration_s",
    "# Trades": "total_trades",
    "Win Rate [%]": "win_rate",
    "Best Trade [%]": "best_trade",
    "Worst Trade [%]": "worst_trade",
    "Avg. Trade [%]": "avg_trade",
    "Max. Trade Duration": "max_trade_duration_s",
    "Avg. Trade Duration": "avg_trade_duration_s",
    "Profit Factor": "profit_factor",
    "Expectancy [%]": "expectancy_pct",
    "SQN": "sqn",
    "Kelly Criterion": "kelly_criterion",
}
NOT_STATS = {"Start", "End", "_strategy", "_equity_curve", "_trades"}

WEEKLY = GOOG.resample("W").agg({"Open": "first", "High": "max", "Low": "min",
                                 "Close": "last", "Volume": "sum"}).dropna()


def weekly(strategy: str, unit):
    if strategy == "state-with-stops":
        fast, slow = WEEKLY.Close.rolling(3).mean().values, WEEKLY.Close.rolling(8).mean().values
        sig = np.where(fast > slow, 1, -1).astype(np.int8)
        sig[:7] = 0
        klass = type("Signals", (FromArray,), {"signals": sig, "warmup": 7})
        return run_both(WEEKLY, klass, warmup=7, signals=sig, short=True, sl=4.0, tp=6.0, unit=unit)
    short = strategy != "sma-long-commission"
    return run_both(WEEKLY, SmaCross, warmup=11, signals=sma_cross_signals(WEEKLY.Close, 4, 12),
                    short=short, fast=4, slow=12, commission=0.001, unit=unit)


@lru_cache(maxsize=None)
def runs(dataset: str, strategy: str, sizing: str):
    unit = None if sizing == "whole" else 1e-6
    if dataset == "GOOG-weekly":
        return weekly(strategy, unit)
    return run_named(dataset, strategy, unit)


CASES = [(d, s, z) for d in [*DATASETS, "GOOG-weekly"] for s in STRATEGIES for z in ("whole", "fractional")]


def expected(value):
    if isinstance(value, pd.Timedelta):
        return value.total_seconds()
    value = float(value)
    return None if math.isnan(value) else value


def test_every_backtesting_py_stat_has_a_field():
    stats, _, _ = runs("GOOG-daily", "sma-long-commission", "whole")
    assert set(stats.index) - NOT_STATS == set(STATS)


@pytest.mark.parametrize("dataset,strategy,sizing", CASES)
def test_every_stat_matches_backtesting_py(dataset, strategy, sizing):
    stats, perf, _ = runs(dataset, strategy, sizing)
    assert perf.start == ns_to_iso(stats["Start"].value) and perf.end == ns_to_iso(stats["End"].value)
    wrong = {}
    for key, field in STATS.items():
        if key not in stats:  # Commissions [$] is left out when there were none
            assert key == "Commissions [$]" and not perf.commissions
            continue
        theirs, ours = expected(stats[key]), getattr(perf, field)
        if theirs is None or ours is None:
            if theirs is not ours:
                wrong[key] = (ours, theirs)
        elif ours != pytest.approx(theirs, rel=REL if sizing == "whole" else 1e-7, abs=1e-12):
            wrong[key] = (ours, theirs)
    assert wrong == {}


def test_trade_durations_are_rounded_up_to_the_data_resolution():
    stats, perf, _ = runs("EURUSD-hourly", "sma-long-commission", "whole")
    assert perf.avg_trade_duration_s % 3600 == 0
    exact = np.mean([(t.duration_s) for t in perf.trades])
    assert perf.avg_trade_duration_s == math.ceil(exact / 3600) * 3600
    assert perf.avg_trade_duration_s == stats["Avg. Trade Duration"].total_seconds()
