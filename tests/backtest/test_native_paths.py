"""backtest.native has two ways to the same trades: the whole-array one used without stops, and
the trade-by-trade walk (kept for stops). On random bars and signals, every option that reaches
the fast path, they must agree bit for bit; when the fast path declines, the walk runs."""

from __future__ import annotations

import numpy as np
import pytest

from backtest import native
from backtest.ledger import COLUMNS
from contracts import BacktestOptions

OPTIONS = [
    dict(), dict(allow_short=True), dict(fill="next_open"),
    dict(fill="next_open", allow_short=True, slippage_rate=0.001, commission_rate=0.002),
    dict(commission_fixed=5.0, fractional=False, initial_cash=1_000.0),
    dict(allow_short=True, position_size=0.3, commission_fixed=3.0),
]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
def test_whole_array_trades_equal_the_trade_walk_bit_for_bit(options):
    opt = BacktestOptions(**options)
    compared = 0
    for seed in range(150):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(2, 400))
        c = 100 * np.exp(np.cumsum(rng.normal(0, 0.05, n)))
        o = c * np.exp(rng.normal(0, 0.01, n))
        h, l = np.maximum(o, c) * 1.01, np.minimum(o, c) * 0.99
        p = rng.uniform(0.01, 0.6)
        sig = rng.choice(np.array([-1, 0, 1], np.int8), n, p=[p / 2, 1 - p, p / 2])
        warmup = min(int(rng.integers(0, 5)), n - 1)
        walked = native._walk_trades(o, h, l, c, sig, opt, warmup)
        fast = native._without_stops(o, c, sig, opt, warmup)
        if fast is None:
            continue
        compared += 1
        for name in COLUMNS:
            assert np.array_equal(getattr(fast, name), getattr(walked, name)), (seed, name)
            assert getattr(fast, name).dtype == getattr(walked, name).dtype, (seed, name)
    assert compared > 75


def test_an_entry_that_cannot_buy_falls_back_to_the_walk():
    c = np.array([10.0, 11, 12, 13, 14, 15])
    sig = np.array([1, -1, 1, -1, 1, -1], np.int8)
    opt = BacktestOptions(initial_cash=100.0, commission_fixed=200.0)
    assert native._without_stops(c, c, sig, opt, 0) is None
    assert len(native.simulate(c, c, c, c, sig, opt, 0)) == 0


@pytest.mark.parametrize("options", [dict(), dict(allow_short=True), dict(position_size=0.7, fill="next_open")],
                         ids=["long", "short", "partial-next-open"])
def test_cost_free_compounding_over_thousands_of_trades_equals_the_walk_bit_for_bit(options):
    """Without commissions or whole units the cash compounds in a shorter loop
    (native._compound_free); over 20,000 bars and thousands of trades it must give the walk's
    trades exactly."""
    opt = BacktestOptions(**options)
    rng = np.random.default_rng(2024)
    n = 20_000
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    o = c * np.exp(rng.normal(0, 0.002, n))
    h, l = np.maximum(o, c) * 1.002, np.minimum(o, c) * 0.998
    sig = rng.choice(np.array([-1, 0, 1], np.int8), n, p=[0.1, 0.8, 0.1])
    fast = native._without_stops(o, c, sig, opt, 0)
    walked = native._walk_trades(o, h, l, c, sig, opt, 0)
    assert fast is not None and len(fast) > 1_000
    for name in COLUMNS:
        assert getattr(fast, name).tobytes() == getattr(walked, name).tobytes(), name


def test_cost_free_compounding_declines_a_quantity_that_is_not_finite():
    """An entry price so small that the quantity overflows: the short loop's shortcut (costs of
    exactly 0.0) would not hold, so it declines and the general loop gives the cash."""
    entry = np.array([10.0, 1e-320, 12.0])
    exit_ = np.array([11.0, 2.0, 13.0])
    sides = np.ones(3, dtype=np.int64)
    assert native._compound_free(1_000.0, sides, entry, exit_, 1.0) is None
    general = native._compound(1_000.0, sides, entry, exit_, 1.0, 0.0, 0.0, False)
    assert general[:2].tolist() == [1_000.0, 1_100.0] and np.isnan(general[2])


def test_cost_free_compounding_gives_the_general_loops_cash_bit_for_bit():
    rng = np.random.default_rng(7)
    entry = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 3_000)))
    exit_ = entry * np.exp(rng.normal(0, 0.01, 3_000))
    sides = rng.choice(np.array([-1, 1], np.int64), 3_000)
    short = native._compound_free(10_000.0, sides, entry, exit_, 0.9)
    general = native._compound_loop(10_000.0, sides, entry, exit_, 0.9, 0.0, 0.0, False)
    assert short is not None and short.tobytes() == general.tobytes()


def test_long_only_full_size_compounding_gives_the_general_loops_cash_bit_for_bit():
    """The defaults' loop (long only, position_size 1.0) drops the two multiplications by 1."""
    rng = np.random.default_rng(8)
    entry = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, 3_000)))
    exit_ = entry * np.exp(rng.normal(0, 0.01, 3_000))
    sides = np.ones(3_000, dtype=np.int64)
    fast = native._compound_free(10_000.0, sides, entry, exit_, 1.0)
    general = native._compound_loop(10_000.0, sides, entry, exit_, 1.0, 0.0, 0.0, False)
    assert fast is not None and fast.tobytes() == general.tobytes()
