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
