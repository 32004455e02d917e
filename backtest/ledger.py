"""Trade records and the equity curve they imply.

Both fill models (native and backtesting.py) produce the same record per trade; the equity
curve is then rebuilt with whole-array numpy operations. Each trade ``k`` owns the bars
``[eq_start, eq_end)`` during which the account is marked to the close as
``cash_open + units * side * (close - entry_price)``; between trades the equity is the cash
left by the last closed trade. Those bars are where each model says the position shows up in
the account (native: from the fill bar; backtesting.py: from the bar after the signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIGNAL, STOP, TARGET, END, RUIN = 0, 1, 2, 3, 4

# Column order of the tuples the simulators append, one per trade.
COLUMNS = (
    "side", "entry_signal", "entry_bar", "exit_signal", "exit_bar", "exit_kind",
    "entry_price", "exit_price", "quantity", "commission", "pnl", "return_pct",
    "eq_start", "eq_end", "cash_open", "cash_after", "closed",
)
_INT = {"side", "entry_signal", "entry_bar", "exit_signal", "exit_bar", "exit_kind",
        "eq_start", "eq_end"}


@dataclass
class Ledger:
    """Column arrays, one element per trade (``closed`` is False only for a trade that
    backtesting.py leaves open at the end, which counts in equity but not in trade stats)."""

    side: np.ndarray
    entry_signal: np.ndarray
    entry_bar: np.ndarray
    exit_signal: np.ndarray
    exit_bar: np.ndarray
    exit_kind: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    quantity: np.ndarray
    commission: np.ndarray
    pnl: np.ndarray
    return_pct: np.ndarray
    eq_start: np.ndarray
    eq_end: np.ndarray
    cash_open: np.ndarray
    cash_after: np.ndarray
    closed: np.ndarray

    @classmethod
    def from_rows(cls, rows: list[tuple]) -> "Ledger":
        cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
        out = {}
        for name, col in zip(COLUMNS, cols):
            dtype = np.int64 if name in _INT else bool if name == "closed" else np.float64
            out[name] = np.array(col, dtype=dtype)
        return cls(**out)

    def __len__(self) -> int:
        return len(self.side)

    def select(self, mask: np.ndarray) -> "Ledger":
        return Ledger(**{name: getattr(self, name)[mask] for name in COLUMNS})


def equity_curve(close: np.ndarray, initial_cash: float, ledger: Ledger) -> np.ndarray:
    """Equity at every bar's close, without a Python loop over bars.

    Bars split into pieces: before the first trade, trade 0, the gap after it, trade 1, ...
    Every piece is affine in the close (``a + q * close``), so a piece id per bar (a cumulative
    count of piece boundaries) and two gathers give the whole curve.
    """
    n = len(close)
    t = len(ledger)
    if t == 0:
        return np.full(n, float(initial_cash))
    signed = ledger.side * ledger.quantity
    intercept = np.empty(2 * t + 1)
    slope = np.zeros(2 * t + 1)
    intercept[0] = initial_cash
    intercept[1::2] = ledger.cash_open - signed * ledger.entry_price
    slope[1::2] = signed
    intercept[2::2] = ledger.cash_after
    # piece k covers the bars from its start up to the next piece's start: trades' start and end
    # bars interleaved, in order (a trade starts no earlier than the previous one ended)
    edges = np.empty(2 * t + 2, dtype=np.int64)
    edges[0], edges[-1] = 0, n
    edges[1:-1:2], edges[2:-1:2] = ledger.eq_start, ledger.eq_end
    np.minimum(edges, n, out=edges)
    lengths = np.diff(edges)
    if (lengths < 0).any():  # not in order: count the boundaries at or before each bar instead
        bounds = np.concatenate((ledger.eq_start, ledger.eq_end))
        bounds = bounds[bounds < n]
        piece = np.cumsum(np.bincount(bounds, minlength=n)[:n])
        return intercept[piece] + slope[piece] * close
    out = np.repeat(slope, lengths)
    np.multiply(out, close, out=out)
    out += np.repeat(intercept, lengths)  # intercept + slope * close, as before, bit for bit
    return out
