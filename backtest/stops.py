"""Intrabar stop-loss / take-profit search for one open position.

Bars carry only open/high/low/close, so the path inside a bar is unknown. The rule, shared by
the native engine and the backtesting.py mode (which agree on it):

- long:  the stop is hit when ``low <= stop``, the target when ``high >= target``;
- short: the stop is hit when ``high >= stop``, the target when ``low <= target``;
- the fill is the level itself, or the bar's open when the bar opened beyond the level (a gap
  through a stop fills worse, a gap through a target fills better);
- when stop and target are both inside one bar, the stop is assumed to come first (pessimistic,
  and what backtesting.py does: it queues stop orders ahead of limit orders).

The scan is vectorized per trade in growing chunks, so a trade that is stopped out early does
not pay for the rest of its would-be holding period, and no Python loop ever runs over bars.
"""

from __future__ import annotations

import numpy as np

STOP, TARGET = 1, 2
_FIRST_CHUNK = 64


def first_exit(
    open_: np.ndarray, high: np.ndarray, low: np.ndarray, first: int, last: int,
    side: int, stop: float | None, target: float | None,
) -> tuple[int, int, float] | None:
    """The first bar in ``[first, last]`` where the stop or the target is hit.

    Returns ``(bar, STOP | TARGET, fill price)`` or ``None`` when neither is hit.
    """
    adverse, favorable = (low, high) if side > 0 else (high, low)
    lo = first
    size = _FIRST_CHUNK
    while lo <= last:
        hi = min(last + 1, lo + size)
        hit = _hits(adverse[lo:hi], favorable[lo:hi], side, stop, target)
        j = int(hit.argmax())
        if hit[j]:
            bar = lo + j
            return _fill(float(open_[bar]), float(adverse[bar]), side, stop, target, bar)
        lo, size = hi, size * 4
    return None


def _hits(adverse, favorable, side, stop, target) -> np.ndarray:
    if side > 0:
        stop_hit = adverse <= stop if stop is not None else None
        target_hit = favorable >= target if target is not None else None
    else:
        stop_hit = adverse >= stop if stop is not None else None
        target_hit = favorable <= target if target is not None else None
    if stop_hit is None:
        return target_hit
    return stop_hit if target_hit is None else stop_hit | target_hit


def _fill(open_: float, adverse: float, side: int, stop, target, bar: int):
    # The stop wins a bar where both are hit.
    if stop is not None and (adverse <= stop if side > 0 else adverse >= stop):
        return bar, STOP, (min(open_, stop) if side > 0 else max(open_, stop))
    return bar, TARGET, (max(open_, target) if side > 0 else min(open_, target))
