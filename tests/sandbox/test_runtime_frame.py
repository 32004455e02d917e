"""The frame every strategy gets: its UTC index is built without a copy, yet is each frame's own."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contracts import BarArrays
from sandbox import shm
from sandbox.runtime import _UTC, frame_of, utc_index

START_NS = 1_577_836_800_000_000_000  # 2020-01-01T00:00:00Z
MINUTE_NS = 60_000_000_000


def _bars(n: int = 2_000) -> BarArrays:
    rng = np.random.default_rng(3)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    return BarArrays.from_numpy(START_NS + np.arange(n, dtype=np.int64) * MINUTE_NS, open=close, high=close + 1,
                                low=close - 1, close=close, volume=np.ones(n))


@pytest.mark.parametrize("sealed", [False, True])
def test_the_frames_index_is_what_the_public_constructor_gives(sealed):
    bars = shm.seal(_bars(), min_bytes=1) if sealed else _bars()
    frame = frame_of(bars)
    expected = pd.DatetimeIndex(bars.column("timestamp").view("datetime64[ns]"), dtype=_UTC, name="timestamp")
    pd.testing.assert_index_equal(frame.index, expected, exact=True)
    assert frame.index.freq is None and str(frame.index.dtype) == "datetime64[ns, UTC]"


def test_what_one_frame_sets_on_its_index_reaches_no_other_frame():
    bars = _bars()
    first, second = frame_of(bars), frame_of(bars)
    assert first.index is not second.index and first.index._data is not second.index._data
    first.index.name = "changed"
    first.index.freq = "min"
    assert second.index.name == "timestamp" and second.index.freq is None
    assert frame_of(bars).index.freq is None


def test_nobody_can_write_through_the_index_into_the_bars_the_metrics_read():
    bars = _bars()
    frame = frame_of(bars)
    with pytest.raises(ValueError):
        frame.index.asi8[0] = 0
    assert int(bars.column("timestamp")[0]) == START_NS


def test_a_writable_timestamp_column_is_copied_not_shared():
    ns = START_NS + np.arange(10, dtype=np.int64) * MINUTE_NS
    index = utc_index(ns)
    ns[0] = 0
    assert index[0] == pd.Timestamp(START_NS, tz="UTC")
    assert not index.asi8.flags.writeable


def test_the_frames_columns_are_its_own_and_what_the_list_would_give():
    bars = _bars()
    first, second = frame_of(bars), frame_of(bars)
    pd.testing.assert_index_equal(first.columns, pd.Index(["open", "high", "low", "close", "volume"]), exact=True)
    assert first.columns is not second.columns and first.columns.array is not second.columns.array
    first.columns.name = "changed"
    first.columns = ["o", "h", "l", "c", "v"]
    assert second.columns.name is None and list(frame_of(bars).columns) == ["open", "high", "low", "close", "volume"]
