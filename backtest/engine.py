"""``run_backtest``: per-bar signals → trades → equity → Performance.

Two fill models share one ledger and equity builder: the native one (backtest.native, metric
definitions in backtest.metrics) and a reproduction of backtesting.py 0.6.6 (backtest.compat),
which lets users check our numbers against a library they trust. Python loops run over trades,
never over bars, so a million bars cost a few numpy passes.
"""

from __future__ import annotations

import numpy as np

from contracts import BacktestOptions, EquityPoint, MonthlyReturn, PerBar, Performance, Trade, ns_to_iso
from contracts.bars import ns_to_isos

from . import compat, native
from .curves import extreme_indices, monthly_returns, positions
from .ledger import END, RUIN, SIGNAL, STOP, TARGET, Ledger, equity_curve
from .metrics import BarFacts, native_metrics

_EXIT_REASONS = {STOP: "stop loss", TARGET: "take profit", END: "end of data", RUIN: "out of money"}


def run_backtest(
    timestamp_ns: np.ndarray,
    open: np.ndarray,  # noqa: A002 - the bar field's name
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    signals: np.ndarray,
    options: BacktestOptions,
    reasons: dict[int, str] | None = None,
    *,
    warmup: int = 0,
    indicators: dict[str, list] | None = None,
    facts: BarFacts | None = None,
) -> Performance:
    """Backtest one signal per bar (1 BUY, -1 SELL, 0 HOLD) over OHLC bars.

    Bars are in ascending time (``timestamp_ns``: epoch nanoseconds, UTC); every column has
    the same length, else ValueError, as for a signal outside {-1, 0, 1}. Fill model, costs and
    sizing come from ``options`` (see backtest.native and backtest.compat); metric definitions
    are in backtest.metrics.

    ``reasons`` maps a bar index to the strategy's reason for that bar's signal (shown on the
    trades it opens or closes). ``warmup`` is the number of leading bars where the strategy's
    indicators are undefined: signals there are ignored and buy & hold starts after them
    (backtesting.py measures it that way, so compat mode needs it to match). ``volume`` is
    accepted for the bar shape but no fill model uses it. ``facts``: ``BarFacts`` of these very
    ``timestamp_ns`` and ``close`` columns (else ValueError), for many backtests on the same bars
    (a sweep's points): what the metrics derive from the bars alone is then computed once.
    """
    ts, o, h, l, c, sig = _arrays(timestamp_ns, open, high, low, close, volume, signals)
    n = len(c)
    buy_count, sell_count = int(np.count_nonzero(sig == 1)), int(np.count_nonzero(sig == -1))
    initial = float(options.initial_cash)
    if not 0 <= warmup:
        raise ValueError("warmup must be >= 0")
    if facts is not None and not facts.of(ts, c):
        raise ValueError("facts are of other bars than these")
    if n == 0:
        return Performance(
            bars=0, initial_cash=initial, final_equity=initial, peak_equity=initial,
            total_return=0.0, total_pnl=0.0, commissions=0.0,
            buy_count=buy_count, sell_count=sell_count,
        )
    if options.mode == "backtesting_py":
        unit = compat.unit_of(options)
        so, sh, sl, sc = compat.scale(unit, o, h, l, c)
        ledger, equity = compat.simulate(so, sh, sl, sc, sig, options, warmup)
        trades = ledger.select(ledger.closed)
        stats, dd = compat.metrics(ts, sc, equity, trades, options.risk_free_rate, warmup)
        trades = compat.unscale(trades, unit)
        held = ledger if not options.per_bar else compat.unscale(ledger, unit)
    else:
        trades = native.simulate(o, h, l, c, sig, options, warmup)
        held = trades
        equity = equity_curve(c, initial, trades)
        stats, dd = native_metrics(ts, c, equity, trades, initial, options.periods_per_year,
                                   options.risk_free_rate, warmup, facts)
    points = n if options.per_bar else options.equity_points
    idx = extreme_indices(equity, dd, points)
    curve_extras: dict = {}
    if points:
        curve_extras["monthly_returns"] = [MonthlyReturn(m, r) for m, r in monthly_returns(
            ts, equity, initial if options.mode == "native" else float(equity[0]))]
        curve_extras["indicators"] = _sampled(indicators or {}, idx, n)
    per_bar = None
    if options.per_bar:
        per_bar = PerBar(timestamp=(ts // 1_000_000).tolist(), position=positions(n, held).tolist(),
                         equity=equity.tolist(), drawdown_pct=(dd * 100 + 0.0).tolist())
    return Performance(
        **stats,
        buy_count=buy_count,
        sell_count=sell_count,
        start=ns_to_iso(ts[0]),
        end=ns_to_iso(ts[-1]),
        bars=n,
        initial_cash=initial,
        trades=_trade_list(ts, trades, options.max_trades, reasons or {}),
        trades_truncated=len(trades) > options.max_trades,
        equity_curve=_equity_points(ts, equity, dd, idx),
        **curve_extras,
        warmup_bar=min(warmup, n - 1),
        per_bar=per_bar,
    )


def _arrays(ts, o, h, l, c, v, signals):
    out = [np.asarray(ts, dtype=np.int64)]
    out += [np.asarray(x, dtype=np.float64) for x in (o, h, l, c)]
    sig = np.asarray(signals)
    lengths = {len(x) for x in out} | {len(sig), len(np.asarray(v))}
    if len(lengths) != 1:
        raise ValueError(f"bar columns and signals differ in length: {sorted(lengths)}")
    if sig.dtype != np.int8:
        if len(sig) and not np.isin(sig, (-1, 0, 1)).all():
            raise ValueError("signals must be 1 (BUY), -1 (SELL) or 0 (HOLD)")
        sig = sig.astype(np.int8)
    elif len(sig) and (sig.min() < -1 or sig.max() > 1):
        raise ValueError("signals must be 1 (BUY), -1 (SELL) or 0 (HOLD)")
    return (*out, sig)


def _trade_list(ts, trades: Ledger, limit: int, reasons: dict[int, str]) -> list[Trade]:
    k = min(len(trades), limit)
    cols = [getattr(trades, name)[:k].tolist() for name in (
        "side", "entry_signal", "exit_signal", "exit_kind", "entry_price", "exit_price",
        "quantity", "commission", "pnl", "return_pct")]
    entry_bar, exit_bar = trades.entry_bar[:k], trades.exit_bar[:k]
    cols += [ns_to_isos(ts[entry_bar]), ns_to_isos(ts[exit_bar]), (exit_bar - entry_bar).tolist(),
             entry_bar.tolist(), exit_bar.tolist(), ((ts[exit_bar] - ts[entry_bar]) / 1e9).tolist()]
    out = []
    for side, s, x, kind, ep, xp, q, comm, pnl, ret, t_in, t_out, held, b_in, b_out, dur in zip(*cols):
        out.append(Trade(
            side="long" if side > 0 else "short",
            entry_time=t_in, exit_time=t_out,
            entry_price=ep, exit_price=xp, quantity=q, pnl=pnl, return_pct=ret,
            commission=comm, bars_held=held, entry_bar=b_in, exit_bar=b_out, duration_s=dur,
            entry_reason=reasons.get(s, "signal"),
            exit_reason=reasons.get(x, "signal") if kind == SIGNAL else _EXIT_REASONS[kind],
        ))
    return out


def _sampled(indicators: dict[str, list], idx: np.ndarray, n: int) -> dict[str, list]:
    """Each full-length indicator series at the equity curve's bars (others are left out)."""
    out = {}
    for name, values in indicators.items():
        if len(values) == n:
            arr = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)[idx]
            out[str(name)] = [None if not np.isfinite(v) else v for v in arr.tolist()]
    return out


def _equity_points(ts, equity, dd, idx: np.ndarray) -> list[EquityPoint]:
    """The curve at ``idx``: every bar when they fit, else the first and last bar and each run's
    lowest and highest equity and deepest drawdown (backtest.curves.extreme_indices), so the
    drawn curve reaches the reported peak and maximum drawdown."""
    if not len(idx):
        return []
    return [
        EquityPoint(t, e, d)
        for t, e, d in zip(ns_to_isos(ts[idx]), equity[idx].tolist(), (dd[idx] * 100 + 0.0).tolist())
    ]
