"""Latency statistics of one phase: percentiles in ms, throughput in requests/s."""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import numpy as np

STAT_FIELDS = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "throughput_rps")
COUNT_FIELDS = ("concurrency", "requests", "ok", "errors")


def summarize(latencies_ns: Iterable[int], wall_s: float, concurrency: int,
              errors: Counter | None = None) -> dict:
    """Percentiles (linear interpolation) of the successful requests; throughput = ok / wall."""
    lat = np.asarray(list(latencies_ns), dtype=np.float64) / 1e6
    errors = errors or Counter()
    n_err = sum(errors.values())
    out: dict = {
        "concurrency": concurrency,
        "requests": int(lat.size + n_err),
        "ok": int(lat.size),
        "errors": int(n_err),
        "error_codes": dict(errors),
        "wall_s": round(wall_s, 4),
    }
    if lat.size:
        p50, p90, p99 = np.percentile(lat, [50, 90, 99])
        out.update(p50_ms=round(float(p50), 4), p90_ms=round(float(p90), 4), p99_ms=round(float(p99), 4),
                   max_ms=round(float(lat.max()), 4), mean_ms=round(float(lat.mean()), 4),
                   throughput_rps=round(lat.size / wall_s, 2) if wall_s > 0 else 0.0)
    else:
        out.update({k: None for k in STAT_FIELDS})
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 3)
