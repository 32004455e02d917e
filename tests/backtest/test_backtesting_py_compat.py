"""`mode="backtesting_py"` against backtesting.py 0.6.6 itself.

backtesting.py runs an SMA 10/30 crossover Strategy on its bundled GOOG data (`trade_on_close`,
`exclusive_orders`, `finalize_trades`, cash 10,000); we run the same signals as an array. Trades
must match exactly; equity and headline statistics to 1e-9 relative. backtesting.py is never
asked to plot, and browser and network access are made to fail while it runs.
"""

from __future__ import annotations

import socket
import warnings
import webbrowser
from contextlib import ExitStack
from functools import lru_cache
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from backtesting import Backtest, Strategy
from backtesting.lib import FractionalBacktest, crossover
from backtesting.test import EURUSD, GOOG

from backtest import run_backtest
from contracts import BacktestOptions, ns_to_iso

REL = 1e-9


class SmaCross(Strategy):
    """Buy on a cross up; on a cross down close (long-only) or go short."""

    fast, slow, short, sl_pct, tp_pct, size = 10, 30, False, None, None, None

    def init(self):
        close = pd.Series(self.data.Close)
        self.a = self.I(lambda: close.rolling(self.fast).mean().values)
        self.b = self.I(lambda: close.rolling(self.slow).mean().values)

    def next(self):
        if crossover(self.a, self.b):
            if not self.position.is_long:
                self.buy(**self.brackets(+1))
        elif crossover(self.b, self.a):
            if not self.short:
                if self.position:
                    self.position.close()
            elif not self.position.is_short:
                self.sell(**self.brackets(-1))

    def brackets(self, side):
        price = self.data.Close[-1]
        out = {} if self.size is None else {"size": self.size}
        if self.sl_pct is not None:
            out["sl"] = price * (1 - side * self.sl_pct / 100)
        if self.tp_pct is not None:
            out["tp"] = price * (1 + side * self.tp_pct / 100)
        return out


class FromArray(SmaCross):
    """The same order logic driven by a precomputed signal array (NaN during warm-up)."""

    signals, warmup = None, 0

    def init(self):
        values = np.where(np.arange(len(self.signals)) < self.warmup, np.nan, self.signals)
        self.s = self.I(lambda: values.astype(float))

    def next(self):
        signal = self.signals[len(self.data) - 1]
        if signal == 1:
            if not self.position.is_long:
                self.buy(**self.brackets(+1))
        elif signal == -1:
            if not self.short:
                if self.position:
                    self.position.close()
            elif not self.position.is_short:
                self.sell(**self.brackets(-1))


def sma_cross_signals(close: pd.Series, fast: int = 10, slow: int = 30) -> np.ndarray:
    a, b = close.rolling(fast).mean().values, close.rolling(slow).mean().values
    sig = np.zeros(len(close), np.int8)
    sig[1:][(a[:-1] < b[:-1]) & (a[1:] > b[1:])] = 1
    sig[1:][(b[:-1] < a[:-1]) & (b[1:] > a[1:])] = -1
    return sig


def offline():
    """Make any attempt to open a browser or a connection fail loudly."""
    stack = ExitStack()
    for target in ("open", "open_new", "open_new_tab"):
        stack.enter_context(mock.patch.object(webbrowser, target, side_effect=AssertionError(target)))
    stack.enter_context(mock.patch.object(socket.socket, "connect", side_effect=AssertionError("net")))
    return stack


def run_both(data, strategy, *, warmup, signals, cash=10_000.0, commission=0.0, fixed=0.0,
             spread=0.0, short=False, sl=None, tp=None, unit=None, size=None, **params):
    """backtesting.py and our compat mode on the same signals. ``unit=None`` is whole-unit
    ``Backtest`` (options.fractional=false); a float runs ``FractionalBacktest(fractional_unit=
    unit)`` against options.fractional_unit=unit. ``size`` is ``buy(size=)`` / position_size."""
    with offline(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kind, extra = (Backtest, {}) if unit is None else (FractionalBacktest, {"fractional_unit": unit})
        stats = kind(
            data, strategy, cash=cash, commission=(fixed, commission), spread=spread,
            trade_on_close=True, exclusive_orders=True, finalize_trades=True, **extra,
        ).run(short=short, sl_pct=sl, tp_pct=tp, size=size, **params)
    ts = data.index.values.astype("datetime64[ns]").astype(np.int64)
    options = BacktestOptions(
        mode="backtesting_py", initial_cash=cash, commission_rate=commission,
        commission_fixed=fixed, slippage_rate=spread, allow_short=short, stop_loss_pct=sl,
        take_profit_pct=tp, max_trades=100_000, equity_points=100_000,
        fractional=unit is not None, fractional_unit=unit,
        position_size=1.0 if size is None else size,
    )
    perf = run_backtest(ts, data.Open.values, data.High.values, data.Low.values,
                        data.Close.values, data.Volume.values.astype(float), signals, options,
                        warmup=warmup)
    return stats, perf, ts


CONFIGS = {
    "long-only": dict(),
    "commission": dict(commission=0.002),
    "fixed-and-rate-commission-short": dict(commission=0.001, fixed=3.0, short=True),
    "spread": dict(spread=0.001, commission=0.001),
    "stops-short": dict(sl=3.0, tp=8.0, short=True, commission=0.001),
}


@lru_cache(maxsize=None)
def goog(config: str):
    return run_both(GOOG, SmaCross, warmup=29, signals=sma_cross_signals(GOOG.Close),
                    **CONFIGS[config])


def our_trades(perf, ts):
    bar = {ns_to_iso(t): i for i, t in enumerate(ts.tolist())}
    return [(bar[t.entry_time], bar[t.exit_time], t.entry_price, t.exit_price,
             t.quantity if t.side == "long" else -t.quantity) for t in perf.trades]


def their_trades(stats):
    return [(r.EntryBar, r.ExitBar, r.EntryPrice, r.ExitPrice, float(r.Size))
            for r in stats._trades.itertuples()]


def positions(trades, n):
    held = np.zeros(n)
    for entry_bar, exit_bar, _, _, size in trades:
        held[entry_bar:exit_bar] = size
    return held


def assert_same_run(stats, perf, ts):
    assert our_trades(perf, ts) == their_trades(stats)
    equity = [p.equity for p in perf.equity_curve]
    assert equity == pytest.approx(stats._equity_curve.Equity.tolist(), rel=REL, abs=0)


# --- GOOG, SMA 10/30 ---------------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
def test_trades_match_exactly(config):
    stats, perf, ts = goog(config)
    assert len(perf.trades) == len(stats._trades) > 20
    assert our_trades(perf, ts) == their_trades(stats)


@pytest.mark.parametrize("config", CONFIGS)
def test_positions_match_bar_by_bar(config):
    stats, perf, ts = goog(config)
    n = len(ts)
    assert np.array_equal(positions(our_trades(perf, ts), n), positions(their_trades(stats), n))


@pytest.mark.parametrize("config", CONFIGS)
def test_trade_pnl_commission_and_return_match(config):
    stats, perf, _ = goog(config)
    theirs = stats._trades
    assert [t.pnl for t in perf.trades] == pytest.approx(theirs.PnL.tolist(), rel=REL, abs=0)
    assert [t.commission for t in perf.trades] == pytest.approx(theirs.Commission.tolist(), rel=REL, abs=0)
    assert [t.return_pct for t in perf.trades] == pytest.approx(
        (theirs.ReturnPct * 100).tolist(), rel=REL, abs=0)


@pytest.mark.parametrize("config", CONFIGS)
def test_equity_curve_matches_bar_by_bar(config):
    stats, perf, _ = goog(config)
    curve = stats._equity_curve
    assert [p.equity for p in perf.equity_curve] == pytest.approx(curve.Equity.tolist(), rel=REL, abs=0)
    assert [p.drawdown_pct for p in perf.equity_curve] == pytest.approx(
        (-curve.DrawdownPct * 100).tolist(), rel=REL, abs=1e-12)


HEADLINE = {
    "Return [%]": "total_return",
    "Equity Final [$]": "final_equity",
    "Equity Peak [$]": "peak_equity",
    "Buy & Hold Return [%]": "buy_and_hold_return",
    "Return (Ann.) [%]": "annualized_return",
    "Volatility (Ann.) [%]": "annualized_volatility",
    "CAGR [%]": "cagr",
    "Sharpe Ratio": "sharpe_ratio",
    "Sortino Ratio": "sortino_ratio",
    "Calmar Ratio": "calmar_ratio",
    "Max. Drawdown [%]": "max_drawdown",
    "Exposure Time [%]": "exposure",
    "# Trades": "total_trades",
    "Win Rate [%]": "win_rate",
    "Best Trade [%]": "best_trade",
    "Worst Trade [%]": "worst_trade",
    "Avg. Trade [%]": "avg_trade",
    "Profit Factor": "profit_factor",
    "SQN": "sqn",
}


@pytest.mark.parametrize("stat", HEADLINE)
@pytest.mark.parametrize("config", CONFIGS)
def test_headline_stat_matches(config, stat):
    stats, perf, _ = goog(config)
    assert getattr(perf, HEADLINE[stat]) == pytest.approx(float(stats[stat]), rel=REL, abs=0)


@pytest.mark.parametrize("config", CONFIGS)
def test_durations_match(config):
    stats, perf, _ = goog(config)
    assert perf.max_drawdown_duration_s == stats["Max. Drawdown Duration"].total_seconds()
    assert perf.max_trade_duration_s == stats["Max. Trade Duration"].total_seconds()


@pytest.mark.parametrize("config", ["commission", "fixed-and-rate-commission-short"])
def test_commissions_match(config):
    stats, perf, _ = goog(config)
    assert perf.commissions == pytest.approx(stats["Commissions [$]"], rel=REL, abs=0)


# --- edges of backtesting.py's broker --------------------------------------------------------

def from_array(data, signals, warmup, **config):
    strategy = type("Signals", (FromArray,), {"signals": signals, "warmup": warmup})
    return run_both(data, strategy, warmup=warmup, signals=signals, **config)


def test_open_trade_is_finalized_at_the_second_to_last_close():
    sig = np.zeros(len(GOOG), np.int8)
    sig[100] = 1
    stats, perf, ts = from_array(GOOG, sig, 0)
    assert our_trades(perf, ts)[-1][1] == len(GOOG) - 2
    assert perf.trades[-1].exit_reason == "end of data"
    assert_same_run(stats, perf, ts)


def test_entry_on_the_last_bar_stays_open_in_equity_but_not_in_trades():
    sig = sma_cross_signals(GOOG.Close)
    sig[-3:] = [0, -1, 1]
    stats, perf, ts = from_array(GOOG, sig, 29, short=True, commission=0.001)
    assert perf.equity_curve[-1].equity != perf.equity_curve[-2].equity
    assert_same_run(stats, perf, ts)
    assert perf.final_equity == pytest.approx(stats["Equity Final [$]"], rel=REL, abs=0)


def test_signal_on_the_warmup_boundary_bar_is_never_seen():
    sig = np.zeros(len(GOOG), np.int8)
    sig[[0, 5]] = 1
    sig[[50]] = -1
    stats, perf, ts = from_array(GOOG, sig, 5)  # next() first runs on bar 6
    assert perf.trades == [] and stats["# Trades"] == 0
    assert_same_run(stats, perf, ts)


def test_orders_too_big_for_the_cash_are_cancelled():
    stats, perf, ts = from_array(GOOG, sma_cross_signals(GOOG.Close), 29, cash=200.0)
    assert 0 < len(perf.trades) < len(goog("long-only")[1].trades)
    assert_same_run(stats, perf, ts)


def test_state_style_signals_with_stops_reenter_after_a_stop():
    fast, slow = GOOG.Close.rolling(5).mean().values, GOOG.Close.rolling(20).mean().values
    sig = np.where(fast > slow, 1, -1).astype(np.int8)
    sig[:19] = 0
    stats, perf, ts = from_array(GOOG, sig, 19, short=True, sl=2.0, tp=3.0)
    assert len(perf.trades) > 500
    assert_same_run(stats, perf, ts)


def test_short_that_wipes_out_the_account_is_closed_and_equity_zeroed():
    idx = pd.date_range("2020-01-01", periods=12, freq="D")
    px = np.array([10, 10, 10, 12, 16, 22, 30, 31, 25, 20, 18, 17.0])
    data = pd.DataFrame({"Open": px, "High": px * 1.01, "Low": px * 0.99, "Close": px,
                         "Volume": 1.0}, index=idx)
    sig = np.array([0, -1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], np.int8)
    stats, perf, ts = from_array(data, sig, 0, short=True)
    assert [t.exit_reason for t in perf.trades] == ["out of money"]
    assert perf.final_equity == 0.0
    assert_same_run(stats, perf, ts)


@pytest.mark.parametrize("stat", ["Sharpe Ratio", "Sortino Ratio", "Return (Ann.) [%]",
                                  "Volatility (Ann.) [%]", "CAGR [%]", "Calmar Ratio"])
def test_hourly_bars_are_resampled_to_calendar_days(stat):
    stats, perf, _ = eurusd()
    assert getattr(perf, HEADLINE[stat]) == pytest.approx(float(stats[stat]), rel=REL, abs=0)


@lru_cache(maxsize=None)
def eurusd():
    return run_both(EURUSD, SmaCross, warmup=29, signals=sma_cross_signals(EURUSD.Close),
                    short=True)


@pytest.mark.parametrize("stat", ["Sharpe Ratio", "Sortino Ratio", "Return (Ann.) [%]",
                                  "Volatility (Ann.) [%]"])
def test_weekly_bars_use_weekly_returns_and_52_periods(stat):
    stats, perf, _ = weekly()
    assert getattr(perf, HEADLINE[stat]) == pytest.approx(float(stats[stat]), rel=REL, abs=0)


@lru_cache(maxsize=None)
def weekly():
    data = GOOG.resample("W").agg({"Open": "first", "High": "max", "Low": "min",
                                   "Close": "last", "Volume": "sum"}).dropna()
    return run_both(data, SmaCross, warmup=11, signals=sma_cross_signals(data.Close, 4, 12),
                    short=True, fast=4, slow=12)


def test_an_order_on_the_last_bar_whose_bracket_is_hit_there_closes_once():
    """The final re-run fills the last bar's order and its stop on that bar: one trade, not a
    loop of re-entries (BTCUSD monthly, state signals, stops hit on the last bar)."""
    from backtesting.test import BTCUSD

    fast, slow = BTCUSD.Close.rolling(5).mean().values, BTCUSD.Close.rolling(20).mean().values
    sig = np.where(fast > slow, 1, -1).astype(np.int8)
    sig[:19] = 0
    stats, perf, ts = from_array(BTCUSD, sig, 19, short=True, sl=2.0, tp=3.0)
    assert our_trades(perf, ts)[-2:] == their_trades(stats)[-2:]
    assert len(perf.trades) == len(stats._trades)
    assert_same_run(stats, perf, ts)
