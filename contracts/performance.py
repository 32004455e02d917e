"""Backtest metrics as they travel in `performance`.

Units: every `*_return`, `win_rate`, `max_drawdown`, `avg_drawdown`, `exposure`,
`annualized_volatility`, `best_trade`, `worst_trade`, `avg_trade`, `expectancy_pct`, `alpha` and
`return_pct` is a percentage (12.5 means 12.5 %);
money fields are in the account currency; durations are seconds of bar time. A ratio that is
undefined (no losing trade, zero volatility) is `null`. Definitions live in backtest/metrics.py.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class Trade(msgspec.Struct, kw_only=True):
    side: Literal["long", "short"]
    entry_time: str
    exit_time: str | None
    entry_price: float
    exit_price: float | None
    quantity: float
    pnl: float
    return_pct: float
    commission: float = 0.0
    bars_held: int = 0
    entry_reason: str | None = None
    exit_reason: str | None = None
    # bar indices into the request's bars (0-based) and exit_time - entry_time in seconds
    entry_bar: int | None = None
    exit_bar: int | None = None
    duration_s: float | None = None


class EquityPoint(msgspec.Struct, array_like=True):
    """`[timestamp, equity, drawdown_pct]`: compact because curves are long."""

    timestamp: str
    equity: float
    drawdown_pct: float


class MonthlyReturn(msgspec.Struct, array_like=True):
    """`[month, return_pct]`: "YYYY-MM" (UTC) and the equity's return over that calendar month
    in percent (month-end equity over the previous month-end's, the first month over the
    initial cash)."""

    month: str
    return_pct: float | None


class PerBar(msgspec.Struct, kw_only=True):
    """Every bar, columnar (`options.per_bar`): `timestamp` in epoch milliseconds, `position`
    the signed units held at the bar's close as the equity marks them (negative: short),
    `equity` at the close, `drawdown_pct` from the running peak (<= 0, percent)."""

    timestamp: list[int] = []
    position: list[float] = []
    equity: list[float] = []
    drawdown_pct: list[float] = []


class Performance(msgspec.Struct, kw_only=True):
    # the older service's fields
    total_return: float | None = None
    total_pnl: float | None = None
    win_rate: float | None = None
    total_trades: int = 0
    profitable_trades: int = 0
    buy_count: int = 0
    sell_count: int = 0
    avg_win: float | None = None
    avg_loss: float | None = None
    profit_factor: float | None = None
    max_drawdown: float | None = None
    sharpe_ratio: float | None = None
    buy_and_hold_return: float | None = None
    outperformance: float | None = None
    # the standard set
    start: str | None = None
    end: str | None = None
    bars: int = 0
    initial_cash: float | None = None
    final_equity: float | None = None
    peak_equity: float | None = None
    commissions: float | None = None
    cagr: float | None = None
    annualized_return: float | None = None
    annualized_volatility: float | None = None
    sortino_ratio: float | None = None
    calmar_ratio: float | None = None
    exposure: float | None = None
    expectancy: float | None = None
    sqn: float | None = None
    best_trade: float | None = None
    worst_trade: float | None = None
    avg_trade: float | None = None
    max_trade_duration_s: float | None = None
    avg_trade_duration_s: float | None = None
    max_drawdown_duration_s: float | None = None
    trades: list[Trade] = []
    trades_truncated: bool = False
    equity_curve: list[EquityPoint] = []
    # the fuller set (backtest/metrics.py): alpha, avg_drawdown (<= 0) and expectancy_pct in %,
    # beta and kelly_criterion plain ratios, durations in seconds of bar time
    alpha: float | None = None
    beta: float | None = None
    avg_drawdown: float | None = None
    avg_drawdown_duration_s: float | None = None
    kelly_criterion: float | None = None
    expectancy_pct: float | None = None
    duration_s: float | None = None
    # the first bar after the warm-up (bars whose indicators are undefined): buy & hold and
    # trading start there (0 in native mode)
    warmup_bar: int = 0
    per_bar: PerBar | None = None
    # calendar-month returns (empty when equity_points is 0, as in sweeps)
    monthly_returns: list[MonthlyReturn] = []
    # the strategy's indicator() series at the equity curve's bars (same length and order)
    indicators: dict[str, list[float | None]] = {}
