"""Helpers of the hosted-strategy tests: live bars, a crossover strategy, waiting."""

from __future__ import annotations

import asyncio
import time

import msgspec
import numpy as np

from contracts import BarArrays, Signal
from tests.support import columnar_bars

# A vectorized SMA crossover that also keeps a per-symbol run count in `state` and logs it.
CROSSOVER = """
import pandas as pd

def strategy(data):
    n = state.get("runs", 0) + 1
    state["runs"] = n
    print("run", n, "bars", len(data))
    fast = data["close"].rolling(params.get("fast", 3)).mean()
    slow = data["close"].rolling(params.get("slow", 8)).mean()
    above = fast > slow
    was = above.shift(1, fill_value=False)
    sig = pd.Series(0, index=data.index)
    sig[above & ~was & slow.notna() & slow.shift(1).notna()] = 1
    sig[~above & was & slow.notna() & slow.shift(1).notna()] = -1
    return sig
"""


def arrays(n: int, seed: int, start: int = 0) -> BarArrays:
    cols = columnar_bars(n + start, seed=seed)
    ts = np.array(cols["timestamp"][start:], dtype=np.int64) * 1_000_000
    return BarArrays.from_numpy(ts, **{k: np.array(cols[k][start:], dtype=np.float64)
                                       for k in ("open", "high", "low", "close", "volume")})


def bar_range(full: BarArrays, lo: int, hi: int) -> BarArrays:
    return BarArrays.from_numpy(full.column("timestamp")[lo:hi],
                                **{k: full.column(k)[lo:hi] for k in ("open", "high", "low", "close", "volume")})


def one_bar(full: BarArrays, i: int) -> BarArrays:
    return bar_range(full, i, i + 1)


async def wait_for(predicate, timeout: float = 20.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s (last: {value!r})")
        await asyncio.sleep(every)


async def stream_msgs(js, stream: str, subject: str) -> list:
    """Every stored message on `subject` in `stream` (an ordered read from the start)."""
    out = []
    info = await js.stream_info(stream)
    if not info.state.messages:
        return out
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=None)
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=0.3)
            except Exception:  # noqa: BLE001 - nothing more within the wait
                break
            out.append(msg)
    finally:
        await sub.unsubscribe()
    return out


async def expected_signals(nc, full: dict[str, BarArrays], live_from: int) -> dict[str, set]:
    """What a backtest of the same bars says: the strategy run once over every bar (state left
    out), its (timestamp, type) per bar from `live_from` on."""
    from node.client import StrategyClient

    code = CROSSOVER.replace('state.get("runs", 0)', "0").replace('state["runs"] = n', "pass")
    client = StrategyClient(nc)
    expected = {}
    for sym, bars in full.items():
        ts = bars.column("timestamp")
        result = await client.execute(code, {"timestamp": (ts // 1_000_000).tolist(),
                                             **{k: bars.column(k).tolist() for k in ("open", "high", "low", "close", "volume")}},
                                      symbol=sym, timeframe="1d", timeout=60)
        assert result.success, result.error
        first = str(np.datetime64(int(ts[live_from]), "ns").astype("datetime64[s]")) + "Z"
        expected[sym] = {(s.timestamp, s.type) for s in result.signals if s.timestamp >= first}
    return expected


async def stored_signals(js, deployment: str, tenant: str = "local") -> tuple[list, dict[str, set]]:
    """Every message in SIGNALS for the deployment, and their (timestamp, type) per symbol."""
    stored = await stream_msgs(js, "SIGNALS", f"signals.{tenant}.{deployment}.>")
    got: dict[str, set] = {}
    for msg in stored:
        sig = msgspec.json.decode(msg.data, type=Signal)
        got.setdefault(msg.subject.rsplit(".", 1)[1], set()).add((sig.timestamp, sig.type))
    return stored, got
