"""The reference-data store on a real nats-server: stream REFDATA (point-in-time facts) and bucket
REFDATA_MASTER (security master, index marks); loading is idempotent."""

from __future__ import annotations

import uuid

import nats
import pytest

from backtest.refdata_records import Fact, fact_from_row
from backtest.refdata_store import BUCKET, STREAM, RefDataStore, subject_of

DAY_NS = 86_400 * 10**9


@pytest.fixture
async def nc(nats_url):
    conn = await nats.connect(nats_url)
    yield conn
    await conn.drain()


@pytest.fixture
def sym() -> str:
    return "RD" + uuid.uuid4().hex[:8].upper()


def fact(kind: str, symbol: str, known: str, period: str, statement_type: str | None = None, **values) -> Fact:
    row = {"symbol": symbol, "known_date": known, "period": period, **values}
    if statement_type is not None:
        row["statement_type"] = statement_type
    return fact_from_row(kind, row, "test")


async def stream_count(js, subject: str) -> int:
    info = await js.stream_info(STREAM, subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def test_facts_are_stored_one_message_per_record_on_their_subject(nc, sym):
    store = RefDataStore(nc.jetstream())
    facts = [fact("fundamentals", sym, "2024-02-01", "Q4", pe=20.0), fact("fundamentals", sym, "2024-05-01", "Q1", pe=18.0)]
    report = await store.load_facts("fundamentals", facts)
    assert (report.stored, report.skipped, report.symbols) == (2, 0, 1)
    assert await stream_count(nc.jetstream(), subject_of("fundamentals", sym)) == 2
    assert await store.facts(sym) == facts


async def test_reloading_the_same_facts_stores_nothing(nc, sym):
    store = RefDataStore(nc.jetstream())
    facts = [fact("earnings", sym, f"2024-0{m}-02", f"Q{m}", eps_actual=1.0 + m) for m in range(1, 5)]
    await store.load_facts("earnings", facts)
    before = (await nc.jetstream().stream_info(STREAM)).state.messages
    # a fresh store object (a new CLI run), after the duplicate window would not matter
    again = await RefDataStore(nc.jetstream()).load_facts("earnings", facts)
    assert (again.stored, again.skipped) == (0, 4)
    assert (await nc.jetstream().stream_info(STREAM)).state.messages == before


async def test_a_superset_stores_only_the_new_records(nc, sym):
    store = RefDataStore(nc.jetstream())
    old = [fact("earnings", sym, "2024-02-02", "Q1", eps_actual=1.0)]
    await store.load_facts("earnings", old)
    new = old + [fact("earnings", sym, "2024-05-02", "Q2", eps_actual=2.0)]
    report = await store.load_facts("earnings", new)
    assert (report.stored, report.skipped) == (1, 1)
    assert len(await store.facts(sym, ["earnings"])) == 2


async def test_a_restatement_is_a_new_fact_and_the_original_stays(nc, sym):
    store = RefDataStore(nc.jetstream())
    first = fact("statements", sym, "2024-02-02", "2023-12-31", "income", revenue=100.0)
    restated = fact("statements", sym, "2024-06-01", "2023-12-31", "income", revenue=90.0)
    await store.load_facts("statements", [first])
    assert (await store.load_facts("statements", [restated])).stored == 1
    assert [f.values["revenue"] for f in await store.facts(sym, ["statements"])] == [100.0, 90.0]


async def test_facts_as_of_a_time_leave_out_what_was_published_later(nc, sym):
    store = RefDataStore(nc.jetstream())
    a = fact("fundamentals", sym, "2024-02-01", "Q4", pe=20.0)
    b = fact("fundamentals", sym, "2024-05-01", "Q1", pe=18.0)
    await store.load_facts("fundamentals", [a, b])
    may_1 = b.known_ns - DAY_NS + 1  # 2024-05-01T00:00: the report of that day is not known yet
    assert await store.facts(sym, as_of_ns=may_1) == [a]
    assert await store.facts(sym, as_of_ns=b.known_ns) == [a, b]


async def test_reading_a_symbol_takes_one_batched_request_however_many_kinds(nc, sym):
    store = RefDataStore(nc.jetstream())
    await store.load_facts("fundamentals", [fact("fundamentals", sym, "2024-02-01", "Q4", pe=20.0)])
    await store.load_facts("earnings", [fact("earnings", sym, "2024-02-01", "Q4", eps_actual=1.0)])
    reader = RefDataStore(nc.jetstream())
    facts = await reader.facts(sym)
    assert sorted(f.kind for f in facts) == ["earnings", "fundamentals"]
    assert reader.requests == 1


async def test_a_symbols_facts_never_include_another_symbols(nc, sym):
    store = RefDataStore(nc.jetstream())
    await store.load_facts("fundamentals", [fact("fundamentals", sym, "2024-02-01", "Q4", pe=20.0),
                                            fact("fundamentals", sym + "X", "2024-02-01", "Q4", pe=5.0)])
    assert [f.symbol for f in await store.facts(sym)] == [sym]


async def test_security_records_are_written_only_when_they_change(nc, sym):
    store = RefDataStore(nc.jetstream())
    record = {"symbol": sym, "name": "Alpha", "sector": "Tech", "lot_size": 1}
    first = await store.load_securities([record])
    assert (first.stored, first.skipped) == (1, 0)
    kv = await nc.jetstream().key_value(BUCKET)
    revision = (await kv.get(f"security.{sym}")).revision
    again = await RefDataStore(nc.jetstream()).load_securities([dict(record)])
    assert (again.stored, again.skipped) == (0, 1)
    assert (await kv.get(f"security.{sym}")).revision == revision
    changed = await store.load_securities([{**record, "sector": "Energy"}])
    assert changed.stored == 1
    assert (await store.security(sym))["sector"] == "Energy"


async def test_index_marks_merge_timeframes_and_reloading_changes_nothing(nc, sym):
    store = RefDataStore(nc.jetstream())
    assert await store.register_indices([sym], "1d") == 1
    assert await store.register_indices([sym], "1d") == 0
    assert await store.register_indices([sym], "1h") == 1
    assert (await store.indices())[sym] == ["1d", "1h"]


async def test_the_whole_security_master_lists_every_record(nc, sym):
    store = RefDataStore(nc.jetstream())
    await store.load_securities([{"symbol": sym + "A", "sector": "S" + sym}, {"symbol": sym + "B", "sector": "S" + sym}])
    master = await store.securities()
    assert {s for s, r in master.items() if r.get("sector") == "S" + sym} == {sym + "A", sym + "B"}


@pytest.mark.parametrize("subject, concerned", [
    ("$js.api.direct.get.refdata", True),  # nats-py lowercases the server's error text
    ("$JS.API.STREAM.INFO.REFDATA", True),
    ("$js.api.direct.get.kv_refdata_master.$kv.refdata_master.security.acme", True),
    ("$kv.refdata_master.security.acme", True),
    ("refdata.fundamentals.acme", True),
    ("bars.1d.refdata", False),  # a symbol named like the stream is not the store
    ("$js.api.stream.info.bars", False),
    ("strategy.v1.execute", False),
])
def test_a_denied_subject_concerns_the_store_only_when_it_is_one_of_its_reads_or_writes(subject, concerned):
    assert RefDataStore.concerns(subject) is concerned
