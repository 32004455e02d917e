"""Metric definitions: native, then where ``mode="backtesting_py"`` differs (backtest.compat).

Notation: ``E_t`` is the equity at bar t's close (t = 0..n-1), ``E_-1 = C0`` the initial cash,
``r_t = E_t / E_(t-1) - 1`` the n per-bar simple returns, ``P`` periods per year, ``rf`` the
annual risk-free rate. Percentages are in percent (12.5 means 12.5 %). A ratio whose
denominator is zero, or whose inputs are not finite (an account that went to zero), is None.

Account
- total_return = (E_(n-1) / C0 - 1) * 100; total_pnl = E_(n-1) - C0; final_equity = E_(n-1);
  peak_equity = max(C0, max E_t); commissions = sum of every fill's commission.
- drawdown_t = (E_t / max(C0, max_(u<=t) E_u) - 1) * 100 (<= 0); max_drawdown = min drawdown_t.
- max_drawdown_duration_s: the longest stretch, in seconds of bar time, from a bar at the peak
  (or the first bar) to the next bar back at the peak, or to the last bar if never recovered.
- drawdown periods: from a bar at the peak (or the first bar) to the next bar back at the peak,
  or to the last bar if never recovered, with at least one bar under water between;
  avg_drawdown = mean over the periods of each one's deepest drawdown (%, <= 0);
  avg_drawdown_duration_s = mean length of the periods in seconds.
- beta = cov(s, m) / var(m) (ddof=1), s and m the simple returns bar to bar of the equity and
  of the close from the warm-up bar on (backtesting.py mode: log returns over every bar); alpha = total_return - 100 rf - beta *
  (buy_and_hold_return - 100 rf) (Jensen's alpha over the run, in %).
- duration_s = last - first bar time.
- exposure = % of bars at whose close a position is held.
- buy_and_hold_return = (close_(n-1) / close_w - 1) * 100, w = the warm-up bars (default 0);
  outperformance = total_return - buy_and_hold_return.

Risk and return (per-bar returns, so they see intra-trade swings)
- P = options.periods_per_year, else inferred from the median bar spacing dt: a market with
  weekend bars (> 60 % of the 2/7 a 24/7 market has) trades 365 days of 24 h, others 252 days
  of 6.5 h; dt < 1 day gives days * session / dt (1-minute stock bars: 252 * 390), 1 day <= dt
  < 7 days gives days / dt-in-days (daily bars: 252, or 365 with weekends), dt >= 7 days gives
  365.25 / dt-in-days (weekly ~52.2, monthly ~12).
- sharpe_ratio = mean(r - rf/P) / std(r, ddof=1) * sqrt(P).
- sortino_ratio = mean(r - rf/P) / sqrt(mean(min(r - rf/P, 0)^2)) * sqrt(P).
- annualized_return = ((E_(n-1) / C0) ^ (P / n) - 1) * 100 (compounded over bar count).
- annualized_volatility = std(r, ddof=1) * sqrt(P) * 100.
- cagr = ((E_(n-1) / C0) ^ (1 / years) - 1) * 100, years = (last - first timestamp) / 365.25
  days (calendar time, so it does not depend on P).
- calmar_ratio = cagr / |max_drawdown|.

Trades (closed round trips; pnl is net of both fills' commissions)
- trade return_pct = pnl / (quantity * entry_price) * 100.
- total_trades; profitable_trades = trades with pnl > 0; win_rate = profitable / total * 100.
- avg_win = mean pnl of winners; avg_loss = mean pnl of losers (negative); money.
- profit_factor = sum of winners' pnl / |sum of losers' pnl|.
- expectancy = mean pnl per trade (money); expectancy_pct = mean trade return_pct (%);
  sqn = sqrt(T) * mean(pnl) / std(pnl, ddof=1).
- kelly_criterion = W - (1 - W) / (avg_win / |avg_loss|), W = win_rate / 100 (None without
  both a winner and a loser).
- best_trade / worst_trade / avg_trade = max / min / arithmetic mean of trade return_pct.
- max/avg_trade_duration_s = (exit time - entry time) in seconds.

backtesting.py mode (``compute_stats`` of backtesting.py 0.6.6; everything else as above)
- E_0 is the first bar's equity (the initial cash: trades book a bar after their signal);
  total_return = (E_(n-1) - E_0) / E_0 * 100; peak_equity = max E_t.
- d = simple returns of the equity's last value per calendar day (per calendar week, month or
  year when the median spacing of the last 100 bars floors to 7, 31 or 365 days); K = 252 (365
  with weekend bars), or 52 / 12 / 1; g = geometric mean of d.
- annualized_return = ((1 + g)^K - 1) * 100;
  annualized_volatility = sqrt((var(d, ddof=1) + (1 + g)^2)^K - (1 + g)^(2K)) * 100;
  sharpe_ratio = (annualized_return - 100 rf) / annualized_volatility;
  sortino_ratio = ((1 + g)^K - 1 - rf) / (sqrt(mean(min(d, 0)^2)) * sqrt(K));
  calmar_ratio = ((1 + g)^K - 1) / |max_drawdown / 100|.
- cagr as above, with years = (whole days + leftover whole seconds / 86400) / 365.25.
- exposure = % of bars from some closed trade's entry bar through its exit bar, inclusive.
- trade return_pct = side * (exit / entry - 1) - commissions / (quantity * entry), in percent;
  profit_factor = sum of positive trade returns / |sum of negative ones|;
  avg_trade = geometric mean of trade returns.
- buy_and_hold_return from close[warmup]; drawdown periods ignore a drawdown that starts on
  the second-to-last bar and is still open at the last; beta/alpha over every bar (not from the
  warm-up), as backtesting.py computes them.
- Durations (max/avg drawdown duration, max/avg trade duration) are rounded up to the data's
  resolution: the smallest unit (day, hour, minute, second, ...) of the median spacing of the
  last 100 bars, as backtesting.py's ``Timedelta.ceil``; native durations are exact.
"""

from __future__ import annotations

import math

import numpy as np

from .ledger import Ledger

NS = 1_000_000_000
DAY_NS = 86_400 * NS
YEAR_S = 365.25 * 86_400


def num(x) -> float | None:
    """A finite float, or None for NaN/inf (undefined)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def ratio(a, b) -> float | None:
    if a is None or b is None or b == 0:
        return None
    with np.errstate(all="ignore"):
        return num(np.float64(a) / np.float64(b))


def has_weekends(ts: np.ndarray) -> bool:
    """More than 60 % of the weekend share a 24/7 market has (backtesting.py's test)."""
    sample = ts[:: max(1, len(ts) // 10_000)]
    weekday = (sample // DAY_NS + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    return bool(len(sample)) and float(np.mean(weekday >= 5)) > 2 / 7 * 0.6


def infer_periods_per_year(ts: np.ndarray) -> float:
    if len(ts) < 2:
        return 252.0
    dt = float(np.median(np.diff(ts[-10_001:]))) / NS
    if not dt > 0:
        return 252.0
    all_week = has_weekends(ts)
    days, session = (365.0, 86_400.0) if all_week else (252.0, 23_400.0)
    if dt < 86_400:
        return days * session / dt
    if dt < 7 * 86_400:
        return days * 86_400 / dt
    return YEAR_S / dt


_BLOCK = 512  # running_max: bars per block


def running_max(values: np.ndarray, out: np.ndarray | None = None, floor: float | None = None) -> np.ndarray:
    """``np.maximum.accumulate(values)``, bit for bit, in a fraction of its time on an equity curve.

    The accumulate is a serial loop (one dependent comparison per bar). Here the series is cut
    into blocks of ``_BLOCK`` bars: the blocks' maxima (a vectorized reduce) and their running
    maximum give the peak before each block; a block that does not rise above that peak is that
    peak throughout (a fill), and only the blocks that make a new high are accumulated, then
    combined with the peak before them. Earlier values are always ``np.maximum``'s first
    argument, which it keeps on a tie (as the accumulate does), and a NaN stays NaN from where it
    first appears. A series that does not start above 0 (where a peak of 0.0 could meet -0.0)
    takes the plain accumulate, as does one that makes a new high in most blocks.

    ``floor`` (> 0): ``np.maximum(np.maximum.accumulate(values), floor)`` in the same pass (the
    peak that includes the initial cash); the same bits, since a positive floor ties only with an
    equal positive value and a NaN stays NaN either way.
    """
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    out = np.empty(n) if out is None else out
    blocks = n // _BLOCK
    if floor is not None and not floor > 0:
        raise ValueError("running_max's floor must be > 0")
    if blocks < 4 or not values[0] > 0:
        np.maximum.accumulate(values, out=out)
        return out if floor is None else np.maximum(out, floor, out=out)
    body = values[: blocks * _BLOCK].reshape(blocks, _BLOCK)
    peaks = np.maximum.reduce(body, axis=1)
    before = np.empty(blocks)
    before[0] = -np.inf
    np.maximum.accumulate(peaks[:-1], out=before[1:])
    if floor is not None:
        np.maximum(before, floor, out=before)
    rising = np.flatnonzero(~(peaks <= before))  # a new high in the block (or a NaN)
    if len(rising) > blocks // 4:  # mostly rising: the plain loop is as fast
        np.maximum.accumulate(values, out=out)
        return out if floor is None else np.maximum(out, floor, out=out)
    grid = out[: blocks * _BLOCK].reshape(blocks, _BLOCK)
    grid[...] = before[:, None]
    if len(rising):
        grid[rising] = np.maximum(before[rising, None], np.maximum.accumulate(body[rising], axis=1))
    tail = values[blocks * _BLOCK:]
    if len(tail):
        last = out[blocks * _BLOCK:]
        np.maximum.accumulate(tail, out=last)
        np.maximum(np.maximum(before[-1], peaks[-1]), last, out=last)
    return out


def drawdown(equity: np.ndarray, initial: float) -> np.ndarray:
    """Fractional drawdown from the running peak (<= 0), the peak including the initial cash."""
    return _drawdown(equity, initial)[0]


def _drawdown(equity: np.ndarray, initial: float) -> tuple[np.ndarray, float]:
    """``(drawdown(equity, initial), top)`` with ``max(initial, top) == max(initial,
    np.max(equity))``: the running peak's last value (max is exact, and a NaN anywhere is NaN
    at the end of both, which max(initial, NaN) leaves at the initial cash)."""
    if initial > 0 and len(equity):
        out = running_max(equity, floor=initial)  # the peak including the initial cash, one pass
    else:
        out = running_max(equity)  # one array, reused for every step (no temporaries)
        np.maximum(out, initial, out=out)
    top = float(out[-1]) if len(out) else -math.inf
    with np.errstate(all="ignore"):
        np.divide(equity, out, out=out)
    out -= 1
    return out, top


def drawdown_periods(ts: np.ndarray, dd: np.ndarray, *, tail_of_one_bar: bool = True,
                     nonpositive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Every drawdown period: ``(durations in ns, deepest |drawdown| in each)``.

    A period runs from a bar at the peak (or the first bar) to the next bar back at the peak,
    or to the last bar if never recovered, with at least one bar under water between (a
    drawdown of one bar that recovers on the next bar is no period, as in backtesting.py).
    ``tail_of_one_bar=False`` reproduces backtesting.py, which also ignores a drawdown that
    starts on the last bar's predecessor and is still open at the last bar.
    ``nonpositive``: the caller knows no ``dd`` is above 0 (a peak that includes a positive
    initial cash): the depths are then found without an ``abs`` copy of the whole series.
    """
    n = len(dd)
    empty = np.zeros(0, dtype=np.int64), np.zeros(0)
    if n == 0:
        return empty
    at_peak = np.flatnonzero(dd == 0)
    if not len(at_peak) or at_peak[0] != 0:
        at_peak = np.concatenate(([0], at_peak))
    # at_peak is sorted and unique (flatnonzero, with a leading 0 only where it is missing), so
    # this is np.unique(at_peak + [n - 1]) without a sort or hash over up to n indices
    ends = at_peak if at_peak[-1] == n - 1 else np.append(at_peak, n - 1)
    gap = np.diff(ends)
    if not len(gap):
        return empty
    keep = gap > 1
    if tail_of_one_bar and dd[-1] != 0:
        keep[-1] = True
    if nonpositive:
        # |x| is -x for x <= 0, and the largest -x is minus the smallest x (both exact; fmin and
        # fmax skip NaN alike); + 0.0 turns the -0.0 that -(+0.0) gives into abs's +0.0
        dd = np.asarray(dd, dtype=np.float64)
        seg = np.fmin.reduceat(dd, ends[:-1])
        deepest = np.fmax(np.negative(seg[: len(gap)]), np.negative(dd[ends[1:]]))
        deepest += 0.0
        deepest = np.nan_to_num(deepest, nan=0.0)
    else:
        depth = np.abs(np.asarray(dd, dtype=np.float64))
        seg = np.fmax.reduceat(depth, ends[:-1])  # [ends[j], ends[j+1]) ... (NaN ignored)
        deepest = np.nan_to_num(np.fmax(seg[: len(gap)], depth[ends[1:]]), nan=0.0)  # ... and the closing bar
    return (ts[ends[1:]] - ts[ends[:-1]])[keep], deepest[keep]


def drawdown_duration_s(ts: np.ndarray, dd: np.ndarray, *, tail_of_one_bar: bool = True) -> float | None:
    """Longest time from a bar at the peak to the next one (or the last bar); see
    ``drawdown_periods``."""
    durations, _ = drawdown_periods(ts, dd, tail_of_one_bar=tail_of_one_bar)
    return float(durations.max()) / NS if len(durations) else None


def average_drawdown(ts: np.ndarray, dd: np.ndarray, *, tail_of_one_bar: bool = True, periods=None
                     ) -> tuple[float | None, float | None]:
    """``(avg_drawdown in % (<= 0), avg_drawdown_duration_s)`` over ``drawdown_periods``."""
    durations, deepest = periods or drawdown_periods(ts, dd, tail_of_one_bar=tail_of_one_bar)
    if not len(durations):
        return None, None
    return num(-deepest.mean() * 100), float(durations.mean()) / NS


def capm(equity: np.ndarray, close: np.ndarray, total_return, bh, rf: float, *,
         log: bool = True, scratch: tuple[np.ndarray, np.ndarray] | None = None,
         market: tuple[np.ndarray, float] | None = None) -> tuple[float | None, float | None]:
    """``(alpha in %, beta)``: beta = cov(equity returns, close returns) / var(close returns)
    over consecutive bars (ddof=1), log returns (backtesting.py) or simple ones (``log=False``,
    native: no logarithm of every bar); alpha = total_return - 100 rf - beta * (buy & hold -
    100 rf), Jensen's alpha over the whole run. ``scratch``: two float64 arrays of at least
    ``len(equity) - 1`` values to compute in (instead of new ones). ``market``: the close's
    centred simple returns and their sum of squares, already computed (``BarFacts.market``;
    ``log=False`` only)."""
    if len(equity) < 3 or total_return is None or bh is None:
        return None, None
    m = len(equity) - 1
    with np.errstate(all="ignore"):
        strat = np.divide(equity[1:], equity[:-1], out=None if scratch is None else scratch[0][:m])
        if log:
            strat = np.log(strat, out=strat)
        strat -= strat.mean()
        if market is None or log or len(market[0]) != m:
            market = market_returns(close, None if scratch is None else scratch[1][:m], log=log)
        beta = np.dot(strat, market[0]) / market[1]  # cov / var: the (n - 1)s cancel
    beta = num(beta)
    if beta is None:
        return None, None
    return num(total_return - rf * 100 - beta * (bh - rf * 100)), beta


def market_returns(close: np.ndarray, out: np.ndarray | None = None, *, log: bool = False
                   ) -> tuple[np.ndarray, float]:
    """The close's returns bar to bar (simple, or log), centred on their mean, and their sum of
    squares: beta's market side (``capm``), in ``out`` (``len(close) - 1`` values) if given."""
    with np.errstate(all="ignore"):
        market = np.divide(close[1:], close[:-1], out=out)
        if log:
            market = np.log(market, out=market)
        market -= market.mean()
        return market, np.dot(market, market)


class BarFacts:
    """What the native metrics derive from the bars alone (never from the signals), for every
    backtest on the same bars: a sweep chunk's points share one (sandbox.runtime.run_points).

    The periods per year inferred from the timestamps, and beta's market side (``market_returns``
    of the close from a warm-up bar on), each computed on first use with exactly the operations
    the metrics use without it, so every figure is bit-identical. The columns must not change
    while it is in use: the sandbox's are read-only views of the job's buffers.
    ``run_backtest`` checks that it is handed the facts of the very columns it is given.
    """

    def __init__(self, timestamp_ns: np.ndarray, close: np.ndarray) -> None:
        self.ts = np.asarray(timestamp_ns, dtype=np.int64)
        self.close = np.asarray(close, dtype=np.float64)
        self._periods: float | None = None
        self._market: tuple[int, tuple[np.ndarray, float]] | None = None

    def of(self, ts: np.ndarray, close: np.ndarray) -> bool:
        """Whether these are the facts of exactly these columns (same memory, same length)."""
        return (len(ts) == len(self.ts) and len(close) == len(self.close)
                and ts.__array_interface__["data"][0] == self.ts.__array_interface__["data"][0]
                and close.__array_interface__["data"][0] == self.close.__array_interface__["data"][0]
                and ts.strides == self.ts.strides and close.strides == self.close.strides)

    def periods_per_year(self) -> float:
        if self._periods is None:
            self._periods = infer_periods_per_year(self.ts)
        return self._periods

    def market(self, warmup: int) -> tuple[np.ndarray, float]:
        """``market_returns(close[warmup:])`` (simple returns), kept for the last warm-up asked."""
        if self._market is None or self._market[0] != warmup:
            close = self.close[warmup:]
            out = np.empty(len(close))  # allocated as capm's scratch is: the same dot product
            self._market = (warmup, market_returns(close, out[: max(0, len(close) - 1)]))
        return self._market[1]


def kelly(trades: Ledger) -> float | None:
    """win rate - (1 - win rate) / (mean winning pnl / |mean losing pnl|), win rate a fraction."""
    pnl = trades.pnl
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    if not len(pnl) or not len(wins) or not len(losses):
        return None
    w = len(wins) / len(pnl)
    return num(w - (1 - w) / (wins.mean() / -losses.mean()))


def _std1(x: np.ndarray, work: np.ndarray) -> tuple[float, float]:
    """``(np.mean(x), np.std(x, ddof=1))``, the same operations in the same order, computed in
    ``work`` (np.mean is np.add.reduce divided by the count, as the std's own mean)."""
    n = len(x)
    mean = np.add.reduce(x) / n
    np.subtract(x, mean, out=work)
    np.multiply(work, work, out=work)
    return float(mean), math.sqrt(np.add.reduce(work) / (n - 1))


def equity_metrics(ts, equity, initial: float, periods: float, rf: float,
                   scratch: tuple[np.ndarray, ...] | None = None) -> dict:
    """``scratch``: three float64 arrays of ``len(equity)`` values to compute in (the returns and
    their temporaries; a million bars would otherwise allocate, and fault in, 8 MB for each)."""
    n = len(equity)
    final = float(equity[-1])
    dd, top = _drawdown(equity, initial)
    max_dd = num(np.min(dd) * 100)
    dd_periods = drawdown_periods(ts, dd, nonpositive=initial > 0)
    prev, r, work = scratch if scratch is not None else (np.empty(n), np.empty(n), np.empty(n))
    with np.errstate(all="ignore"):
        # r = diff(equity, prepend=initial) / previous equity, as before, without temporaries
        # r_t = (E_t - E_(t-1)) / E_(t-1), E_-1 the initial cash: element by element as with a
        # shifted copy of the curve, without the copy
        r[0] = (equity[0] - initial) / initial
        np.subtract(equity[1:], equity[:-1], out=r[1:])
        np.divide(r[1:], equity[:-1], out=r[1:])
        excess = np.subtract(r, rf / periods, out=prev) if rf else r  # r - 0.0 is r, bit for bit
        mean_r, sd = _std1(r, work) if n > 1 else (None, math.nan)
        np.minimum(excess, 0.0, out=work)
        np.multiply(work, work, out=work)
        downside = math.sqrt(float(np.mean(work)))
        mean_excess = mean_r if mean_r is not None and excess is r else float(np.mean(excess))
        growth = final / initial
        years = float(ts[-1] - ts[0]) / NS / YEAR_S
        ann = growth ** (periods / n) - 1 if growth > 0 else math.nan
        cagr = (growth ** (1 / years) - 1) * 100 if years > 0 and growth > 0 else math.nan
    sharpe = ratio(mean_excess * math.sqrt(periods), sd) if math.isfinite(sd) else None
    sortino = ratio(mean_excess * math.sqrt(periods), downside) if math.isfinite(downside) else None
    return {
        "total_return": num((final / initial - 1) * 100),
        "total_pnl": final - initial,
        "final_equity": final,
        "peak_equity": max(initial, top),
        "max_drawdown": max_dd,
        "max_drawdown_duration_s": float(dd_periods[0].max()) / NS if len(dd_periods[0]) else None,
        "_periods": dd_periods,
        "sharpe_ratio": sharpe,
        "sortino_ratio": sortino,
        "annualized_return": num(ann * 100),
        "annualized_volatility": num(sd * math.sqrt(periods) * 100),
        "cagr": num(cagr),
        "calmar_ratio": ratio(num(cagr), abs(max_dd)) if max_dd is not None else None,
    }, dd


def trade_metrics(ts: np.ndarray, trades: Ledger) -> dict:
    """The trade statistics both modes share (backtesting.py overrides a few)."""
    t = len(trades)
    pnl = trades.pnl
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    out = {
        "total_trades": t,
        "profitable_trades": int(len(wins)),
        "commissions": float(trades.commission.sum()),
        "win_rate": len(wins) / t * 100 if t else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "profit_factor": ratio(wins.sum(), -losses.sum()) if t else None,
        "expectancy": float(pnl.mean()) if t else None,
        "sqn": ratio(math.sqrt(t) * pnl.mean(), pnl.std(ddof=1)) if t > 1 else None,
        "best_trade": num(trades.return_pct.max()) if t else None,
        "worst_trade": num(trades.return_pct.min()) if t else None,
        "avg_trade": num(trades.return_pct.mean()) if t else None,
        "max_trade_duration_s": None,
        "avg_trade_duration_s": None,
        "expectancy_pct": num(trades.return_pct.mean()) if t else None,
        "kelly_criterion": kelly(trades),
        "duration_s": float(ts[-1] - ts[0]) / NS if len(ts) else None,
    }
    if t:
        seconds = (ts[trades.exit_bar] - ts[trades.entry_bar]) / NS
        out["max_trade_duration_s"] = float(seconds.max())
        out["avg_trade_duration_s"] = float(seconds.mean())
    return out


def native_metrics(ts, close, equity, trades: Ledger, initial: float, periods: float | None,
                   rf: float, warmup: int, facts: BarFacts | None = None) -> tuple[dict, np.ndarray]:
    """Every Performance number (but the lists) under the native definitions above; ``facts``
    (of these ``ts`` and ``close``) saves recomputing what depends on the bars alone."""
    n = len(equity)
    periods = periods or (facts.periods_per_year() if facts is not None else infer_periods_per_year(ts))
    scratch = (np.empty(n), np.empty(n), np.empty(n))  # reused by every per-bar pass below
    out, dd = equity_metrics(ts, equity, initial, periods, rf, scratch)
    out.update(trade_metrics(ts, trades))
    held = int((trades.eq_end - trades.eq_start).sum())
    out["exposure"] = held / n * 100
    bh = num((close[-1] / close[min(warmup, n - 1)] - 1) * 100)
    out["buy_and_hold_return"] = bh
    out["outperformance"] = None if bh is None or out["total_return"] is None else out["total_return"] - bh
    out["avg_drawdown"], out["avg_drawdown_duration_s"] = average_drawdown(ts, dd, periods=out.pop("_periods"))
    w = min(warmup, n - 1)
    market = facts.market(w) if facts is not None and n - w >= 3 else None
    out["alpha"], out["beta"] = capm(equity[w:], close[w:], out["total_return"], bh, rf, log=False,
                                     scratch=scratch[:2], market=market)
    return out, dd
