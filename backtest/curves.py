"""Per-bar series from a ledger, and downsampling that keeps what the metrics talk about.

``positions``: the signed units held at every bar's close, over exactly the bars where the
equity curve marks each trade (``Ledger.eq_start .. eq_end``), so position and equity agree.

``extreme_indices``: at most ``limit`` bar indices for drawing a long series. The bars are cut
into ``limit // 3`` runs of equal length; from each run the bar of its lowest equity, of its
highest equity and of its deepest drawdown are kept (the first of each, in time order), plus the
first and the last bar. So the drawn curve reaches the reported peak equity and the reported
maximum drawdown, and never shows a value the account did not have: min/max per bucket,
as chart libraries do for large series, with the drawdown's own extreme added.
"""

from __future__ import annotations

import numpy as np

from .ledger import Ledger


def positions(n: int, ledger: Ledger) -> np.ndarray:
    """Signed units held at each of ``n`` bars' closes (0.0 when flat)."""
    delta = np.zeros(n + 1)
    if len(ledger):
        signed = ledger.side * ledger.quantity
        start = np.minimum(ledger.eq_start, n)
        end = np.minimum(ledger.eq_end, n)
        np.add.at(delta, start, signed)
        np.add.at(delta, end, -signed)
    held = np.cumsum(delta[:n])
    held[np.abs(held) < 1e-12 * max(1.0, float(np.max(np.abs(held), initial=0.0)))] = 0.0
    return held


def _first_arg(values: np.ndarray, edges: np.ndarray, reduce) -> np.ndarray:
    """Index of the first element equal to each run's ``reduce`` (np.minimum / np.maximum)."""
    starts = edges[:-1]
    best = reduce.reduceat(values, starts)
    run = np.repeat(np.arange(len(starts)), np.diff(edges))
    hit = np.flatnonzero(values == best[run])
    _, first = np.unique(run[hit], return_index=True)
    return hit[first]


def extreme_indices(equity: np.ndarray, drawdown: np.ndarray, limit: int) -> np.ndarray:
    """Sorted bar indices (at most ``limit``) keeping every run's min/max equity and min drawdown."""
    n = len(equity)
    if limit <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= limit:
        return np.arange(n, dtype=np.int64)
    if limit < 5:  # too few points for runs: the last bar, then the extremes that fit
        keep = [n - 1, int(np.argmax(equity)), int(np.argmin(drawdown)), int(np.argmin(equity)), 0]
        return np.array(sorted(set(keep[:limit]))[:limit], dtype=np.int64)
    runs = max(1, (limit - 2) // 3)
    edges = (np.arange(runs + 1, dtype=np.int64) * n) // runs
    eq = np.nan_to_num(np.asarray(equity, dtype=np.float64), nan=0.0)
    dd = np.nan_to_num(np.asarray(drawdown, dtype=np.float64), nan=0.0)
    keep = np.concatenate((
        [0, n - 1],
        _first_arg(eq, edges, np.minimum),
        _first_arg(eq, edges, np.maximum),
        _first_arg(dd, edges, np.minimum),
    ))
    return np.unique(keep)


def monthly_returns(ts: np.ndarray, equity: np.ndarray, initial: float) -> list[tuple[str, float | None]]:
    """``(YYYY-MM, return %)`` per calendar month (UTC): the month's last equity over the
    previous month's last (the first month over ``initial``); None where undefined."""
    if not len(ts):
        return []
    month = ts.astype("datetime64[ns]").astype("datetime64[M]")
    last = np.concatenate((np.flatnonzero(month[1:] != month[:-1]), [len(ts) - 1]))
    ends = equity[last]
    before = np.concatenate(([initial], ends[:-1]))
    with np.errstate(all="ignore"):
        returns = (ends / before - 1) * 100
    names = np.datetime_as_string(month[last], unit="M").tolist()
    return [(m, float(r) if np.isfinite(r) else None) for m, r in zip(names, returns.tolist())]
