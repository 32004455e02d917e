"""The lookback window of a run: the last `n` bars up to the triggering bar, from the bar store.

Each node keeps the newest window it fetched per series, so the run for the next bar fetches
only the bars after it (one small chunk for a live feed) instead of the whole window again.
A live bar's chunk is published to BARS before its index entry is committed (backtest/store.py),
so a run can arrive before the store can replay its bar: `window` waits for it a little.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict

import numpy as np

from backtest.store import BarStore
from contracts import BarArrays, ErrorCode, ExecutionError
from contracts.bars import COLUMNS

NAMES = ("timestamp", *COLUMNS)
MAX_SERIES = 256  # series cached per node
CACHE_BARS = 20_000  # bars kept per cached series
INDEX_WAIT_S = 3.0


def _columns(arrays: BarArrays) -> list[np.ndarray]:
    return [arrays.column(name) for name in NAMES]


def _arrays(columns: list[np.ndarray]) -> BarArrays:
    return BarArrays(**{name: np.ascontiguousarray(col).tobytes() for name, col in zip(NAMES, columns)})


class Windows:
    def __init__(self, store: BarStore) -> None:
        self.store = store
        self._cache: OrderedDict[tuple[str, str], tuple[list[np.ndarray], bool]] = OrderedDict()
        self.fetches = 0

    async def _start_for(self, symbol: str, timeframe: str, end_ns: int, n: int) -> tuple[int, bool] | None:
        """(first bar time of the chunk from which `n` bars up to `end_ns` are stored, whether
        that chunk is the series' first), or None when nothing up to `end_ns` is stored."""
        index, _ = await self.store._read_index(symbol, timeframe)
        if index is None:
            return None
        first, _last, _seq, count = index.arrays()
        upto = int(np.searchsorted(first, end_ns, side="right"))
        if not upto:
            return None
        have, i = 0, upto
        while i > 0 and have < n:
            i -= 1
            have += int(count[i])
        return int(first[i]), i == 0

    async def _fetch(self, symbol: str, timeframe: str, end_ns: int, n: int) -> list[np.ndarray]:
        key = (symbol, timeframe)
        cached = self._cache.get(key)
        if cached is not None:
            columns, from_start = cached
            last = int(columns[0][-1])
            if last < end_ns:  # the bars after the cached ones: contiguous, so the cache stays whole
                more = _columns(await self.store.replay(symbol, timeframe, last + 1, end_ns))
                self.fetches += 1
                keep = CACHE_BARS if columns[0].size + more[0].size > CACHE_BARS else None
                columns = [np.concatenate([a, b]) for a, b in zip(columns, more)]
                if keep:
                    columns, from_start = [c[-keep:] for c in columns], False
                self._remember(key, columns, from_start)
            upto = int(np.searchsorted(columns[0], end_ns, side="right"))
            if upto >= n or from_start:
                return columns
        found = await self._start_for(symbol, timeframe, end_ns, n)
        if found is None:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, f"no bars stored for {symbol} {timeframe} up to {end_ns}")
        start, from_start = found
        fetched = _columns(await self.store.replay(symbol, timeframe, start, end_ns))
        self.fetches += 1
        if fetched[0].size > CACHE_BARS:
            fetched, from_start = [c[-CACHE_BARS:] for c in fetched], False
        self._remember(key, fetched, from_start)
        return fetched

    def _remember(self, key: tuple[str, str], columns: list[np.ndarray], from_start: bool) -> None:
        self._cache[key] = (columns, from_start)
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_SERIES:
            self._cache.popitem(last=False)

    async def window(self, symbol: str, timeframe: str, end_ns: int, n: int) -> BarArrays:
        """The last `n` bars with time <= end_ns; the bar at `end_ns` must be among them."""
        deadline = time.monotonic() + INDEX_WAIT_S
        pause = 0.002
        while True:
            try:
                columns = await self._fetch(symbol, timeframe, end_ns, n)
            except ExecutionError:
                columns = None
            if columns is not None and columns[0].size:
                upto = int(np.searchsorted(columns[0], end_ns, side="right"))
                if upto and int(columns[0][upto - 1]) == end_ns:
                    return _arrays([c[max(0, upto - n):upto] for c in columns])
            if time.monotonic() > deadline:
                raise ExecutionError(ErrorCode.INTERNAL,
                                     f"bar {end_ns} of {symbol} {timeframe} is not in the bar store")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)
