"""BarStore against a real nats-server: load, idempotency, replay by bar time, errors, listing."""

from __future__ import annotations

import asyncio
import uuid

import nats
import numpy as np
import pytest

from backtest.store import INDEX_BUCKET, STREAM, BarStore, subject_for
from contracts import BarArrays, BarsRef, ErrorCode, ExecutionError

MIN_NS = 60 * 1_000_000_000
START_NS = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z
CHUNK = 10  # small chunks keep the tests fast while crossing many chunk boundaries


def bars(n: int, first: int = 0, step_ns: int = MIN_NS) -> BarArrays:
    """n one-minute bars starting at bar number `first`; close == bar number, so slices are checkable."""
    k = np.arange(first, first + n, dtype=np.float64)
    ts = START_NS + np.arange(first, first + n, dtype=np.int64) * step_ns
    return BarArrays.from_numpy(ts, open=k, high=k + 0.5, low=k - 0.5, close=k, volume=k * 10)


def at(i: int) -> int:
    """Bar time of bar number i."""
    return START_NS + i * MIN_NS


def fresh_symbol() -> str:
    return "T" + uuid.uuid4().hex[:10].upper()


@pytest.fixture
async def nc(nats_url):
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


@pytest.fixture
async def store(nc) -> BarStore:
    s = BarStore(nc.jetstream(), chunk_bars=CHUNK)
    await s.ensure_stream()
    return s


async def stored_messages(store: BarStore, symbol: str, timeframe: str = "1m") -> int:
    info = await store.js.stream_info(STREAM, subjects_filter=subject_for(symbol, timeframe))
    return sum((info.state.subjects or {}).values())


async def test_replay_returns_exactly_the_loaded_bars(store):
    sym = fresh_symbol()
    data = bars(25)
    await store.load(sym, "1m", data)
    assert await store.replay(sym, "1m") == data


async def test_load_splits_bars_into_fixed_size_chunks(store):
    sym = fresh_symbol()
    report = await store.load(sym, "1m", bars(25))
    assert (report.stored_chunks, report.bars) == (3, 25)
    assert await stored_messages(store, sym) == 3


async def test_replay_of_a_sub_range_is_inclusive_by_bar_time(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    out = await store.replay(sym, "1m", at(3), at(7))
    assert out.column("close").tolist() == [3, 4, 5, 6, 7]


async def test_replay_across_chunk_boundaries_joins_chunks_in_order(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(45))
    out = await store.replay(sym, "1m", at(8), at(31))
    assert out.column("close").tolist() == list(range(8, 32))
    assert np.all(np.diff(out.column("timestamp")) == MIN_NS)


async def test_replay_bounds_between_bars_select_the_bars_inside(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    out = await store.replay(sym, "1m", at(3) + 1, at(6) - 1)
    assert out.column("close").tolist() == [4, 5]


async def test_replay_with_open_ended_bounds(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    assert (await store.replay(sym, "1m", None, at(4))).column("close").tolist() == [0, 1, 2, 3, 4]
    assert (await store.replay(sym, "1m", at(22), None)).column("close").tolist() == [22, 23, 24]


def numpy_builder(calls: list):
    """A `build` for replay that makes its own arrays (as sandbox.shm.build does in a memfd)."""

    def build(count, fill):
        calls.append(count)
        cols = {"timestamp": np.empty(count, dtype=np.int64),
                **{k: np.empty(count) for k in ("open", "high", "low", "close", "volume")}}
        fill(cols)
        return BarArrays.from_numpy(cols.pop("timestamp"), **cols)

    return build


async def test_replay_into_the_callers_storage_gives_the_same_bars_across_chunks_and_trims(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(45))
    calls: list[int] = []
    for lo, hi in ((None, None), (at(8), at(31)), (at(3) + 1, at(6) - 1), (at(10), at(19))):
        built = await store.replay(sym, "1m", lo, hi, build=numpy_builder(calls))
        assert built == await store.replay(sym, "1m", lo, hi)
    assert calls == [45, 24, 2, 10]


async def test_replay_falls_back_to_bytes_when_the_callers_storage_declines(store):
    sym = fresh_symbol()
    data = bars(25)
    await store.load(sym, "1m", data)
    assert await store.replay(sym, "1m", build=lambda count, fill: None) == data


async def test_loading_the_same_bars_twice_stores_nothing_new(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    report = await store.load(sym, "1m", bars(25))
    assert (report.stored_chunks, report.bars, report.skipped_bars) == (0, 0, 25)
    assert report.skipped_chunks == 3
    assert await stored_messages(store, sym) == 3


async def test_loading_an_overlapping_superset_stores_only_the_new_bars(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(20, first=10))  # bars 10..29
    report = await store.load(sym, "1m", bars(45, first=0))  # bars 0..44
    assert (report.bars, report.skipped_bars) == (25, 20)
    out = await store.replay(sym, "1m")
    assert out.column("close").tolist() == list(range(45))


async def test_a_republished_chunk_is_deduplicated_by_msg_id(store):
    # A load that published but died before writing its index: the retry must not store twice.
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    kv = await store.js.key_value(INDEX_BUCKET)
    await kv.purge(f"1m.{sym}")
    report = await store.load(sym, "1m", bars(25))
    assert (report.stored_chunks, report.skipped_chunks, report.bars) == (0, 3, 0)
    assert await stored_messages(store, sym) == 3
    assert (await store.replay(sym, "1m")).column("close").tolist() == list(range(25))


async def test_concurrent_loads_of_the_same_bars_store_them_once(nc):
    sym = fresh_symbol()
    a, b = (BarStore(nc.jetstream(), chunk_bars=CHUNK) for _ in range(2))
    reports = await asyncio.gather(a.load(sym, "1m", bars(25)), b.load(sym, "1m", bars(25)))
    assert sorted(r.bars for r in reports) == [0, 25]
    assert await stored_messages(a, sym) == 3
    assert (await a.replay(sym, "1m")).column("close").tolist() == list(range(25))


async def test_unknown_series_is_an_invalid_request(store):
    with pytest.raises(ExecutionError) as err:
        await store.replay("NOSUCH" + fresh_symbol(), "1d")
    assert err.value.code == ErrorCode.INVALID_REQUEST
    assert "no bars stored for NOSUCH" in err.value.message and "1d" in err.value.message


async def test_start_after_end_is_an_invalid_request(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(5))
    with pytest.raises(ExecutionError) as err:
        await store.replay(sym, "1m", at(4), at(2))
    assert err.value.code == ErrorCode.INVALID_REQUEST
    assert "empty range" in err.value.message


async def test_range_outside_the_stored_bars_is_an_invalid_request(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(5, first=100))
    with pytest.raises(ExecutionError) as err:
        await store.replay(sym, "1m", at(0), at(50))
    assert err.value.code == ErrorCode.INVALID_REQUEST
    assert "no bars for" in err.value.message and "stored bars run from" in err.value.message


async def test_range_inside_a_gap_between_bars_is_an_invalid_request(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(5, step_ns=10 * MIN_NS))  # bars every 10 minutes
    with pytest.raises(ExecutionError) as err:
        await store.replay(sym, "1m", at(1), at(9))
    assert err.value.code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    "broken, message",
    [
        ("unsorted", "timestamp[5]"),
        ("duplicate", "timestamp[5]"),
        ("nan_close", "close[7]"),
        ("nan_volume", "volume[2]"),
        ("inf_open", "open[3]"),
    ],
)
async def test_bad_input_is_rejected_and_leaves_the_stream_unchanged(store, broken, message):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(20))
    ts = bars(30).column("timestamp").copy()
    cols = {k: bars(30).column(k).copy() for k in ("open", "high", "low", "close", "volume")}
    if broken == "unsorted":
        ts[5], ts[6] = ts[6], ts[5]
    elif broken == "duplicate":
        ts[5] = ts[4]
    elif broken == "nan_close":
        cols["close"][7] = np.nan
    elif broken == "nan_volume":
        cols["volume"][2] = np.nan
    elif broken == "inf_open":
        cols["open"][3] = np.inf
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await store.load(sym, "1m", BarArrays.from_numpy(ts, **cols))
    assert await stored_messages(store, sym) == 2
    assert (await store.info(sym, "1m")).bars == 20


async def test_empty_input_is_rejected(store):
    with pytest.raises(ValueError, match="no bars"):
        await store.load(fresh_symbol(), "1m", bars(0))


async def test_invalid_symbol_is_an_invalid_request(store):
    with pytest.raises(ExecutionError) as err:
        await store.load("BAD SYMBOL", "1m", bars(3))
    assert err.value.code == ErrorCode.INVALID_REQUEST


async def test_symbols_lists_each_series_with_its_span(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    await store.load(sym, "5m", bars(3, step_ns=5 * MIN_NS))
    listed = {(s.symbol, s.timeframe): s for s in await store.symbols()}
    one = listed[(sym, "1m")]
    assert (one.bars, one.chunks, one.first_ns, one.last_ns) == (25, 3, at(0), at(24))
    assert one.first == "2024-01-01T00:00:00Z" and one.last == "2024-01-01T00:24:00Z"
    assert listed[(sym, "5m")].bars == 3


async def test_replay_fetches_only_the_chunks_covering_the_range(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(100))  # 10 chunks
    before = store.stats.messages
    out = await store.replay(sym, "1m", at(85), at(92))  # inside chunks 8 and 9
    assert out.column("close").tolist() == list(range(85, 93))
    assert store.stats.messages - before == 2


async def test_replay_ref_accepts_iso_and_epoch_ms_bounds(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    ref = BarsRef(symbol=sym, timeframe="1m", start="2024-01-01T00:03:00Z", end=at(5) // 1_000_000)
    assert (await store.replay_ref(ref)).column("close").tolist() == [3, 4, 5]


async def test_replay_ref_date_only_end_covers_the_whole_day(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    ref = BarsRef(symbol=sym, timeframe="1m", start="2024-01-01", end="2024-01-01")
    assert (await store.replay_ref(ref)).count == 25


async def test_load_reports_progress_up_to_the_total(store):
    seen = []
    await store.load(fresh_symbol(), "1m", bars(25), progress=lambda done, total: seen.append((done, total)))
    assert seen[0] == (0, 25) and seen[-1] == (25, 25)


async def test_delete_removes_the_series(store):
    sym = fresh_symbol()
    await store.load(sym, "1m", bars(25))
    assert await store.delete(sym, "1m") == 25
    assert await stored_messages(store, sym) == 0
    assert sym not in {s.symbol for s in await store.symbols()}
    with pytest.raises(ExecutionError):
        await store.replay(sym, "1m")
