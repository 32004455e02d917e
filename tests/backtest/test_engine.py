"""The native fill model, one behaviour per test, on tiny series with hand-computed numbers.

Prices and rates are chosen to be exact in binary floating point, so most assertions are `==`.
Unless a test says otherwise: daily bars from 2024-01-01, initial cash 1,000, open = close.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backtest import run_backtest
from contracts import BacktestOptions, ns_to_iso

DAY = 86_400 * 10**9
T0 = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z


def run(close, signals, *, open_=None, high=None, low=None, reasons=None, warmup=0, **options):
    close = np.asarray(close, dtype=np.float64)
    open_ = close.copy() if open_ is None else np.asarray(open_, dtype=np.float64)
    high = np.maximum(open_, close) if high is None else np.asarray(high, dtype=np.float64)
    low = np.minimum(open_, close) if low is None else np.asarray(low, dtype=np.float64)
    ts = T0 + DAY * np.arange(len(close), dtype=np.int64)
    options.setdefault("initial_cash", 1_000.0)
    return run_backtest(ts, open_, high, low, close, np.zeros(len(close)),
                        np.asarray(signals, dtype=np.int8), BacktestOptions(**options),
                        reasons, warmup=warmup)


def equity(perf):
    return [p.equity for p in perf.equity_curve]


def fills(perf):
    return [(t.side, t.entry_time[:10], t.entry_price, t.exit_time[:10], t.exit_price, t.quantity)
            for t in perf.trades]


# --- signals → positions ---------------------------------------------------------------------

def test_buy_then_sell_fills_at_the_signal_bars_closes():
    perf = run([10, 11, 12, 15, 14], [1, 0, 0, -1, 0])
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-04", 15.0, 100.0)]
    assert perf.trades[0].pnl == 500.0
    assert perf.trades[0].bars_held == 3
    assert equity(perf) == [1000.0, 1100.0, 1200.0, 1500.0, 1500.0]


def test_repeated_buy_while_long_is_ignored():
    perf = run([10, 11, 12, 15], [1, 1, 1, -1])
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-04", 15.0, 100.0)]


def test_sell_while_flat_is_ignored_in_long_only_mode():
    perf = run([10, 20, 10, 20], [-1, 0, 1, -1])
    assert fills(perf) == [("long", "2024-01-03", 10.0, "2024-01-04", 20.0, 100.0)]


def test_long_only_sell_closes_without_opening_a_short():
    perf = run([10, 12, 9, 6], [1, -1, 0, 0])
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-02", 12.0, 100.0)]
    assert equity(perf) == [1000.0, 1200.0, 1200.0, 1200.0]


def test_allow_short_sell_when_flat_opens_a_short():
    perf = run([10, 8, 5], [-1, 0, 0], allow_short=True)
    assert fills(perf) == [("short", "2024-01-01", 10.0, "2024-01-03", 5.0, 100.0)]
    assert perf.trades[0].pnl == 500.0
    assert equity(perf) == [1000.0, 1200.0, 1500.0]


def test_allow_short_opposite_signal_reverses_at_the_same_fill():
    perf = run([10, 12, 9, 6, 8], [1, -1, 0, 1, 0], allow_short=True)
    assert fills(perf) == [
        ("long", "2024-01-01", 10.0, "2024-01-02", 12.0, 100.0),
        ("short", "2024-01-02", 12.0, "2024-01-04", 6.0, 100.0),
        ("long", "2024-01-04", 6.0, "2024-01-05", 8.0, 300.0),
    ]
    assert equity(perf) == [1000.0, 1200.0, 1500.0, 1800.0, 2400.0]


def test_buy_count_and_sell_count_count_every_signal_even_ignored_ones():
    perf = run([10, 11, 12, 13], [1, 1, -1, -1])
    assert (perf.buy_count, perf.sell_count, perf.total_trades) == (2, 2, 1)


def test_signals_inside_warmup_are_ignored():
    perf = run([10, 20, 10, 20], [1, 0, 1, -1], warmup=2)
    assert fills(perf) == [("long", "2024-01-03", 10.0, "2024-01-04", 20.0, 100.0)]


# --- fills -----------------------------------------------------------------------------------

def test_next_open_fills_entry_and_exit_at_the_following_bars_open():
    perf = run([10, 11, 13, 15, 16], [1, 0, -1, 0, 0], open_=[9, 10, 12, 14, 15], fill="next_open")
    assert fills(perf) == [("long", "2024-01-02", 10.0, "2024-01-04", 14.0, 100.0)]
    assert equity(perf) == [1000.0, 1100.0, 1300.0, 1400.0, 1400.0]


def test_next_open_signal_on_the_last_bar_is_not_filled():
    perf = run([10, 11, 12], [0, 0, 1], fill="next_open")
    assert perf.trades == [] and perf.buy_count == 1


def test_next_open_exit_signal_on_the_last_bar_leaves_the_end_of_data_close():
    perf = run([10, 11, 12], [1, 0, -1], open_=[10, 10, 11], fill="next_open")
    assert fills(perf) == [("long", "2024-01-02", 10.0, "2024-01-03", 12.0, 100.0)]
    assert perf.trades[0].exit_reason == "end of data"


def test_close_fill_entry_signal_on_the_last_bar_opens_nothing():
    perf = run([10, 11, 12], [0, 0, 1])
    assert perf.trades == [] and perf.final_equity == 1000.0


def test_close_fill_exit_signal_on_the_last_bar_is_a_signal_exit():
    perf = run([10, 11, 12], [1, 0, -1], reasons={2: "cross down"})
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-03", 12.0, 100.0)]
    assert perf.trades[0].exit_reason == "cross down"


def test_close_fill_reversal_on_the_last_bar_closes_but_does_not_reopen():
    perf = run([10, 11, 12], [1, 0, -1], allow_short=True)
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-03", 12.0, 100.0)]


def test_open_position_is_closed_at_the_last_close_at_end_of_data():
    perf = run([10, 11, 13], [1, 0, 0])
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-03", 13.0, 100.0)]
    assert perf.trades[0].exit_reason == "end of data"
    assert perf.final_equity == 1300.0


def test_reasons_label_entries_and_exits_and_default_to_signal():
    perf = run([10, 11, 12, 13], [1, -1, 1, -1], reasons={0: "golden cross"})
    assert [(t.entry_reason, t.exit_reason) for t in perf.trades] == [
        ("golden cross", "signal"), ("signal", "signal")]


# --- costs and sizing ------------------------------------------------------------------------

def test_commission_rate_is_charged_on_entry_and_exit_notional():
    # qty = 1000 / (10 * 1.25) = 80; fees 0.25*80*10 = 200 and 0.25*80*12 = 240
    perf = run([10, 12], [1, -1], commission_rate=0.25)
    trade = perf.trades[0]
    assert (trade.quantity, trade.commission, trade.pnl) == (80.0, 440.0, -280.0)
    assert trade.return_pct == -280.0 / 800.0 * 100
    assert perf.commissions == 440.0
    assert equity(perf) == [800.0, 720.0]


def test_fixed_commission_is_charged_per_fill_and_reserved_when_sizing():
    # qty = (1000 - 10) / 10 = 99; pnl = 99 * 2 - 2 * 10
    perf = run([10, 12], [1, -1], commission_fixed=10.0)
    trade = perf.trades[0]
    assert (trade.quantity, trade.commission, trade.pnl) == (99.0, 20.0, 178.0)
    assert perf.final_equity == 1178.0


def test_slippage_makes_buys_dearer_and_sells_cheaper():
    # buy at 10 * 1.25 = 12.5 (qty 80), sell at 16 * 0.75 = 12
    perf = run([10, 16], [1, -1], slippage_rate=0.25)
    trade = perf.trades[0]
    assert (trade.entry_price, trade.exit_price, trade.quantity, trade.pnl) == (12.5, 12.0, 80.0, -40.0)


def test_slippage_on_a_short_sells_lower_and_covers_higher():
    perf = run([16, 8], [-1, 0], slippage_rate=0.25, allow_short=True)
    trade = perf.trades[0]
    assert (trade.entry_price, trade.exit_price) == (12.0, 10.0)
    assert trade.pnl == trade.quantity * 2.0


def test_fractional_sizing_invests_position_size_of_equity():
    perf = run([8, 10], [1, -1], position_size=0.5)
    assert perf.trades[0].quantity == 62.5
    assert perf.final_equity == 1125.0


def test_whole_units_round_the_quantity_down():
    perf = run([30, 33], [1, -1], fractional=False)
    assert perf.trades[0].quantity == 33.0
    assert perf.final_equity == 1099.0


def test_entry_that_cannot_afford_one_unit_is_skipped_and_a_later_buy_retries():
    perf = run([150, 150, 50, 60], [1, 0, 1, -1], fractional=False, initial_cash=100.0)
    assert fills(perf) == [("long", "2024-01-03", 50.0, "2024-01-04", 60.0, 2.0)]


def test_sizing_compounds_on_the_cash_left_by_earlier_trades():
    perf = run([10, 20, 10, 5], [1, -1, 1, -1])
    assert [t.quantity for t in perf.trades] == [100.0, 200.0]
    assert perf.final_equity == 1000.0


# --- stops -----------------------------------------------------------------------------------
# Entry 10, stop_loss_pct=50 → stop 5; take_profit_pct=50 → target 15.

def test_stop_loss_fills_at_the_stop_when_the_low_reaches_it():
    perf = run([10, 9, 6, 7], [1, 0, 0, 0], open_=[10, 9, 8, 6], low=[10, 8, 4, 6],
               stop_loss_pct=50)
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-03", 5.0, 100.0)]
    assert perf.trades[0].exit_reason == "stop loss"
    assert equity(perf) == [1000.0, 900.0, 500.0, 500.0]


def test_stop_loss_gapped_through_fills_at_the_open():
    perf = run([10, 9, 3, 3], [1, 0, 0, 0], open_=[10, 9, 4, 3], stop_loss_pct=50)
    assert perf.trades[0].exit_price == 4.0


def test_take_profit_fills_at_the_target_when_the_high_reaches_it():
    perf = run([10, 12, 14, 20], [1, 0, 0, 0], high=[10, 13, 16, 20], take_profit_pct=50)
    assert fills(perf) == [("long", "2024-01-01", 10.0, "2024-01-03", 15.0, 100.0)]
    assert perf.trades[0].exit_reason == "take profit"


def test_take_profit_gapped_through_fills_at_the_better_open():
    perf = run([10, 12, 18], [1, 0, 0], open_=[10, 12, 17], take_profit_pct=50)
    assert perf.trades[0].exit_price == 17.0


def test_stop_and_target_in_the_same_bar_assume_the_stop_came_first():
    perf = run([10, 10, 10], [1, 0, 0], high=[10, 16, 10], low=[10, 4, 10],
               stop_loss_pct=50, take_profit_pct=50)
    assert (perf.trades[0].exit_price, perf.trades[0].exit_reason) == (5.0, "stop loss")


def test_stops_are_not_checked_on_the_entry_bar_of_a_close_fill():
    perf = run([10, 10, 10], [1, 0, -1], low=[1, 10, 10], stop_loss_pct=50)
    assert perf.trades[0].exit_reason == "signal"


def test_stop_inside_the_exit_signal_bar_comes_before_the_close_fill():
    perf = run([10, 10, 8], [1, 0, -1], low=[10, 10, 4], stop_loss_pct=50)
    assert (perf.trades[0].exit_price, perf.trades[0].exit_reason) == (5.0, "stop loss")


def test_short_stop_loss_triggers_on_the_high():
    perf = run([10, 12, 14], [-1, 0, 0], high=[10, 12, 16], allow_short=True, stop_loss_pct=50)
    assert fills(perf) == [("short", "2024-01-01", 10.0, "2024-01-03", 15.0, 100.0)]
    assert perf.trades[0].pnl == -500.0


def test_short_take_profit_triggers_on_the_low():
    perf = run([10, 8, 6], [-1, 0, 0], low=[10, 8, 4], allow_short=True, take_profit_pct=50)
    assert (perf.trades[0].exit_price, perf.trades[0].exit_reason) == (5.0, "take profit")


def test_next_open_entry_is_protected_from_its_fill_bar():
    perf = run([10, 10, 10], [1, 0, 0], open_=[10, 10, 10], low=[10, 4, 10],
               fill="next_open", stop_loss_pct=50)
    trade = perf.trades[0]
    assert (trade.entry_time[:10], trade.exit_time[:10], trade.exit_price) == (
        "2024-01-02", "2024-01-02", 5.0)
    assert trade.bars_held == 0


def test_after_a_stop_a_later_buy_reopens_even_without_a_sell_between():
    perf = run([10, 6, 8, 8], [1, 0, 1, 0], low=[10, 4, 8, 8], stop_loss_pct=50)
    assert fills(perf) == [
        ("long", "2024-01-01", 10.0, "2024-01-02", 5.0, 100.0),
        ("long", "2024-01-03", 8.0, "2024-01-04", 8.0, 62.5),
    ]


def test_after_a_stop_a_signal_on_the_stop_bar_is_acted_on():
    perf = run([10, 6, 8], [1, 1, 0], low=[10, 4, 8], stop_loss_pct=50)
    assert [t.entry_time[:10] for t in perf.trades] == ["2024-01-01", "2024-01-02"]


def test_stop_slippage_and_commission_apply_to_the_stop_fill():
    perf = run([10, 6], [1, 0], low=[10, 4], stop_loss_pct=50, slippage_rate=0.5,
               commission_fixed=5.0, initial_cash=1_505.0)
    # entry 15 → qty 100, stop 7.5 gapped? open 6 < 7.5 → fill at 6, sold at 6 * 0.5 = 3
    trade = perf.trades[0]
    assert (trade.entry_price, trade.quantity, trade.exit_price) == (15.0, 100.0, 3.0)
    assert trade.pnl == -1210.0


# --- edges -----------------------------------------------------------------------------------

def test_empty_bars_give_an_empty_performance():
    perf = run([], [])
    assert (perf.bars, perf.total_trades, perf.trades, perf.equity_curve) == (0, 0, [], [])
    assert (perf.final_equity, perf.total_return, perf.sharpe_ratio) == (1000.0, 0.0, None)


def test_one_bar_cannot_trade():
    perf = run([10], [1])
    assert (perf.bars, perf.total_trades, perf.final_equity, perf.total_return) == (1, 0, 1000.0, 0.0)
    assert perf.sharpe_ratio is None and perf.cagr is None
    assert equity(perf) == [1000.0]


def test_no_signals_means_no_trades_and_flat_equity():
    perf = run([10, 11, 9, 15], [0, 0, 0, 0])
    assert (perf.total_trades, perf.exposure, perf.max_drawdown) == (0, 0.0, 0.0)
    assert (perf.win_rate, perf.profit_factor, perf.sqn, perf.sharpe_ratio) == (None, None, None, None)
    assert equity(perf) == [1000.0] * 4
    assert perf.buy_and_hold_return == 50.0


def test_flat_prices_make_every_ratio_undefined():
    perf = run([10, 10, 10, 10], [1, 0, -1, 0])
    assert (perf.total_trades, perf.win_rate, perf.total_return, perf.max_drawdown) == (1, 0.0, 0.0, 0.0)
    assert (perf.sharpe_ratio, perf.sortino_ratio, perf.calmar_ratio, perf.profit_factor) == (
        None, None, None, None)


def test_signals_outside_buy_sell_hold_are_rejected():
    with pytest.raises(ValueError, match="signals"):
        run([10, 11], [2, 0])


def test_columns_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="length"):
        run_backtest(np.arange(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3), np.ones(3),
                     np.zeros(2, np.int8), BacktestOptions())


def test_signals_given_as_a_list_of_ints_are_accepted():
    close = np.array([10.0, 15.0])
    perf = run_backtest(T0 + DAY * np.arange(2), close, close, close, close, close, [1, -1],
                        BacktestOptions(initial_cash=1000.0))
    assert perf.final_equity == 1500.0


def test_trade_list_is_capped_at_max_trades_and_flagged():
    perf = run([10, 11] * 5, [1, -1] * 5, max_trades=2)
    assert (perf.total_trades, len(perf.trades), perf.trades_truncated) == (5, 2, True)
    assert [t.entry_time[:10] for t in perf.trades] == ["2024-01-01", "2024-01-03"]


def test_trade_list_at_the_cap_is_not_flagged_truncated():
    perf = run([10, 11] * 2, [1, -1] * 2, max_trades=2)
    assert (len(perf.trades), perf.trades_truncated) == (2, False)


def test_equity_curve_downsampled_to_three_points_keeps_the_last_bar_and_the_peak():
    perf = run(list(range(10, 20)), [1] + [0] * 9, equity_points=3)
    assert [p.timestamp for p in perf.equity_curve][-1] == "2024-01-10T00:00:00Z"
    assert len(perf.equity_curve) <= 3
    assert max(equity(perf)) == perf.peak_equity == 1900.0


def test_equity_points_zero_omits_the_curve():
    assert run([10, 11], [1, 0], equity_points=0).equity_curve == []


def test_start_end_and_trade_times_are_iso_utc():
    perf = run([10, 11, 12], [1, 0, -1])
    assert (perf.start, perf.end) == ("2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z")
    assert (perf.trades[0].entry_time, perf.trades[0].exit_time) == (
        "2024-01-01T00:00:00Z", "2024-01-03T00:00:00Z")


# --- against a bar-by-bar reference ------------------------------------------------------------

def reference(o, h, l, c, sig, opt: BacktestOptions):
    """The same rules as backtest.native, written the slow obvious way: one loop over bars."""
    n, cash, slip = len(c), opt.initial_cash, opt.slippage_rate
    fee = lambda qty, px: opt.commission_fixed + opt.commission_rate * qty * px  # noqa: E731
    pos = None  # [side, qty, entry, entry_fee, fill_bar]
    trades, curve, pending = [], [], None

    def close_pos(px, bar):
        nonlocal cash, pos
        side, qty, entry, entry_fee, fill_bar = pos
        exit_ = px * (1 - side * slip)
        pnl = side * qty * (exit_ - entry) - entry_fee - fee(qty, exit_)
        trades.append((side, fill_bar, bar, entry, exit_, qty, pnl))
        cash += pnl
        pos = None

    def open_pos(side, px, bar):
        nonlocal pos
        entry = px * (1 + side * slip)
        qty = (opt.position_size * cash - opt.commission_fixed) / (entry * (1 + opt.commission_rate))
        qty = qty if opt.fractional else math.floor(qty)
        if qty > 0:
            pos = [side, qty, entry, fee(qty, entry), bar]

    def target(s):
        side = pos[0] if pos else 0
        if s == 1 and side != 1:
            return 1
        if s == -1 and side == 1:
            return -1 if opt.allow_short else 0
        if s == -1 and side == 0 and opt.allow_short:
            return -1
        return None

    for t in range(n):
        if pending is not None:  # next-open fill
            if pos:
                close_pos(o[t], t)
            if pending:
                open_pos(pending, o[t], t)
            pending = None
        if pos and (t > pos[4] or opt.fill == "next_open"):
            side, entry = pos[0], pos[2]
            stop = None if opt.stop_loss_pct is None else entry * (1 - side * opt.stop_loss_pct / 100)
            tgt = None if opt.take_profit_pct is None else entry * (1 + side * opt.take_profit_pct / 100)
            adverse, favorable = (l[t], h[t]) if side > 0 else (h[t], l[t])
            if stop is not None and (adverse <= stop if side > 0 else adverse >= stop):
                close_pos(min(o[t], stop) if side > 0 else max(o[t], stop), t)
            elif tgt is not None and (favorable >= tgt if side > 0 else favorable <= tgt):
                close_pos(max(o[t], tgt) if side > 0 else min(o[t], tgt), t)
        want = target(sig[t])
        if want is not None:
            if opt.fill == "close":
                if pos:
                    close_pos(c[t], t)
                if want and t < n - 1:
                    open_pos(want, c[t], t)
            elif t < n - 1:
                pending = want
        if pos and t == n - 1:
            close_pos(c[t], t)
        curve.append(cash + (pos[0] * pos[1] * (c[t] - pos[2]) - pos[3] if pos else 0.0))
    return trades, curve


def random_bars(seed: int, n: int, p_signal: float):
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    o = c * np.exp(rng.normal(0, 0.01, n))
    h = np.maximum(o, c) * np.exp(np.abs(rng.normal(0, 0.01, n)))
    l = np.minimum(o, c) * np.exp(-np.abs(rng.normal(0, 0.01, n)))
    sig = rng.choice(np.array([-1, 0, 1], np.int8), n, p=[p_signal / 2, 1 - p_signal, p_signal / 2])
    return o, h, l, c, sig


@pytest.mark.parametrize("options", [
    dict(),
    dict(allow_short=True, commission_rate=0.001, commission_fixed=1.0, slippage_rate=0.0005),
    dict(fill="next_open", stop_loss_pct=3.0, take_profit_pct=6.0),
    dict(fill="next_open", allow_short=True, stop_loss_pct=2.0, fractional=False),
    dict(allow_short=True, take_profit_pct=4.0, position_size=0.5, slippage_rate=0.001),
    dict(stop_loss_pct=8.0, commission_rate=0.002),
], ids=["plain", "short-costs", "next-open-stops", "next-open-short-whole", "short-tp", "long-sl"])
@pytest.mark.parametrize("p_signal", [0.02, 0.08])
def test_engine_matches_a_bar_by_bar_reference(options, p_signal):
    o, h, l, c, sig = random_bars(7, 3_000, p_signal)
    opt = BacktestOptions(initial_cash=10_000.0, max_trades=100_000, equity_points=100_000, **options)
    ts = T0 + DAY * np.arange(len(c), dtype=np.int64)
    perf = run_backtest(ts, o, h, l, c, np.zeros(len(c)), sig, opt)
    want_trades, want_curve = reference(o, h, l, c, sig, opt)
    bar = {ns_to_iso(t): i for i, t in enumerate(ts.tolist())}
    got = [(1 if t.side == "long" else -1, bar[t.entry_time], bar[t.exit_time],
            t.entry_price, t.exit_price, t.quantity, t.pnl) for t in perf.trades]
    assert len(got) == len(want_trades) > 5
    for g, w in zip(got, want_trades):
        assert g[:3] == w[:3]
        assert g[3:] == pytest.approx(w[3:], rel=1e-12)
    assert equity(perf) == pytest.approx(want_curve, rel=1e-12)
