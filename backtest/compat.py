"""``mode="backtesting_py"``: reproduce backtesting.py 0.6.6 figure for figure.

It models ``Backtest(data, S, cash=initial_cash, commission=(commission_fixed, commission_rate),
spread=slippage_rate, trade_on_close=True, exclusive_orders=True, finalize_trades=True)``
where ``S.next`` does, for the signal of the current bar:

    BUY:  if not self.position.is_long: self.buy(sl=..., tp=...)       # covers a short first
    SELL: long-only: if self.position: self.position.close()
          allow_short: if not self.position.is_short: self.sell(sl=..., tp=...)

with ``sl``/``tp`` = the signal bar's close * (1 -/+ pct / 100) when the options set them, and
``warmup`` = the bars before every indicator is defined (backtesting.py's warm-up). What that
implies, all taken from backtesting.py's source:

- ``next`` first runs on bar ``warmup + 1``; earlier signals are never seen.
- An order placed on bar s fills at close[s] with entry/exit bar s, but the broker books it when
  it processes bar s + 1, so equity[s] is still the pre-trade account.
- Size: ``int(cash * f // (p * (1 + spread) + commission(f, p) / f))`` units, ``f`` =
  ``position_size`` (``1 - eps``, all of the equity, when it is 1: ``order_size``); a size of 0
  cancels the order (the account stays flat).
- Units: ``fractional=false`` is ``Backtest`` (whole units); ``fractional=true`` (the default)
  is ``FractionalBacktest(fractional_unit=u)`` with ``u = options.fractional_unit`` or 1e-6
  (FractionalBacktest's own default is 1e-8: pass it explicitly to compare). Like that class, the
  run happens on prices times ``u`` in whole multiples of ``u``, and the trades are reported
  back in prices / ``u`` and quantity * ``u``; stats are those of the scaled run. Entries pay ``p * (1 +/- spread)``;
  exits fill at the raw price (the spread is charged once). Commission ``fixed + rate * |size| *
  price`` is paid at entry (on the spread-adjusted price) and at exit.
- Stops: as backtest.stops, checked from the bar after the signal.
- End of data (``finalize_trades``): the broker re-runs the last bar, where a market order fills
  at ``Close[-2]``: open trades close at close[n-2] on bar n-2, and an order from a signal on the
  last bar opens a trade at close[n-2] that stays open: it counts in equity but not in trades.
- Equity <= 0 on a bar closes everything at that close and zeroes the rest of the curve.
- Stats: Sharpe/Sortino/annualized figures on calendar-period (daily, or weekly/monthly/yearly
  for such bars) returns of the equity, profit factor on trade returns, exposure counting entry
  through exit bar inclusive, buy & hold from close[warmup], avg trade as a geometric mean,
  calmar = annualized return / max drawdown; see ``metrics``.

Performance units stay the contract's (expectancy, avg_win/avg_loss are money); only values that
backtesting.py defines differently follow it.

Not reproduced: the out-of-money rule on the last bar itself (its finalize re-run), and orders
backtesting.py would reject (an ``sl``/``tp`` on the wrong side of the spread-adjusted price).
"""

from __future__ import annotations

import dataclasses
import math
import sys

import numpy as np

from contracts import BacktestOptions

from .ledger import END, RUIN, SIGNAL, Ledger, equity_curve
from .metrics import DAY_NS, NS, capm, drawdown_periods, num, ratio, running_max, trade_metrics
from .native import next_at
from .stops import first_exit

FULL = 1 - sys.float_info.epsilon  # Strategy.buy()'s default size: "all of the equity"
DEFAULT_UNIT = 1e-6  # fractional_unit when the options give none (a micro-unit)


def order_size(opt: BacktestOptions) -> float:
    """``size=`` of ``Strategy.buy()/sell()``: ``position_size`` below 1 is that fraction of the
    equity (backtesting.py's relative size); 1 (the default) is its default, all of the equity
    (``1 - eps``). backtesting.py reads a size >= 1 as whole units, which the contract's
    ``position_size <= 1`` cannot ask for."""
    return FULL if opt.position_size >= 1 else float(opt.position_size)


def unit_of(opt: BacktestOptions) -> float:
    """The tradable unit: 1 (whole units, ``Backtest``) when ``fractional`` is false, else
    ``fractional_unit`` (default ``DEFAULT_UNIT``), as ``FractionalBacktest(fractional_unit=)``."""
    if not opt.fractional:
        return 1.0
    return DEFAULT_UNIT if opt.fractional_unit is None else float(opt.fractional_unit)


def scale(unit: float, *columns: np.ndarray) -> list[np.ndarray]:
    """Prices in units of ``unit`` (FractionalBacktest's ``data[col] * fractional_unit``)."""
    return [x * unit for x in columns] if unit != 1.0 else list(columns)


def unscale(ledger: Ledger, unit: float) -> Ledger:
    """Trades back in whole-unit prices and quantities (FractionalBacktest's ``Size *= unit``,
    ``EntryPrice/ExitPrice /= unit``); money fields are unchanged."""
    if unit == 1.0:
        return ledger
    return dataclasses.replace(ledger, quantity=ledger.quantity * unit,
                               entry_price=ledger.entry_price / unit,
                               exit_price=ledger.exit_price / unit)


def simulate(o, h, l, c, signals, opt: BacktestOptions, warmup: int) -> tuple[Ledger, np.ndarray]:
    """Trades and per-bar equity on prices already scaled to the unit (see ``scale``)."""
    rows = _trades(o, h, l, c, signals, opt, 1 + warmup)
    ledger = Ledger.from_rows(rows)
    equity = equity_curve(c, opt.initial_cash, ledger)
    broke = np.flatnonzero(equity[1 + warmup:] <= 0)
    if len(broke):
        bar = 1 + warmup + int(broke[0])
        rows = [r for r in rows if r[12] <= bar]
        if rows and rows[-1][13] > bar:
            rows[-1] = _close(rows[-1], float(c[bar]), bar, bar, RUIN, opt)
        ledger = Ledger.from_rows(rows)
        equity = equity_curve(c, opt.initial_cash, ledger)
        equity[bar:] = 0.0
    return ledger, equity


def _trades(o, h, l, c, signals, opt: BacktestOptions, start: int) -> list[tuple]:
    n = len(c)
    buys = np.flatnonzero(signals == 1)
    sells = np.flatnonzero(signals == -1)
    short = opt.allow_short
    spread, rate, fixed = opt.slippage_rate, opt.commission_rate, opt.commission_fixed
    sl, tp = opt.stop_loss_pct, opt.take_profit_pct
    size = order_size(opt)
    rows: list[tuple] = []
    cash = float(opt.initial_cash)
    i, s, carry = start, 0, 0
    while True:
        if carry:
            side, carry = carry, 0
        else:
            s, side = next_at(buys, i, n), 1
            if short:
                t = next_at(sells, i, n)
                if t < s:
                    s, side = t, -1
        if s >= n:
            break
        last = s == n - 1
        price = float(c[n - 2] if last else c[s])
        adjusted = price * (1 + math.copysign(spread, side))
        with_commission = adjusted + (fixed + size * price * rate) / size
        qty = int((max(0.0, cash) * 1.0 * size) // with_commission)
        if qty == 0 or qty * with_commission > cash:
            i = s + 1
            continue
        entry_comm = fixed + qty * adjusted * rate
        cash_open = cash - entry_comm
        booked = n - 1 if last else s + 1
        x = next_at(sells if side > 0 else buys, s + 1, n)
        hit = None
        if sl is not None or tp is not None:
            ref = float(c[s])
            stop = None if sl is None else ref * (1 - side * sl / 100)
            target = None if tp is None else ref * (1 + side * tp / 100)
            hit = first_exit(o, h, l, booked, min(x, n - 1), side, stop, target)
        row = (side, s, n - 2 if last else s, -1, -1, END, adjusted, math.nan, qty, entry_comm,
               math.nan, math.nan, booked, n, cash_open, math.nan, False)
        if hit is not None:
            bar, kind, fill = hit
            row = _close(row, fill, bar, bar, kind, opt)
            if last:  # the final re-run fills the order and its bracket on the last bar: done
                rows.append(row)
                break
        elif last:  # opened by the final re-run: left open, in equity only
            rows.append(row)
            break
        elif x <= n - 2:
            row = _close(row, float(c[x]), x, x + 1, SIGNAL, opt, signal=x)
        else:  # finalize_trades: the re-run of the last bar fills at Close[-2]
            row = _close(row, float(c[n - 2]), n - 2, n - 1, END, opt)
        rows.append(row)
        cash = row[15]
        if hit is not None:
            i = hit[0]
        elif x < n:
            if short:
                s, carry = x, -side
            i = x + 1
        else:
            break
    return rows


def _close(row: tuple, price: float, bar: int, booked: int, kind: int, opt, signal: int = -1):
    """backtesting.py's ``_Broker._close_trade`` on one of our rows."""
    side, qty, entry, cash_open = row[0], row[8], row[6], row[14]
    size = side * qty
    exit_comm = opt.commission_fixed + qty * price * opt.commission_rate
    commissions = exit_comm + (opt.commission_fixed + qty * entry * opt.commission_rate)
    gross = size * (price - entry)
    cash_after = cash_open + (gross - exit_comm)
    ret = math.copysign(1, size) * (price / entry - 1) - commissions / (qty * entry)
    return (side, row[1], row[2], signal, bar, kind, entry, price, qty, commissions,
            gross - commissions, ret * 100, row[12], booked, cash_open, cash_after, True)


def _geometric_mean(returns: np.ndarray) -> float:
    returns = np.nan_to_num(returns, nan=0.0) + 1
    if np.any(returns <= 0):
        return 0.0
    with np.errstate(all="ignore"):
        return float(np.exp(np.log(returns).sum() / (len(returns) or np.nan)) - 1)


def _period_returns(ts: np.ndarray, equity: np.ndarray) -> tuple[np.ndarray, float]:
    """Equity resampled to calendar periods (last value), and periods per year, as
    backtesting.py's ``compute_stats`` does for a DatetimeIndex."""
    diffs = np.diff(ts[-100:])
    freq_days = int(np.median(diffs) // DAY_NS) if len(diffs) else -1
    weekday = (ts // DAY_NS + 3) % 7  # Monday = 0
    weekends = float(np.mean(weekday >= 5)) > 2 / 7 * 0.6
    per_year = {7: 52, 31: 12, 365: 1}.get(freq_days, 365 if weekends else 252)
    day = ts // DAY_NS
    if freq_days == 7:
        key = (day + 3) // 7  # calendar weeks Monday..Sunday ("W-SUN" bins)
    elif freq_days == 31:
        key = ts.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64)
    elif freq_days == 365:
        key = ts.astype("datetime64[ns]").astype("datetime64[Y]").astype(np.int64)
    else:
        key = day
    last = np.concatenate((np.flatnonzero(key[1:] != key[:-1]), [len(ts) - 1]))
    values = equity[last]
    with np.errstate(all="ignore"):
        returns = values[1:] / values[:-1] - 1
    return returns[~np.isnan(returns)], float(per_year)


def metrics(ts, close, equity, trades: Ledger, rf: float, warmup: int) -> tuple[dict, np.ndarray]:
    """backtesting.py's ``compute_stats`` mapped onto Performance fields."""
    n = len(equity)
    out = trade_metrics(ts, trades)
    with np.errstate(all="ignore"):
        dd = 1 - equity / running_max(equity)
    max_dd = float(np.nan_to_num(np.max(dd)))
    held = np.zeros(n + 1, dtype=np.int64)
    np.add.at(held, trades.entry_bar, 1)
    np.add.at(held, trades.exit_bar + 1, -1)
    returns = trades.return_pct / 100
    first = close[warmup] if warmup < n else np.nan

    day_returns, per_year = _period_returns(ts, equity)
    g = _geometric_mean(day_returns)
    annual = (1 + g) ** per_year - 1
    var = float(np.var(day_returns, ddof=1)) if len(day_returns) > 1 else math.nan
    with np.errstate(all="ignore"):
        vol = math.sqrt((var + (1 + g) ** 2) ** per_year - (1 + g) ** (2 * per_year)) * 100 \
            if math.isfinite(var) else math.nan
        downside = np.sqrt(np.mean(np.clip(day_returns, -np.inf, 0) ** 2)) * np.sqrt(per_year)
    duration = int(ts[-1] - ts[0])
    years = (duration // DAY_NS + (duration % DAY_NS) // NS / 86_400) / 365.25
    final = float(equity[-1])
    with np.errstate(all="ignore"):
        cagr = ((final / equity[0]) ** (1 / years) - 1) * 100 if years else math.nan
    total_return = (final - equity[0]) / equity[0] * 100
    bh = (close[-1] - first) / first * 100

    durations, deepest = drawdown_periods(ts, -dd, tail_of_one_bar=False)
    if len(durations):
        avg_dd = num(-deepest.mean() * 100)
    else:  # backtesting.py then averages the nonzero drawdowns (and reports no duration)
        under = dd[np.nan_to_num(dd) != 0]
        avg_dd = num(-under.mean() * 100) if len(under) else None
    alpha, beta = capm(equity, close, num(total_return), num((close[-1] - first) / first * 100), rf)
    out.update({
        "total_return": num(total_return),
        "total_pnl": final - float(equity[0]),
        "final_equity": final,
        "peak_equity": float(np.max(equity)),
        "max_drawdown": -max_dd * 100,
        "max_drawdown_duration_s": _ceil_s(durations.max(), ts) if len(durations) else None,
        "avg_drawdown": avg_dd,
        "avg_drawdown_duration_s": _ceil_s(durations.mean(), ts) if len(durations) else None,
        "alpha": alpha,
        "beta": beta,
        "exposure": float(np.mean(np.cumsum(held[:n]) > 0) * 100),
        "buy_and_hold_return": num(bh),
        "outperformance": num(total_return - bh),
        "annualized_return": num(annual * 100),
        "annualized_volatility": num(vol),
        "sharpe_ratio": ratio(annual * 100 - rf * 100, vol) if math.isfinite(vol) else None,
        "sortino_ratio": ratio(annual - rf, downside),
        "cagr": num(cagr),
        "calmar_ratio": ratio(annual, max_dd),
        "profit_factor": ratio(returns[returns > 0].sum(), abs(returns[returns < 0].sum()))
        if len(trades) else None,
        "avg_trade": num(_geometric_mean(returns) * 100) if len(trades) else None,
    })
    if len(trades):
        spans = ts[trades.exit_bar] - ts[trades.entry_bar]
        out["max_trade_duration_s"] = _ceil_s(spans.max(), ts)
        out["avg_trade_duration_s"] = _ceil_s(spans.mean(), ts)
    return out, -dd


_RESOLUTIONS_NS = (DAY_NS, 3_600 * NS, 60 * NS, NS, 1_000_000, 1_000, 1)


def resolution_ns(ts: np.ndarray) -> int:
    """The data's resolution as backtesting.py rounds durations to it: the smallest unit (day,
    hour, minute, second, ms, us, ns) present in the median spacing of the last 100 bars
    (pandas ``Timedelta.resolution_string``)."""
    diffs = np.diff(ts[-100:])
    if not len(diffs):
        return 1
    period = int(np.median(diffs))
    for unit in _RESOLUTIONS_NS:
        if period % unit == 0:
            return unit
    return 1


def _ceil_s(value_ns, ts: np.ndarray) -> float:
    """A duration rounded up to the data's resolution (``Timedelta.ceil``), in seconds."""
    unit = resolution_ns(ts)
    ns = int(round(float(value_ns))) if unit > 1 else int(value_ns)
    return float(-(-ns // unit) * unit) / NS
