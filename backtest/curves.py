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


def _run_args(values: np.ndarray, runs: int) -> tuple[np.ndarray, np.ndarray]:
    """Per run of ``len(values) // runs`` bars (the remainder is a last, shorter run): the index
    of the first minimum and of the first maximum. NaN is never chosen unless a run is all NaN."""
    n = len(values)
    size = n // runs
    body = values[: size * runs].reshape(runs, size)
    base = np.arange(runs, dtype=np.int64) * size
    gaps = np.isnan(body)
    gaps = gaps if gaps.any() else None  # one NaN scan, not four
    with np.errstate(invalid="ignore"):
        lo = base + np.nanargmin(np.where(gaps, np.inf, body), axis=1) if gaps is not None \
            else base + body.argmin(axis=1)
        hi = base + np.nanargmax(np.where(gaps, -np.inf, body), axis=1) if gaps is not None \
            else base + body.argmax(axis=1)
    tail = values[size * runs:]
    if len(tail) and not np.isnan(tail).all():
        lo = np.append(lo, size * runs + int(np.nanargmin(tail)))
        hi = np.append(hi, size * runs + int(np.nanargmax(tail)))
    return lo, hi


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
    runs = max(1, (limit - 2) // 3 - 1)  # one more (shorter) run may hold the remainder
    eq_lo, eq_hi = _run_args(np.asarray(equity, dtype=np.float64), runs)
    dd_lo, _ = _run_args(np.asarray(drawdown, dtype=np.float64), runs)
    return np.unique(np.concatenate(([0, n - 1], eq_lo, eq_hi, dd_lo)))


def monthly_returns(ts: np.ndarray, equity: np.ndarray, initial: float) -> list[tuple[str, float | None]]:
    """``(YYYY-MM, return %)`` per calendar month (UTC): the month's last equity over the
    previous month's last (the first month over ``initial``); None where undefined."""
    if not len(ts):
        return []
    first, last_month = (np.array([ts[0], ts[-1]]).astype("datetime64[ns]").astype("datetime64[M]"))
    if last_month < first:  # not in time order: no calendar months to speak of
        return []
    months = np.arange(first, last_month + 1)
    starts = months[1:].astype("datetime64[ns]").astype(np.int64)
    last = np.append(np.searchsorted(ts, starts, side="left") - 1, len(ts) - 1)
    present = np.concatenate(([True], last[1:] != last[:-1]))  # a month without bars repeats the last
    months, last = months[present], last[present]
    ends = equity[last]
    before = np.concatenate(([initial], ends[:-1]))
    with np.errstate(all="ignore"):
        returns = (ends / before - 1) * 100
    names = np.datetime_as_string(months, unit="M").tolist()
    return [(m, float(r) if np.isfinite(r) else None) for m, r in zip(names, returns.tolist())]
