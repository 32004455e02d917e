"""In-process counters behind `$SRV.STATS` data and the OpenTelemetry instruments."""

from __future__ import annotations

import collections
from typing import Any

from contracts import ErrorCode


class Metrics:
    def __init__(self) -> None:
        self.requests: collections.Counter[str] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.cache_hits = 0
        self.cache_misses = 0
        self._latency: dict[str, collections.deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=2048)
        )
        self.listeners: list[Any] = []

    def compile(self, hit: bool) -> None:
        if hit:
            self.cache_hits += 1
        else:
            self.cache_misses += 1
        for listener in self.listeners:
            listener.compile(hit)

    def finished(self, endpoint: str, error: ErrorCode | None, millis: float) -> None:
        endpoint = endpoint.rsplit(".", 1)[-1]
        self.requests[endpoint] += 1
        if error is not None:
            self.errors[str(error)] += 1
        self._latency[endpoint].append(millis)
        for listener in self.listeners:
            listener.finished(endpoint, error, millis)

    def snapshot(self, endpoint: str) -> dict[str, Any]:
        samples = sorted(self._latency.get(endpoint, ()))
        pick = (lambda q: round(samples[min(len(samples) - 1, int(q * len(samples)))], 3)) if samples else (lambda q: None)
        total = self.cache_hits + self.cache_misses
        return {
            "requests": self.requests.get(endpoint, 0),
            "errors_by_code": dict(self.errors),
            "latency_ms": {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)},
            "compile_cache_hit_ratio": round(self.cache_hits / total, 4) if total else None,
        }
