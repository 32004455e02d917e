"""Helpers shared by tests: synthetic bars and raw NATS requests as any client would send them."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import numpy as np

DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def columnar_bars(n: int = 200, seed: int = 7, start_ms: int = START_MS, step_ms: int = DAY_MS) -> dict[str, list]:
    """A deterministic random walk as the columnar `bars` object."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    return {
        "timestamp": [start_ms + i * step_ms for i in range(n)],
        "open": open_.round(4).tolist(), "high": high.round(4).tolist(),
        "low": low.round(4).tolist(), "close": close.round(4).tolist(),
        "volume": rng.integers(1_000, 5_000, n).astype(float).tolist(),
    }


def row_bars(n: int = 50, seed: int = 7) -> list[dict[str, Any]]:
    """The older row format with ISO-8601 timestamps."""
    cols = columnar_bars(n, seed)
    rows = []
    for i in range(n):
        stamp = np.datetime64(cols["timestamp"][i], "ms").astype("datetime64[s]").astype(str) + "Z"
        rows.append({"timestamp": stamp, **{k: cols[k][i] for k in ("open", "high", "low", "close", "volume")}})
    return rows


async def request_json(nc, subject: str, payload: Any, timeout: float = 15.0, raw: bytes | None = None) -> dict:
    """Send JSON with plain nats-py and decode the JSON reply."""
    data = raw if raw is not None else json.dumps(payload).encode()
    msg = await nc.request(subject, data, timeout=timeout)
    return json.loads(msg.data)


async def stall(server, seconds: float) -> None:
    """Stop a test's nats-server process for `seconds` (SIGSTOP), then let it go on (SIGCONT)."""
    server.proc.send_signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(seconds)
    finally:
        server.proc.send_signal(signal.SIGCONT)
