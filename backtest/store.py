"""The bar store: OHLCV series in the JetStream stream `BARS`, replayed by bar time.

Layout
------
* Stream `BARS`, subjects `bars.<timeframe>.<symbol>` (file storage, direct get allowed).
* Each message is one chunk of up to `CHUNK_BARS` consecutive bars, msgpack of `BarChunk`
  (format, symbol, timeframe, first/last bar time, and the six columns as raw int64/float64
  bytes in native order, as `BarArrays`). Headers:
  `Nats-Msg-Id` = `<timeframe>.<symbol>.<first_ns>.<last_ns>.<sha256[:16]>` (the server drops a
  repeat inside the duplicate window) and `Bars-Range: <first_ns> <last_ns> <count>` (an index
  can be rebuilt from headers alone). Nothing else: each header line costs replay CPU.
* KV bucket `BARS_INDEX`, key `<timeframe>.<symbol>`: a `SeriesIndex` with one
  (first_ns, last_ns, seq, count) row per chunk, sorted by bar time. Chunks never overlap.

Loading is append-only per series and idempotent beyond the duplicate window: bars inside the
stored [first, last] range are skipped, bars before it are prepended as new chunks, bars after it
are appended. The same file loaded twice stores nothing the second time; a superset stores only
the bars outside the stored range. Everything is validated before anything is published.

Replay reads the index, picks the chunks overlapping [start, end] and fetches exactly those with
batched direct gets (`$JS.API.DIRECT.GET.BARS` with `next_by_subj` + `batch`), never from the
stream start; `BarStore.stats` counts what was fetched.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import msgspec
import numpy as np
import nats.aio.client
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.kv import KeyValue
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from contracts import BarArrays, BarsRef, ErrorCode, ExecutionError, first_out_of_order, ns_to_iso, to_epoch_ns
from contracts.bars import COLUMNS

__all__ = [
    "STREAM", "INDEX_BUCKET", "CHUNK_BARS", "BarChunk", "SeriesIndex", "LoadReport", "SeriesInfo",
    "StoreStats", "BarStore", "validate_arrays", "subject_for", "parse_time",
]

STREAM = "BARS"
SUBJECT_ROOT = "bars"
INDEX_BUCKET = "BARS_INDEX"
CHUNK_BARS = 1_000
DUPLICATE_WINDOW_S = 15 * 60.0
MAX_CHUNK_MSG = 1024 * 1024  # stream max_msg_size; a 1,000-bar chunk is ~48 KB
PUBLISH_WINDOW = 256  # publishes in flight at once
FETCH_WINDOW = 256  # chunks per batched direct get (~12 MB in flight per replay)
INDEX_ROW_BYTES = 32
CHUNK_FORMAT = 1
RANGE_HEADER = "Bars-Range"  # "<first_ns> <last_ns> <count>"

_SYMBOL_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_TIMEFRAME_RE = re.compile(r"^[A-Za-z0-9]+$")
_DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DAY_NS = 86_400 * 1_000_000_000


class BarChunk(msgspec.Struct, array_like=True):
    """One stream message: consecutive bars of one series."""

    format: int
    symbol: str
    timeframe: str
    first_ns: int
    last_ns: int
    bars: BarArrays


class _ChunkView(msgspec.Struct, array_like=True):
    """Read-side twin of `BarChunk`: columns decoded as zero-copy memoryviews."""

    format: int
    symbol: str
    timeframe: str
    first_ns: int
    last_ns: int
    bars: tuple[memoryview, memoryview, memoryview, memoryview, memoryview, memoryview]


class SeriesIndex(msgspec.Struct, array_like=True):
    """The KV value per series: int64 columns, one row per chunk, sorted by bar time."""

    symbol: str
    timeframe: str
    first_ns: bytes
    last_ns: bytes
    seq: bytes
    count: bytes

    @classmethod
    def empty(cls, symbol: str, timeframe: str) -> "SeriesIndex":
        return cls(symbol, timeframe, b"", b"", b"", b"")

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.frombuffer(getattr(self, k), dtype=np.int64)  # type: ignore[return-value]
                     for k in ("first_ns", "last_ns", "seq", "count"))

    @property
    def chunks(self) -> int:
        return len(self.first_ns) // 8


class LoadReport(msgspec.Struct, kw_only=True):
    """What one `load` did. `bars` counts bars newly stored.

    `skipped_chunks` counts stored chunks that already covered input bars plus chunks the server
    reported as duplicates (same `Nats-Msg-Id` inside the duplicate window); `skipped_bars` counts
    input bars inside the already-stored time range (not stored again).
    """

    symbol: str
    timeframe: str
    stored_chunks: int
    skipped_chunks: int
    bars: int
    skipped_bars: int
    seconds: float = 0.0


class SeriesInfo(msgspec.Struct, kw_only=True):
    """One row of `bars ls`: `first`/`last` are ISO-8601 UTC bar times."""

    symbol: str
    timeframe: str
    bars: int
    first: str
    last: str
    chunks: int
    first_ns: int
    last_ns: int


@dataclass
class StoreStats:
    """Cumulative replay counters (tests assert that replay fetches only what it needs)."""

    replays: int = 0
    requests: int = 0  # batched direct-get requests sent
    messages: int = 0  # stream messages received
    bytes: int = 0  # payload bytes received

    def reset(self) -> None:
        self.replays = self.requests = self.messages = self.bytes = 0


_index_decoder = msgspec.msgpack.Decoder(SeriesIndex)
_chunk_decoder = msgspec.msgpack.Decoder(_ChunkView)
_encoder = msgspec.msgpack.Encoder()


def _invalid(message: str) -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_REQUEST, message)


def _check_names(symbol: str, timeframe: str) -> None:
    if not isinstance(symbol, str) or len(symbol) > 64 or not _SYMBOL_RE.match(symbol):
        raise _invalid(
            f"invalid symbol {str(symbol)[:70]!r}: use 1-64 of A-Z a-z 0-9 _ - and inner dots"
        )
    if not isinstance(timeframe, str) or len(timeframe) > 16 or not _TIMEFRAME_RE.match(timeframe):
        raise _invalid(f"invalid timeframe {str(timeframe)[:20]!r}: use 1-16 of A-Z a-z 0-9")


def subject_for(symbol: str, timeframe: str) -> str:
    _check_names(symbol, timeframe)
    return f"{SUBJECT_ROOT}.{timeframe}.{symbol}"


def _key(symbol: str, timeframe: str) -> str:
    return f"{timeframe}.{symbol}"


def validate_arrays(arrays: BarArrays) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Check one series and return (timestamps, columns); raises ValueError naming the first bad bar.

    Timestamps must be strictly increasing (no sorting, no duplicates); open/high/low/close/volume
    must be finite.
    """
    n_bytes = len(arrays.timestamp)
    if n_bytes % 8:
        raise ValueError(f"timestamp column has {n_bytes} bytes, not a multiple of 8")
    for name in COLUMNS:
        size = len(getattr(arrays, name))
        if size != n_bytes:
            raise ValueError(f"{name} has {size // 8} values but timestamp has {n_bytes // 8}")
    ts = arrays.column("timestamp")
    if ts.size == 0:
        raise ValueError("no bars to load")
    disorder = first_out_of_order(ts)
    if disorder is not None:
        i, repeated = disorder
        what = "duplicates" if repeated else "is earlier than"
        raise ValueError(
            f"timestamp[{i}] ({ns_to_iso(ts[i])}) {what} timestamp[{i - 1}] "
            f"({ns_to_iso(ts[i - 1])}): bars must be strictly increasing in time"
        )
    columns = {}
    for name in COLUMNS:
        col = arrays.column(name)
        finite = np.isfinite(col)
        if not finite.all():
            i = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"{name}[{i}] ({ns_to_iso(ts[i])}) is {col[i]!r}; values must be finite")
        columns[name] = col
    return ts, columns


def parse_time(value: int | float | str | None, field: str, end: bool = False) -> int | None:
    """A BarsRef bound (ISO-8601 or epoch ms) as epoch-ns; a date-only `end` means that whole day."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise _invalid(f"{field} must be an ISO-8601 time or epoch milliseconds")
    try:
        ns = int(to_epoch_ns([value], field)[0])
    except (ValueError, OverflowError) as exc:
        raise _invalid(str(exc)) from None
    if end and isinstance(value, str) and _DATE_ONLY_RE.match(value.strip()):
        ns += _DAY_NS - 1
    return ns


def _chunk_bounds(n: int, size: int, from_end: bool) -> list[tuple[int, int]]:
    """[lo, hi) slices of `n` bars in runs of `size`; `from_end` puts the short run first."""
    if n <= 0:
        return []
    if not from_end:
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)]
    first = n % size or size
    bounds = [(0, first)]
    bounds += [(lo, lo + size) for lo in range(first, n, size)]
    return bounds


class BarStore:
    """Load, list and replay bar series held in JetStream."""

    def __init__(
        self,
        js: JetStreamContext,
        nc: nats.aio.client.Client | None = None,
        chunk_bars: int = CHUNK_BARS,
    ) -> None:
        if not 1 <= chunk_bars <= 10_000:
            raise ValueError("chunk_bars must be between 1 and 10,000")
        self.js = js
        self.nc = nc if nc is not None else js._nc  # the connection the context was made from
        self.chunk_bars = chunk_bars
        self.stats = StoreStats()
        self._kv = None
        self._ensured = False

    # -- setup -----------------------------------------------------------------------------

    def _stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=STREAM,
            description="OHLCV bar chunks: bars.<timeframe>.<symbol>",
            subjects=[f"{SUBJECT_ROOT}.>"],
            storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S,
            max_msg_size=MAX_CHUNK_MSG,
            allow_direct=True,
        )

    async def ensure_stream(self) -> None:
        """Create stream `BARS` and bucket `BARS_INDEX`, or bring their settings up to date."""
        want = self._stream_config()
        try:
            info = await self.js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(want)
            except nats.js.errors.BadRequestError:
                info = await self.js.stream_info(STREAM)  # created concurrently
                await self._update_stream(info.config, want)
        else:
            await self._update_stream(info.config, want)
        await self._index(create=True)
        self._ensured = True

    async def _update_stream(self, have: StreamConfig, want: StreamConfig) -> None:
        changes = {}
        if f"{SUBJECT_ROOT}.>" not in (have.subjects or []):
            changes["subjects"] = list(have.subjects or []) + [f"{SUBJECT_ROOT}.>"]
        if (have.duplicate_window or 0) < want.duplicate_window:
            changes["duplicate_window"] = want.duplicate_window
        if have.max_msg_size not in (-1, None) and have.max_msg_size < want.max_msg_size:
            changes["max_msg_size"] = want.max_msg_size
        if not have.allow_direct:
            changes["allow_direct"] = True
        if changes:
            await self.js.update_stream(have.evolve(**changes))

    async def _index(self, create: bool = False):
        if self._kv is not None:
            return self._kv
        try:
            self._kv = await self.js.key_value(INDEX_BUCKET)
        except nats.js.errors.ServiceUnavailableError:
            if create:
                raise
            # An account without a JetStream API of its own that imports the index's direct gets
            # (a tenant, deploy/nats/permissions.conf): read entries by direct get only.
            self._kv = KeyValue(name=INDEX_BUCKET, stream=f"KV_{INDEX_BUCKET}", pre=f"$KV.{INDEX_BUCKET}.",
                                js=self.js, direct=True)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                return None
            try:
                self._kv = await self.js.create_key_value(KeyValueConfig(
                    bucket=INDEX_BUCKET,
                    description="bar chunk index per series: (first_ns, last_ns, seq, count)",
                    history=1,
                    storage=StorageType.FILE,
                    direct=True,
                    max_value_size=self._max_index_bytes(),
                ))
            except nats.js.errors.BadRequestError:
                self._kv = await self.js.key_value(INDEX_BUCKET)
        return self._kv

    def _max_index_bytes(self) -> int:
        return int(getattr(self.nc, "max_payload", 1024 * 1024) or 1024 * 1024)

    async def _read_index(self, symbol: str, timeframe: str) -> tuple[SeriesIndex | None, int | None]:
        kv = await self._index()
        if kv is None:
            return None, None
        try:
            entry = await kv.get(_key(symbol, timeframe))
        except nats.js.errors.KeyNotFoundError:  # includes a deleted/purged key
            return None, None
        if not entry.value:
            return None, None
        return _index_decoder.decode(entry.value), entry.revision

    # -- load ------------------------------------------------------------------------------

    async def load(
        self,
        symbol: str,
        timeframe: str,
        arrays: BarArrays,
        progress: Callable[[int, int], None] | None = None,
    ) -> LoadReport:
        """Store the bars of `arrays` that are not stored yet; see the module doc for the rules.

        Raises ValueError (bad bars: non-increasing/duplicate timestamps, non-finite values,
        empty input, series index too large) or ExecutionError(INVALID_REQUEST) (bad names)
        before publishing anything.
        """
        started = time.perf_counter()
        _check_names(symbol, timeframe)
        subject = subject_for(symbol, timeframe)
        ts, cols = validate_arrays(arrays)
        if not self._ensured:
            await self.ensure_stream()
        index, revision = await self._read_index(symbol, timeframe)
        index = index or SeriesIndex.empty(symbol, timeframe)
        first, last, _, _ = index.arrays()

        # Which input bars are new: outside the stored [first, last] range.
        if first.size:
            lo_stored, hi_stored = int(first[0]), int(last[-1])
            head_n = int(np.searchsorted(ts, lo_stored, side="left"))
            tail_at = int(np.searchsorted(ts, hi_stored, side="right"))
            covered = (last >= ts[0]) & (first <= ts[-1])
            overlapping_chunks = int(covered.sum())
        else:
            head_n, tail_at, overlapping_chunks = 0, 0, 0
        skipped_bars = tail_at - head_n
        bounds = [(lo, hi) for lo, hi in _chunk_bounds(head_n, self.chunk_bars, from_end=True)]
        bounds += [(tail_at + lo, tail_at + hi)
                   for lo, hi in _chunk_bounds(ts.size - tail_at, self.chunk_bars, from_end=False)]

        total_chunks = index.chunks + len(bounds)
        if total_chunks * INDEX_ROW_BYTES + 1024 > self._max_index_bytes():
            raise ValueError(
                f"{symbol} {timeframe} would need {total_chunks} chunks; the index entry of one "
                f"series holds at most {(self._max_index_bytes() - 1024) // INDEX_ROW_BYTES}"
            )

        new_bars = sum(hi - lo for lo, hi in bounds)
        if progress is not None and new_bars:
            progress(0, new_bars)

        rows: list[tuple[int, int, int, int]] = []
        duplicates = duplicate_bars = 0
        done = 0
        # A failure part-way leaves published chunks unindexed (invisible to replay). A retry
        # within the duplicate window gets them back as duplicate acks instead of storing them
        # again; indexing a partial load could leave a hole that later loads would never fill.
        for w in range(0, len(bounds), PUBLISH_WINDOW):
            window = [self._encode_chunk(symbol, timeframe, ts, cols, lo, hi)
                      for lo, hi in bounds[w:w + PUBLISH_WINDOW]]
            acks = await asyncio.gather(*(
                self.js.publish(subject, payload, headers=headers)
                for payload, headers, _ in window
            ))
            for ack, (_, _, row) in zip(acks, window):
                if ack.stream != STREAM:
                    raise ExecutionError(
                        ErrorCode.INTERNAL,
                        f"{subject} was stored by stream {ack.stream!r}, not {STREAM}; "
                        f"another stream's subjects overlap {SUBJECT_ROOT}.>",
                    )
                if ack.duplicate:  # stored before (e.g. by a concurrent or crashed load)
                    duplicates += 1
                    duplicate_bars += row[2]
                rows.append((row[0], row[1], int(ack.seq), row[2]))
                done += row[2]
            if progress is not None:
                progress(done, new_bars)

        if rows:
            await self._commit_index(symbol, timeframe, index, revision, rows)
        return LoadReport(
            symbol=symbol,
            timeframe=timeframe,
            stored_chunks=len(rows) - duplicates,
            skipped_chunks=overlapping_chunks + duplicates,
            bars=new_bars - duplicate_bars,
            skipped_bars=skipped_bars + duplicate_bars,
            seconds=time.perf_counter() - started,
        )

    @staticmethod
    def _encode_chunk(symbol, timeframe, ts, cols, lo, hi):
        part = BarArrays(
            timestamp=ts[lo:hi].tobytes(),
            **{name: cols[name][lo:hi].tobytes() for name in COLUMNS},
        )
        first_ns, last_ns = int(ts[lo]), int(ts[hi - 1])
        payload = _encoder.encode(BarChunk(CHUNK_FORMAT, symbol, timeframe, first_ns, last_ns, part))
        digest = hashlib.sha256(payload).hexdigest()[:16]
        # Few, short headers: every header line costs client CPU on each replayed message.
        headers = {
            "Nats-Msg-Id": f"{timeframe}.{symbol}.{first_ns}.{last_ns}.{digest}",
            RANGE_HEADER: f"{first_ns} {last_ns} {hi - lo}",
        }
        return payload, headers, (first_ns, last_ns, hi - lo)

    async def _commit_index(self, symbol, timeframe, index, revision, rows, attempts: int = 5):
        kv = await self._index(create=True)
        key = _key(symbol, timeframe)
        for _ in range(attempts):
            merged = _merge_index(index, rows)
            value = _encoder.encode(merged)
            try:
                if revision is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                # Another loader committed first: merge our rows into its index and retry.
                fresh, revision = await self._read_index(symbol, timeframe)
                index = fresh or SeriesIndex.empty(symbol, timeframe)
        raise ExecutionError(
            ErrorCode.INTERNAL, f"index of {symbol} {timeframe} kept changing under the load; load again"
        )

    # -- listing ---------------------------------------------------------------------------

    async def symbols(self) -> list[SeriesInfo]:
        """Every stored series, sorted by symbol then timeframe.

        Keys come from the index stream's subject list and values from direct gets (not a KV
        watcher: nats-py's watcher can signal "no more entries" before delivering any).
        """
        kv = await self._index()
        if kv is None:
            return []
        prefix = f"$KV.{INDEX_BUCKET}."
        try:
            info = await self.js.stream_info(f"KV_{INDEX_BUCKET}", subjects_filter=f"{prefix}>")
        except nats.js.errors.ServiceUnavailableError:  # direct gets only (see _index)
            return await self._symbols_by_direct_get(prefix)
        keys = sorted(subject[len(prefix):] for subject in (info.state.subjects or {}))

        async def one(key: str) -> SeriesIndex | None:
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # purged/deleted series
                return None
            return _index_decoder.decode(entry.value) if entry.value else None

        out: list[SeriesInfo] = []
        for w in range(0, len(keys), PUBLISH_WINDOW):
            for index in await asyncio.gather(*(one(k) for k in keys[w:w + PUBLISH_WINDOW])):
                if index is not None and index.chunks:
                    out.append(_series_info(index))
        out.sort(key=lambda s: (s.symbol, s.timeframe))
        return out

    async def _symbols_by_direct_get(self, prefix: str) -> list[SeriesInfo]:
        """`symbols` for an account that may only direct-get the index: one batched request for
        the last entry of every key (`multi_last`), answered as a stream of messages."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()
        out: list[SeriesInfo] = []

        async def on_msg(msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None and not msg.data:
                if finished.done():
                    return
                if status in ("204", "404"):  # end of batch, or nothing stored
                    finished.set_result(None)
                else:  # e.g. 413: more keys than one multi_last request may match
                    finished.set_exception(ExecutionError(
                        ErrorCode.INTERNAL, f"listing the bar index failed: {status} {headers.get('Description', '')}".strip()))
                return
            if msg.data and headers.get("KV-Operation") not in ("DEL", "PURGE"):
                index = _index_decoder.decode(msg.data)
                if index.chunks:
                    out.append(_series_info(index))

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_msg)
        try:
            request = {"multi_last": [f"{prefix}>"], "batch": 100_000}
            await self.nc.publish(f"$JS.API.DIRECT.GET.KV_{INDEX_BUCKET}", json.dumps(request).encode(), reply=inbox)
            try:
                await asyncio.wait_for(finished, 10.0)
            except asyncio.TimeoutError:
                raise ExecutionError(ErrorCode.INTERNAL, "the bar index did not answer within 10s") from None
        finally:
            await sub.unsubscribe()
        out.sort(key=lambda s: (s.symbol, s.timeframe))
        return out

    async def info(self, symbol: str, timeframe: str) -> SeriesInfo:
        """One series' row, or INVALID_REQUEST when nothing is stored for it."""
        _check_names(symbol, timeframe)
        index, _ = await self._read_index(symbol, timeframe)
        if index is None or not index.chunks:
            raise _invalid(f"no bars stored for {symbol} {timeframe}")
        return _series_info(index)

    async def delete(self, symbol: str, timeframe: str) -> int:
        """Remove a series (its stream messages and index entry); returns the bars removed."""
        info = await self.info(symbol, timeframe)
        await self.js.purge_stream(STREAM, subject=subject_for(symbol, timeframe))
        kv = await self._index()
        await kv.purge(_key(symbol, timeframe))
        return info.bars

    # -- replay ----------------------------------------------------------------------------

    async def replay_ref(self, ref: BarsRef) -> BarArrays:
        """`replay` for a request's `source`: ISO-8601 or epoch-ms bounds."""
        return await self.replay(
            ref.symbol, ref.timeframe,
            parse_time(ref.start, "source.start"), parse_time(ref.end, "source.end", end=True),
        )

    async def replay(
        self, symbol: str, timeframe: str, start_ns: int | None = None, end_ns: int | None = None,
        build: Callable[[int, Callable[[dict[str, np.ndarray]], None]], BarArrays | None] | None = None,
    ) -> BarArrays:
        """Bars of one series with start_ns <= bar time <= end_ns (None = unbounded).

        ``build(count, fill)``, when given, makes the result's storage itself (the node's sealed
        memfd, sandbox.shm.build): the chunks are copied straight into the column arrays it hands
        to ``fill`` instead of being joined into bytes; when it returns None, bytes it is.

        Raises ExecutionError(INVALID_REQUEST) for an unknown series, start > end, or a range
        holding no bars.
        """
        _check_names(symbol, timeframe)
        if start_ns is not None and end_ns is not None and start_ns > end_ns:
            raise _invalid(
                f"empty range: start {ns_to_iso(start_ns)} is after end {ns_to_iso(end_ns)}"
            )
        index, _ = await self._read_index(symbol, timeframe)
        if index is None or not index.chunks:
            raise _invalid(f"no bars stored for {symbol} {timeframe}")
        first, last, seq, _ = index.arrays()
        lo = 0 if start_ns is None else int(np.searchsorted(last, start_ns, side="left"))
        hi = first.size if end_ns is None else int(np.searchsorted(first, end_ns, side="right"))
        if lo >= hi:
            raise self._no_bars(symbol, timeframe, start_ns, end_ns, first, last)

        wanted = [int(s) for s in seq[lo:hi]]
        payloads = await self._fetch(subject_for(symbol, timeframe), wanted, seq)
        self.stats.replays += 1

        views = [self._decode_chunk(payloads[s], s) for s in wanted]
        # Trim the first and last chunk to [start, end]; every other chunk is inside.
        trims = [(0, len(v[0]) // 8) for v in views]
        if start_ns is not None:
            t0 = np.frombuffer(views[0][0], dtype=np.int64)
            trims[0] = (int(np.searchsorted(t0, start_ns, side="left")), trims[0][1])
        if end_ns is not None:
            t1 = np.frombuffer(views[-1][0], dtype=np.int64)
            trims[-1] = (trims[-1][0], int(np.searchsorted(t1, end_ns, side="right")))
        total = sum(b - a for a, b in trims)
        if total <= 0:
            raise self._no_bars(symbol, timeframe, start_ns, end_ns, first, last)
        names = ("timestamp", *COLUMNS)
        if build is not None:

            def fill(out: dict[str, np.ndarray]) -> None:
                for c, name in enumerate(names):
                    target = out[name].view(np.uint8)
                    at = 0
                    for v, (a, b) in zip(views, trims):
                        part = v[c][a * 8:b * 8]
                        target[at:at + len(part)] = np.frombuffer(part, dtype=np.uint8)
                        at += len(part)

            built = build(total, fill)
            if built is not None:
                return built
        columns = []
        for c in range(6):
            columns.append(b"".join(v[c][a * 8:b * 8] for v, (a, b) in zip(views, trims)))
        return BarArrays(**dict(zip(names, columns)))

    @staticmethod
    def _decode_chunk(payload: bytes, seq: int) -> tuple[memoryview, ...]:
        try:
            chunk = _chunk_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ExecutionError(
                ErrorCode.INTERNAL, f"message {seq} of stream {STREAM} is not a bar chunk: {exc}"
            ) from None
        if chunk.format != CHUNK_FORMAT:
            raise ExecutionError(
                ErrorCode.INTERNAL,
                f"message {seq} of stream {STREAM} has chunk format {chunk.format}; "
                f"this node reads format {CHUNK_FORMAT}",
            )
        return chunk.bars

    @staticmethod
    def _no_bars(symbol, timeframe, start_ns, end_ns, first, last) -> ExecutionError:
        lo = "the beginning" if start_ns is None else ns_to_iso(start_ns)
        hi = "the end" if end_ns is None else ns_to_iso(end_ns)
        return _invalid(
            f"no bars for {symbol} {timeframe} between {lo} and {hi}; stored bars run from "
            f"{ns_to_iso(int(first[0]))} to {ns_to_iso(int(last[-1]))}"
        )

    async def _fetch(self, subject: str, wanted: list[int], all_seqs: np.ndarray) -> dict[int, bytes]:
        """Payloads of the stream messages `wanted` (seqs on `subject`) via batched direct gets.

        Each request asks for the next N messages on the subject from a start sequence; N is the
        number of indexed chunks in the requested sequence span, so in the usual append-only case
        exactly the wanted messages come back.
        """
        want = set(wanted)
        top = max(wanted)
        indexed = np.sort(all_seqs)
        got: dict[int, bytes] = {}
        next_seq = min(wanted)
        api = f"$JS.API.DIRECT.GET.{STREAM}"
        while len(got) < len(want) and next_seq <= top:
            span_end = int(np.searchsorted(indexed, top, side="right"))
            span_start = int(np.searchsorted(indexed, next_seq, side="left"))
            batch = max(1, min(FETCH_WINDOW, span_end - span_start))
            received = await self._batch_get(api, subject, next_seq, batch)
            if not received:
                break
            for s, data in received:
                if s in want:
                    got[s] = data
            next_seq = received[-1][0] + 1
        missing = want.difference(got)
        if missing:
            raise ExecutionError(
                ErrorCode.INTERNAL,
                f"{len(missing)} indexed chunk(s) of {subject} are missing from stream {STREAM} "
                f"(first: seq {min(missing)})",
            )
        return got

    async def _batch_get(self, api: str, subject: str, seq: int, batch: int,
                         timeout: float = 10.0) -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()
        received: list[tuple[int, bytes]] = []
        stats = self.stats

        async def on_msg(msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None and not msg.data:
                if not finished.done():
                    if status in ("204", "404", "408"):  # end of batch / nothing (more) found
                        finished.set_result(None)
                    else:
                        finished.set_exception(ExecutionError(
                            ErrorCode.INTERNAL,
                            f"direct get from {STREAM} failed: {status} "
                            f"{headers.get('Description', '')}".strip(),
                        ))
                return
            received.append((int(headers["Nats-Sequence"]), msg.data))
            stats.messages += 1
            stats.bytes += len(msg.data)
            if len(received) >= batch and not finished.done():
                finished.set_result(None)  # don't wait for the EOB marker

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_msg, pending_bytes_limit=256 * 1024 * 1024)
        try:
            request = {"seq": seq, "next_by_subj": subject, "batch": batch}
            await self.nc.publish(api, json.dumps(request).encode(), reply=inbox)
            self.stats.requests += 1
            try:
                await asyncio.wait_for(finished, timeout)
            except asyncio.TimeoutError:
                raise ExecutionError(
                    ErrorCode.INTERNAL, f"bar store did not answer within {timeout:.0f}s"
                ) from None
        finally:
            await sub.unsubscribe()
        return received


def _series_info(index: SeriesIndex) -> SeriesInfo:
    first, last, _, count = index.arrays()
    return SeriesInfo(
        symbol=index.symbol, timeframe=index.timeframe, bars=int(count.sum()),
        first=ns_to_iso(int(first[0])), last=ns_to_iso(int(last[-1])), chunks=int(first.size),
        first_ns=int(first[0]), last_ns=int(last[-1]),
    )


def _merge_index(index: SeriesIndex, rows: Iterable[tuple[int, int, int, int]]) -> SeriesIndex:
    """Index rows plus new rows, sorted by bar time; refuses chunks that overlap in time."""
    first, last, seq, count = index.arrays()
    table = {(int(f), int(l)): (int(s), int(c)) for f, l, s, c in zip(first, last, seq, count)}
    for f, l, s, c in rows:
        table.setdefault((f, l), (s, c))
    keys = sorted(table)
    for (f0, l0), (f1, l1) in zip(keys, keys[1:]):
        if f1 <= l0:
            raise ExecutionError(
                ErrorCode.INTERNAL,
                f"chunks of {index.symbol} {index.timeframe} overlap in time "
                f"({ns_to_iso(f1)} <= {ns_to_iso(l0)}); a concurrent load stored different bars",
            )
    arr = np.array([(f, l, *table[(f, l)]) for f, l in keys], dtype=np.int64).reshape(-1, 4)
    return SeriesIndex(
        index.symbol, index.timeframe,
        *(np.ascontiguousarray(arr[:, i]).tobytes() for i in range(4)),
    )
