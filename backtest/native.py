"""The native fill model: signals → trades, looping over trades only.

Signals (per bar: 1 BUY, -1 SELL, 0 HOLD) act on the position held at that bar:

- long-only: BUY when flat opens a long, SELL when long closes it; anything else is ignored
  (a repeated BUY while long, a SELL while flat);
- ``allow_short``: BUY targets +1 and SELL targets -1, so an opposite signal closes the position
  and opens the reverse one at the same fill.

Fills: ``fill="close"`` fills at the signal bar's close; ``fill="next_open"`` at the next bar's
open. An entry needs a bar to be held through, so an entry signal on the last bar (or, for
next-open, an exit signal on the last bar) is not filled. Whatever is open after the last bar
is closed at the last close (exit reason "end of data").

Prices: a buy fills at ``price * (1 + slippage_rate)``, a sell at ``price * (1 - slippage_rate)``;
every fill (entry, exit, stop, end of data) pays ``commission_fixed + commission_rate *
quantity * fill_price``.

Sizing uses the cash at entry (the account is flat then): ``quantity = (position_size * cash -
commission_fixed) / (fill_price * (1 + commission_rate))``, so notional plus entry commission
is exactly ``position_size * cash``; floored to whole units when ``fractional=False``. An entry
that cannot buy a positive quantity is skipped and the account stays flat (a later signal may
try again).

Stops (see backtest.stops): levels are ``entry * (1 -/+ stop_loss_pct / 100)`` and
``entry * (1 +/- take_profit_pct / 100)`` for a long/short. They are watched from the bar after
the signal bar up to and including the exit signal's bar (a stop inside that bar precedes a
close fill). After a stop the account is flat, and signals from the stop bar on are acted on.
"""

from __future__ import annotations

import math

import numpy as np

from contracts import BacktestOptions

from .ledger import END, SIGNAL, Ledger
from .stops import first_exit


def next_at(indices: np.ndarray, i: int, n: int) -> int:
    """The first of the sorted ``indices`` at or after bar ``i`` (``n`` if none)."""
    k = int(indices.searchsorted(i))
    return int(indices[k]) if k < len(indices) else n


def simulate(o, h, l, c, signals: np.ndarray, opt: BacktestOptions, warmup: int) -> Ledger:
    if opt.stop_loss_pct is None and opt.take_profit_pct is None:
        fast = _without_stops(o, c, signals, opt, warmup)
        if fast is not None:
            return fast
    return _walk_trades(o, h, l, c, signals, opt, warmup)


def _without_stops(o, c, signals: np.ndarray, opt: BacktestOptions, warmup: int) -> Ledger | None:
    """The same trades as ``_walk_trades`` when no stop or target is set, found with whole-array
    operations: the signals that change the position are the first of each run of equal
    nonzero signals (long-only: alternating BUY, SELL from the first BUY; with shorts: every run
    start reverses). Cash compounds trade by trade in a loop over floats with the walk's own
    arithmetic, so every figure is bit-identical; None (use the walk) when an entry could not
    buy a positive quantity, which changes which later signals act."""
    n = len(c)
    on_close, short = opt.fill == "close", opt.allow_short
    view = signals[warmup:] if warmup else signals
    p = np.flatnonzero(view != 0)  # numpy's nonzero of an int8 array is ~10x slower than of a bool one
    if warmup:
        p += warmup
    v = signals[p]
    if len(p) > 1:
        run_start = np.empty(len(p), dtype=bool)
        run_start[0] = True
        np.not_equal(v[1:], v[:-1], out=run_start[1:])
        p, v = p[run_start], v[run_start]
    if short:
        entries, sides = p, v.astype(np.int64)
        exits = np.append(p[1:], n)[: len(entries)]
    else:
        if len(v) and v[0] == -1:
            p = p[1:]
        entries = p[0::2]
        exits = np.append(p[1::2], n)[: len(entries)]
        sides = np.ones(len(entries), dtype=np.int64)
    usable = entries < n - 1  # an entry needs a bar to be held through
    if not usable.all():
        k = int(np.argmin(usable))
        entries, exits, sides = entries[:k], exits[:k], sides[:k]
    signal_exit = exits < n
    if not on_close:
        signal_exit &= exits + 1 < n
    if not signal_exit.all():  # the first trade held to the end closes there; nothing follows
        k = int(np.argmin(signal_exit)) + 1
        entries, exits, sides, signal_exit = entries[:k], exits[:k], sides[:k], signal_exit[:k]
    t = len(entries)
    slip = opt.slippage_rate
    fill_bar = entries if on_close else entries + 1
    entry = (c[entries] if on_close else o[fill_bar]) * (1 + sides * slip)
    last = n - 1
    exit_bar = np.where(signal_exit, exits if on_close else exits + 1, last)
    raw_exit = np.where(signal_exit, c[np.minimum(exits, last)] if on_close else o[np.minimum(exits + 1, last)],
                        c[last])
    exit_ = raw_exit * (1 - sides * slip)
    kind = np.where(signal_exit, SIGNAL, END)
    size, rate, fixed = opt.position_size, opt.commission_rate, opt.commission_fixed
    cash_before = _compound(float(opt.initial_cash), sides, entry, exit_, size, rate, fixed, not opt.fractional)
    # Everything else per trade from the cash it opened with: the same operations, in the same
    # order, as the loop (and the walk), element by element, so every figure is identical.
    qty_a = (size * cash_before - fixed) / (entry * (1 + rate))
    if not opt.fractional:
        qty_a = np.floor(qty_a)  # inf and NaN stay as they are, as math.floor would not see them
    if not (qty_a > 0).all():
        return None
    entry_comm = fixed + rate * qty_a * entry
    exit_comm = fixed + rate * qty_a * exit_
    pnl_a = sides * qty_a * (exit_ - entry) - entry_comm - exit_comm
    return Ledger(
        side=sides, entry_signal=entries.astype(np.int64), entry_bar=fill_bar.astype(np.int64),
        exit_signal=np.where(signal_exit, exits, -1).astype(np.int64), exit_bar=exit_bar.astype(np.int64),
        exit_kind=kind.astype(np.int64), entry_price=entry, exit_price=exit_, quantity=qty_a,
        commission=entry_comm + exit_comm, pnl=pnl_a,
        return_pct=pnl_a / (qty_a * entry) * 100 if t else np.zeros(0),
        eq_start=fill_bar.astype(np.int64), eq_end=exit_bar.astype(np.int64),
        cash_open=cash_before - entry_comm, cash_after=cash_before + pnl_a,
        closed=np.ones(t, dtype=bool),
    )


def _compound(cash: float, sides, entry, exit_, size: float, rate: float, fixed: float,
              whole: bool) -> np.ndarray:
    """The cash each trade opens with: trade k's size depends on the cash trade k - 1 left, so
    this one loop over trades stays (it computes nothing but the cash)."""
    if fixed == 0 and rate == 0 and not whole:
        free = _compound_free(cash, sides, entry, exit_, size)
        if free is not None:
            return free
    return _compound_loop(cash, sides, entry, exit_, size, rate, fixed, whole)


def _compound_loop(cash: float, sides, entry, exit_, size: float, rate: float, fixed: float,
                   whole: bool) -> np.ndarray:
    """The general loop (any costs, whole units)."""
    before: list[float] = []
    denominators = (entry * (1 + rate)).tolist()
    moves = (exit_ - entry).tolist()
    floor, finite, keep = math.floor, math.isfinite, before.append
    for side, e, x, d, move in zip(sides.tolist(), entry.tolist(), exit_.tolist(), denominators, moves):
        keep(cash)
        q = (size * cash - fixed) / d
        if whole and finite(q):
            q = floor(q)
        if not q > 0:
            break  # the caller finds this trade's quantity is not positive and walks instead
        cash += side * q * move - (fixed + rate * q * e) - (fixed + rate * q * x)
    before += [math.nan] * (len(entry) - len(before))
    return np.array(before, dtype=np.float64)


def _compound_free(cash: float, sides, entry, exit_, size: float) -> np.ndarray | None:
    """``_compound`` without costs or whole units (the defaults), in fewer operations per trade.

    With ``fixed = rate = 0`` the general step's ``(size * cash - 0.0) / d`` is ``size * cash / d``
    and each commission ``0.0 + 0.0 * q * price`` is +0.0, which subtracts to nothing, exactly,
    as long as ``q`` and the prices are finite. That is checked afterwards on every trade (the
    same ``q``, computed the same way): anything not finite returns None and the general loop
    runs instead."""
    before: list[float] = []
    keep = before.append
    moves = (exit_ - entry).tolist()
    if size == 1.0 and (sides == 1).all():
        # long-only at full size (the defaults): 1.0 * cash is cash and 1 * q is q, exactly, so
        # the same step without those two multiplications
        for e, move in zip(entry.tolist(), moves):
            keep(cash)
            q = cash / e
            if not q > 0:
                break
            cash += q * move
    else:
        for side, e, move in zip(sides.tolist(), entry.tolist(), moves):
            keep(cash)
            q = size * cash / e
            if not q > 0:
                break
            cash += side * q * move
    if len(before) < len(entry):
        return None  # a trade that cannot buy: the general loop says where
    out = np.array(before, dtype=np.float64)
    with np.errstate(all="ignore"):
        finite = np.isfinite(size * out / entry).all() and np.isfinite(entry).all() and np.isfinite(exit_).all()
    return out if finite else None


def _walk_trades(o, h, l, c, signals: np.ndarray, opt: BacktestOptions, warmup: int) -> Ledger:
    """Trade by trade (stops need it): find the entry, the exit signal, any stop in between."""
    n = len(c)
    buys = np.flatnonzero(signals == 1)
    sells = np.flatnonzero(signals == -1)
    on_close = opt.fill == "close"
    short = opt.allow_short
    slip, rate, fixed = opt.slippage_rate, opt.commission_rate, opt.commission_fixed
    sl, tp = opt.stop_loss_pct, opt.take_profit_pct
    stops = sl is not None or tp is not None
    rows: list[tuple] = []
    cash = float(opt.initial_cash)
    i, s, carry = warmup, 0, 0
    while True:
        if carry:  # a reversal: the opposite entry at the exit's own signal
            side, carry = carry, 0
        else:
            s, side = next_at(buys, i, n), 1
            if short:
                t = next_at(sells, i, n)
                if t < s:
                    s, side = t, -1
        if s >= n - 1:  # no bar left to hold a new position through
            break
        fill_bar = s if on_close else s + 1
        entry = float(c[s] if on_close else o[fill_bar]) * (1 + side * slip)
        qty = (opt.position_size * cash - fixed) / (entry * (1 + rate))
        if not opt.fractional:
            qty = math.floor(qty) if math.isfinite(qty) else qty
        if not qty > 0:
            i = s + 1
            continue
        entry_comm = fixed + rate * qty * entry
        x = next_at(sells if side > 0 else buys, s + 1, n)
        hit = None
        if stops:
            stop = None if sl is None else entry * (1 - side * sl / 100)
            target = None if tp is None else entry * (1 + side * tp / 100)
            hit = first_exit(o, h, l, s + 1, min(x, n - 1), side, stop, target)
        if hit is not None:
            exit_bar, kind, price = hit
            x = -1
        elif x < n and (on_close or x + 1 < n):
            exit_bar = x if on_close else x + 1
            kind, price = SIGNAL, float(c[x] if on_close else o[exit_bar])
        else:
            exit_bar, kind, price, x = n - 1, END, float(c[n - 1]), -1
        exit_ = price * (1 - side * slip)
        exit_comm = fixed + rate * qty * exit_
        pnl = side * qty * (exit_ - entry) - entry_comm - exit_comm
        rows.append((
            side, s, fill_bar, x, exit_bar, kind, entry, exit_, qty, entry_comm + exit_comm,
            pnl, pnl / (qty * entry) * 100, fill_bar, exit_bar, cash - entry_comm, cash + pnl,
            True,
        ))
        cash += pnl
        if kind == END:
            break
        if kind == SIGNAL:
            if short:
                s, carry = x, -side
            i = x + 1
        else:
            i = exit_bar
    return Ledger.from_rows(rows)
