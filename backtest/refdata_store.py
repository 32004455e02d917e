"""The reference-data store in JetStream, beside BARS.

* Stream `REFDATA`, subjects `refdata.<kind>.<symbol>` (kind: fundamentals, earnings,
  statements): one message per point-in-time `Fact`, its body the fact's canonical JSON (sorted
  keys), its `Nats-Msg-Id` `<kind>.<symbol>.<sha256 of the body>`.
* Key-Value bucket `REFDATA_MASTER`: `security.<symbol>` holds a security-master record (JSON);
  `index.<symbol>` marks a series in BARS as a market index (`{"symbol", "timeframes"}`).
  Index bars themselves are ordinary BARS series (`bars.<timeframe>.<symbol>`).

Loading is idempotent beyond the duplicate window: before publishing a symbol's facts the store
reads the digests of the facts already stored on that subject and publishes only new ones (the
Nats-Msg-Id also drops a concurrent loader's copy); a security record equal to the stored one is
not written again, and a changed one is written with the revision it was read at (a concurrent
change makes the write fail and retry on the new value). Reloading the same file stores nothing.

Reads fetch a symbol's facts with one batched direct get (`next_by_subj` `refdata.*.<symbol>`),
never from the stream start; `as_of_ns` drops facts that became known later.

A read the store does not answer (a server that lost JetStream, or a NATS user without read
permission for REFDATA / KV_REFDATA_MASTER: the server drops the request, so it can only time out)
fails with `StoreUnavailable` (INTERNAL, "reference data is unavailable ...") instead of a bare
timeout, and for `UNAVAILABLE_FOR_S` after that every read fails at once with the same error, so a
burst of runs does not each hold a slot for the whole timeout. The server does tell the connection
of a denied request (an asynchronous `-ERR 'Permissions Violation ...'`): whoever owns the
connection's error callback passes that on (`denied(subject)`), and the reads under way fail at
once instead of after the timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from typing import Any, Iterable

import msgspec
import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from contracts import ErrorCode, ExecutionError

from .refdata_records import FACT_KINDS, Fact, canonical, check_symbol, digest

__all__ = ["STREAM", "BUCKET", "RefDataStore", "RefLoadReport", "StoreUnavailable", "subject_of"]

log = logging.getLogger(__name__)

STREAM = "REFDATA"
SUBJECT_ROOT = "refdata"
BUCKET = "REFDATA_MASTER"
DUPLICATE_WINDOW_S = 15 * 60.0
MAX_MSG = 256 * 1024
FETCH_BATCH = 1_000
PUBLISH_WINDOW = 256
MAX_FACTS_PER_SYMBOL = 20_000
MAX_SECURITIES = 100_000
#: a key listing's consumer outlives its listing by this long (server-side inactive threshold)
WATCH_INACTIVE_S = 5.0
#: after a read the store did not answer, reads fail at once for this long
UNAVAILABLE_FOR_S = 5.0
UNAVAILABLE = "reference data is unavailable: the reference-data store did not answer; retry later"
# what a store that cannot be reached looks like to nats-py (a denied request simply times out)
_UNREACHABLE = (nats.errors.TimeoutError, asyncio.TimeoutError, nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError,
                nats.js.errors.ServiceUnavailableError)

_fact_decoder = msgspec.json.Decoder(Fact)


class RefLoadReport(msgspec.Struct, kw_only=True):
    """What one load did: `stored` records newly written, `skipped` already stored."""

    kind: str
    records: int
    stored: int
    skipped: int
    symbols: int
    seconds: float = 0.0


class StoreUnavailable(ExecutionError):
    """The reference-data store did not answer a read (INTERNAL: the node's fault, not the request's)."""

    def __init__(self, message: str = UNAVAILABLE) -> None:
        super().__init__(ErrorCode.INTERNAL, message)


def subject_of(kind: str, symbol: str) -> str:
    if kind not in FACT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FACT_KINDS)}")
    return f"{SUBJECT_ROOT}.{kind}.{check_symbol(symbol)}"


class RefDataStore:
    def __init__(self, js: JetStreamContext, nc: Any = None) -> None:
        self.js = js
        self.nc = nc if nc is not None else js._nc
        self._kv = None
        self._ensured = False
        self.requests = 0  # batched direct gets sent (tests check reads stay per symbol)
        self._down_until = 0.0  # monotonic time until which reads fail at once (see _reading)
        self._denial: asyncio.Future | None = None  # set by denied(): the reads under way fail at once

    @staticmethod
    def concerns(subject: str) -> bool:
        """Is a denied `subject` one of this store's reads or writes? (nats-py lowercases the
        server's error text, subject included)"""
        s = subject.lower()
        if s.startswith((f"{SUBJECT_ROOT}.", f"$kv.{BUCKET.lower()}.")):
            return True
        return s.startswith("$js.api.") and bool({STREAM.lower(), f"kv_{BUCKET.lower()}"} & set(s.split(".")))

    def denied(self, subject: str) -> None:
        """The server refused the connection a request on `subject` (from the connection's
        error callback): if it is one of this store's, the reads under way and those of the
        next UNAVAILABLE_FOR_S fail at once."""
        if not self.concerns(subject):
            return
        self._down_until = time.monotonic() + UNAVAILABLE_FOR_S
        log.warning("reference data unavailable: the server refused %s to this NATS user; check that it may "
                    "read stream %s and bucket %s (deploy/nats/permissions.conf)", subject, STREAM, BUCKET)
        if self._denial is not None and not self._denial.done():
            self._denial.set_result(subject)
        self._denial = None

    async def _reading(self, read):
        """Await the read coroutine `read`; an unreachable store becomes StoreUnavailable, and for
        UNAVAILABLE_FOR_S after that every read fails at once."""
        if time.monotonic() < self._down_until:
            read.close()
            raise StoreUnavailable()
        if self._denial is None:
            self._denial = asyncio.get_running_loop().create_future()
        denial = self._denial
        reading = asyncio.ensure_future(read)
        try:
            await asyncio.wait((reading, denial), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            reading.cancel()
            raise
        if not reading.done():  # the server refused one of this store's requests: no answer will come
            reading.cancel()
            raise StoreUnavailable()
        try:
            return reading.result()
        except (StoreUnavailable, *_UNREACHABLE) as exc:
            self._down_until = time.monotonic() + UNAVAILABLE_FOR_S
            log.warning("reference data unavailable (%s: %s): failing reads for %.0fs; check that the "
                        "node's NATS user may read stream %s and bucket %s (deploy/nats/permissions.conf)",
                        type(exc).__name__, exc, UNAVAILABLE_FOR_S, STREAM, BUCKET)
            raise StoreUnavailable() from None

    # -- setup -----------------------------------------------------------------------------
    async def ensure(self) -> None:
        """Create stream REFDATA and bucket REFDATA_MASTER (idempotent, safe to race)."""
        want = StreamConfig(
            name=STREAM, description="point-in-time reference facts: refdata.<kind>.<symbol>",
            subjects=[f"{SUBJECT_ROOT}.>"], storage=StorageType.FILE,
            duplicate_window=DUPLICATE_WINDOW_S, max_msg_size=MAX_MSG, allow_direct=True,
        )
        try:
            await self.js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(want)
            except nats.js.errors.BadRequestError:
                await self.js.stream_info(STREAM)  # created concurrently
        await self._bucket(create=True)
        self._ensured = True

    async def _bucket(self, create: bool = False):
        if self._kv is not None:
            return self._kv
        try:
            self._kv = await self.js.key_value(BUCKET)
        except nats.js.errors.BucketNotFoundError:
            if not create:
                return None
            try:
                self._kv = await self.js.create_key_value(KeyValueConfig(
                    bucket=BUCKET, description="security master (security.<symbol>) and market indices (index.<symbol>)",
                    history=5, storage=StorageType.FILE, direct=True, max_value_size=MAX_MSG,
                ))
            except nats.js.errors.BadRequestError:
                self._kv = await self.js.key_value(BUCKET)
        return self._kv

    async def _stream_exists(self) -> bool:
        if self._ensured:
            return True
        try:
            await self.js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            return False
        return True

    # -- load ------------------------------------------------------------------------------
    async def load_facts(self, kind: str, facts: list[Fact]) -> RefLoadReport:
        started = time.perf_counter()
        if not self._ensured:
            await self.ensure()
        groups: dict[str, list[Fact]] = defaultdict(list)
        for fact in facts:
            if fact.kind != kind:
                raise ValueError(f"a {fact.kind} record in a {kind} load")
            groups[fact.symbol].append(fact)
        stored = skipped = 0
        for symbol, group in groups.items():
            subject = subject_of(kind, symbol)
            have = {digest(body) for _, body in await self._read(subject)}
            todo: list[tuple[str, bytes]] = []
            for fact in group:
                body = canonical(fact)
                key = digest(body)
                if key in have:
                    skipped += 1
                    continue
                have.add(key)
                todo.append((key, body))
            if len(have) > MAX_FACTS_PER_SYMBOL:
                raise ValueError(f"{symbol} would hold {len(have):,} {kind} records; at most "
                                 f"{MAX_FACTS_PER_SYMBOL:,} per symbol")
            for w in range(0, len(todo), PUBLISH_WINDOW):
                acks = await asyncio.gather(*(
                    self.js.publish(subject, body, headers={"Nats-Msg-Id": f"{kind}.{symbol}.{key}"})
                    for key, body in todo[w:w + PUBLISH_WINDOW]))
                for ack in acks:
                    if ack.duplicate:
                        skipped += 1
                    else:
                        stored += 1
        return RefLoadReport(kind=kind, records=len(facts), stored=stored, skipped=skipped,
                             symbols=len(groups), seconds=time.perf_counter() - started)

    async def _put_if_changed(self, key: str, value: dict[str, Any], merge=None) -> bool:
        """Write `value` under `key` unless equal to what is stored; True when written."""
        kv = await self._bucket(create=True)
        for _ in range(5):
            try:
                entry = await kv.get(key)
                old, revision = (json.loads(entry.value) if entry.value else None), entry.revision
            except nats.js.errors.KeyNotFoundError:
                old, revision = None, None
            new = merge(old, value) if merge is not None else value
            if old is not None and canonical(old) == canonical(new):
                return False
            try:
                if revision is None:
                    await kv.create(key, canonical(new))
                else:
                    await kv.update(key, canonical(new), last=revision)
                return True
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.BadRequestError):
                continue  # changed concurrently: read again
        raise ExecutionError(ErrorCode.INTERNAL, f"{key} kept changing while it was written; try again")

    async def load_securities(self, records: list[dict[str, Any]]) -> RefLoadReport:
        started = time.perf_counter()
        if not self._ensured:
            await self.ensure()
        stored = 0
        for record in records:
            stored += await self._put_if_changed(f"security.{check_symbol(record['symbol'])}", record)
        return RefLoadReport(kind="securities", records=len(records), stored=stored,
                             skipped=len(records) - stored, symbols=len(records),
                             seconds=time.perf_counter() - started)

    async def register_indices(self, symbols: Iterable[str], timeframe: str) -> int:
        """Mark BARS series as market indices; returns how many marks changed."""
        if not self._ensured:
            await self.ensure()

        def merge(old, new):
            frames = sorted(set((old or {}).get("timeframes", [])) | set(new["timeframes"]))
            return {"symbol": new["symbol"], "timeframes": frames}

        changed = 0
        for symbol in symbols:
            changed += await self._put_if_changed(
                f"index.{check_symbol(symbol)}", {"symbol": symbol, "timeframes": [timeframe]}, merge)
        return changed

    # -- read ------------------------------------------------------------------------------
    async def facts(self, symbol: str, kinds: Iterable[str] = FACT_KINDS,
                    as_of_ns: int | None = None) -> list[Fact]:
        """The symbol's facts of `kinds`, known at or before `as_of_ns` (all when None)."""
        return await self._reading(self._facts(symbol, kinds, as_of_ns))

    async def _facts(self, symbol: str, kinds: Iterable[str], as_of_ns: int | None) -> list[Fact]:
        if not await self._stream_exists():
            return []
        wanted = set(kinds)
        subject = f"{SUBJECT_ROOT}.*.{check_symbol(symbol)}" if len(wanted) > 1 else subject_of(next(iter(wanted)), symbol)
        out = []
        for _, body in await self._read(subject):
            fact = _fact_decoder.decode(body)
            if fact.kind in wanted and (as_of_ns is None or fact.known_ns <= as_of_ns):
                out.append(fact)
        return out

    async def security(self, symbol: str) -> dict[str, Any] | None:
        return await self._reading(self._security(symbol))

    async def _security(self, symbol: str) -> dict[str, Any] | None:
        kv = await self._bucket()
        if kv is None:
            return None
        try:
            entry = await kv.get(f"security.{check_symbol(symbol)}")
        except nats.js.errors.KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def _keys(self, prefix: str) -> list[str]:
        kv = await self._bucket()
        if kv is None:
            return []
        # the listing's ordered consumer is dropped by the server once nobody listens (nats-py's
        # default would keep each one for 5 minutes: one per sector run, piling up)
        watcher = await kv.watch(f"{prefix}.>", ignore_deletes=True, meta_only=True,
                                 inactive_threshold=WATCH_INACTIVE_S)
        keys: list[str] = []
        try:
            async for entry in watcher:
                if entry is None:  # the initial values are done
                    break
                if entry.operation is None:  # a put (deletes and purges are skipped)
                    keys.append(entry.key[len(prefix) + 1:])
        finally:
            await watcher.stop()
        return keys

    async def securities(self) -> dict[str, dict[str, Any]]:
        """The whole security master (for sector membership)."""
        return await self._reading(self._securities())

    async def _securities(self) -> dict[str, dict[str, Any]]:
        names = await self._keys("security")
        if len(names) > MAX_SECURITIES:
            raise ExecutionError(ErrorCode.INTERNAL, f"the security master holds more than {MAX_SECURITIES:,} symbols")
        gate = asyncio.Semaphore(64)

        async def one(name: str):
            async with gate:
                return name, await self._security(name)

        pairs = await asyncio.gather(*(one(n) for n in names))
        return {name: rec for name, rec in pairs if rec is not None}

    async def indices(self) -> dict[str, list[str]]:
        """{index symbol: timeframes it is loaded in}."""
        return await self._reading(self._indices())

    async def _indices(self) -> dict[str, list[str]]:
        kv = await self._bucket()
        out: dict[str, list[str]] = {}
        for name in await self._keys("index"):
            try:
                entry = await kv.get(f"index.{name}")
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value:
                out[name] = list(json.loads(entry.value).get("timeframes", []))
        return out

    async def _read(self, subject: str) -> list[tuple[int, bytes]]:
        """Every message on `subject` (wildcards allowed), by batched direct gets."""
        out: list[tuple[int, bytes]] = []
        seq = 1
        while True:
            got = await self._batch_get(subject, seq, FETCH_BATCH)
            out.extend(got)
            if len(got) < FETCH_BATCH:
                return out
            if len(out) > 3 * MAX_FACTS_PER_SYMBOL:
                raise ExecutionError(ErrorCode.INTERNAL, f"{subject} holds too many records")
            seq = got[-1][0] + 1

    async def _batch_get(self, subject: str, seq: int, batch: int, timeout: float = 10.0) -> list[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        finished: asyncio.Future = loop.create_future()
        received: list[tuple[int, bytes]] = []

        async def on_msg(msg) -> None:
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None and not msg.data:
                if not finished.done():
                    if status in ("204", "404", "408"):
                        finished.set_result(None)
                    else:
                        finished.set_exception(ExecutionError(
                            ErrorCode.INTERNAL,
                            f"direct get from {STREAM} failed: {status} {headers.get('Description', '')}".strip()))
                return
            received.append((int(headers["Nats-Sequence"]), msg.data))
            if len(received) >= batch and not finished.done():
                finished.set_result(None)

        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, cb=on_msg)
        try:
            await self.nc.publish(f"$JS.API.DIRECT.GET.{STREAM}",
                                  json.dumps({"seq": seq, "next_by_subj": subject, "batch": batch}).encode(),
                                  reply=inbox)
            self.requests += 1
            try:
                await asyncio.wait_for(finished, timeout)
            except asyncio.TimeoutError:
                raise StoreUnavailable(f"the reference-data store did not answer within {timeout:.0f}s") from None
        finally:
            await sub.unsubscribe()
        return received
