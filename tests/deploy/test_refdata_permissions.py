"""Reference data under the deployed permissions (deploy/nats/permissions.conf).

The `ingest` user loads it with the real loader (`strategy-node refdata load`, configured by
NATS_USER / NATS_PASSWORD / NATS_INBOX_PREFIX as deploy/README.md says) beside the bars it loads
into BARS; a real node running as `node` reads it for the strategy accessors; tenant `client`
(account TENANT_A) screens and backtests through its imports and gets the loaded values. None of
them meets a permission violation, and each is still refused what it must not do: ingest cannot
delete, purge or consume the reference data nor read results, the node cannot write it, and a
tenant can neither write nor read it behind the node's back.

Its own server (same configuration), so the streams it declares meet no other test's.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from nats.errors import TimeoutError as NatsTimeoutError

from backtest.refdata_records import fact_from_row
from backtest.refdata_store import BUCKET, STREAM, UNAVAILABLE, UNAVAILABLE_FOR_S, WATCH_INACTIVE_S, RefDataStore
from backtest.store import BarStore
from contracts import BarArrays, subjects
from node import jobs_client
from node.config import Settings
from node.embedded import EmbeddedServer
from node.service import Node
from tests.support import columnar_bars, request_json

from .support import PASSWORDS, PERMISSIONS_CONF, ROOT, Connections, password_env

N = 120  # daily bars from 2024-01-01
PUBLISHED = "2024-02-15"  # ACME's income statement is known from here on ...
FIRST_VISIBLE = (pd.Timestamp(PUBLISHED) - pd.Timestamp("2024-01-01")).days + 1  # ... so from the bar of 02-16
KV_STREAM = f"KV_{BUCKET}"

SECURITIES = """symbol,name,exchange,sector,industry,currency,lot_size
ACME,Acme Corp,NYSE,Tech,Software,USD,1
BOLT,Bolt Inc,NASDAQ,Tech,Chips,USD,1
OILX,Oil X,NYSE,Energy,Oil,USD,100
"""
FUNDAMENTALS = """symbol,known_date,pe_ratio,pb_ratio
ACME,2024-01-10,30,4
ACME,2024-03-10,11,1.5
BOLT,2024-01-10,45,9
OILX,2024-01-10,9,5
"""
STATEMENTS = f"""symbol,statement_type,period_end,published,revenue,net_income
ACME,income,2023-12-31,{PUBLISHED},1000,100
ACME,income,2023-12-31,2024-04-01,900,80
"""


def arrays(seed: int, drift: float) -> BarArrays:
    cols = columnar_bars(N, seed=seed)
    close = np.asarray(cols["close"]) * np.exp(drift * np.arange(N))
    ts = np.asarray(cols["timestamp"], dtype=np.int64) * 1_000_000
    return BarArrays.from_numpy(ts, open=close, high=close * 1.01, low=close * 0.99, close=close,
                                volume=np.asarray(cols["volume"]))


BARS = {"ACME": arrays(1, 0.004), "BOLT": arrays(2, -0.004), "OILX": arrays(3, 0.0)}
INDEX = arrays(4, 0.001)


def index_csv() -> str:
    days = pd.to_datetime(INDEX.column("timestamp"), utc=True).strftime("%Y-%m-%d")
    lines = ["timestamp,open,high,low,close,volume"]
    lines += [f"{d},{o!r},{h!r},{lo!r},{c!r},{v!r}" for d, o, h, lo, c, v in zip(
        days, *(INDEX.column(k).tolist() for k in ("open", "high", "low", "close", "volume")))]
    return "\n".join(lines) + "\n"


async def run_refdata_load(url: str, path, kind: str, *extra: str) -> tuple[int, str, str, float]:
    """`strategy-node refdata load` as the ingest user, configured as deploy/README.md says: its exit
    status, stdout, stderr and how long it took."""
    env = {**os.environ, "NATS_URL": url, "NATS_USER": "ingest", "NATS_PASSWORD": PASSWORDS["ingest"],
           "NATS_INBOX_PREFIX": "_INBOX_ingest"}
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "node", "refdata", "load", str(path), "--kind", kind, "--json", *extra,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode(), err.decode(), time.monotonic() - started


async def refdata_load(url: str, path, kind: str, *extra: str) -> tuple[dict, float]:
    """A load that must succeed: its JSON summary and how long it took."""
    code, out, err, took = await run_refdata_load(url, path, kind, *extra)
    assert code == 0, f"refdata load --kind {kind} failed after {took:.1f}s: {err.strip()}"
    return json.loads(out), took


@pytest_asyncio.fixture(scope="module")
async def world(tmp_path_factory):
    """Own server; bars and reference data loaded by `ingest`; a real node as `node`."""
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    conns = Connections(server.url)
    node = None
    try:
        ingest = await conns.connect("ingest")
        bars = BarStore(ingest.jetstream(timeout=5), ingest)
        for symbol, series in BARS.items():
            await bars.load(symbol, "1d", series)

        files = tmp_path_factory.mktemp("refdata")
        for name, text in (("securities.csv", SECURITIES), ("fundamentals.csv", FUNDAMENTALS),
                           ("statements.csv", STATEMENTS), ("index.csv", index_csv())):
            (files / name).write_text(text)
        loads = {
            "securities": await refdata_load(server.url, files / "securities.csv", "securities"),
            "fundamentals": await refdata_load(server.url, files / "fundamentals.csv", "fundamentals"),
            "statements": await refdata_load(server.url, files / "statements.csv", "statements"),
            "indices": await refdata_load(server.url, files / "index.csv", "indices", "--symbol", "IDX"),
        }

        node_errors: list[str] = []
        settings = Settings.from_env({
            "NODE_ID": "refdata-node", "MAX_WORKERS": "2", "SANDBOX_READY": "1",
            "JOB_REPLY_PREFIXES": "TENANT_A=_INBOX_client,TENANT_B=_INBOX_client2",
            "HEARTBEAT_FILE": str(tmp_path_factory.mktemp("hb") / "heartbeat"),
        })
        node = Node(settings, server.url, connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})

        async def on_error(exc: Exception) -> None:  # the node's own connection (node.service.Node._on_error)
            node_errors.append(str(exc))

        node._on_error = on_error
        await node.start()
        client = await conns.connect("client")
        yield {"server": server, "conns": conns, "ingest": ingest, "client": client, "node": node,
               "node_errors": node_errors, "loads": loads, "files": files}
    finally:
        if node is not None:
            await node.stop()
        await conns.close()
        server.close()


# -- ingest loads ---------------------------------------------------------------------------------

def test_ingest_loads_every_kind_of_reference_data_with_the_cli(world):
    loads = {kind: summary for kind, (summary, _) in world["loads"].items()}
    assert (loads["securities"]["records"], loads["securities"]["stored"]) == (3, 3)
    assert (loads["fundamentals"]["records"], loads["fundamentals"]["stored"]) == (4, 4)
    assert (loads["statements"]["records"], loads["statements"]["stored"]) == (2, 2)
    assert (loads["indices"]["stored"], loads["indices"]["indices_marked"]) == (N, 1)


async def test_ingest_reloads_store_nothing(world):
    # the dedupe reads (facts on the subject, the stored record) work under ingest's permissions
    for kind in ("securities", "fundamentals", "statements"):
        again, _ = await refdata_load(world["server"].url, world["files"] / f"{kind}.csv", kind)
        assert (again["stored"], again["skipped"]) == (0, again["records"]), kind
    again, _ = await refdata_load(world["server"].url, world["files"] / "index.csv", "indices", "--symbol", "IDX")
    assert (again["stored"], again["indices_marked"]) == (0, 0)


async def test_ingest_loads_through_the_store_on_its_own_connection_without_a_violation(world):
    ingest = world["ingest"]
    store = RefDataStore(ingest.jetstream(timeout=5), ingest)
    facts = [fact_from_row("fundamentals", {"symbol": "BOLT", "known_date": "2024-01-10", "pe_ratio": 45,
                                            "pb_ratio": 9}, "test")]
    assert (await store.load_facts("fundamentals", facts)).stored == 0  # loaded by the CLI already
    assert (await store.load_securities([{"symbol": "OILX", "name": "Oil X", "exchange": "NYSE", "sector": "Energy",
                                          "industry": "Oil", "currency": "USD", "lot_size": 100}])).stored == 0
    assert await store.register_indices(["IDX"], "1d") == 0
    assert world["conns"].errors_of(ingest) == []


# -- the node reads, the tenant gets the loaded values --------------------------------------------

SCREEN = '''
def classify_symbol(symbol):
    info = get_security_info(symbol)
    sector = get_sector_data(info["sector"])
    pe = get_fundamental_data(symbol, "pe_ratio")["pe_ratio"]
    return {"name": info["name"], "exchange": info["exchange"], "lot_size": info["lot_size"],
            "sector": info["sector"], "members": int(sector["members"].iloc[-1]),
            "last_return": float(sector["return"].iloc[-1]), "pe": pe}
'''


async def test_a_tenants_screen_reads_the_loaded_security_sector_and_fundamentals(world):
    reply = await request_json(world["client"], subjects.SCREEN,
                               {"code": SCREEN, "symbols": ["ACME", "OILX"], "timeframe": "1d"}, timeout=60)
    assert reply["success"] is True, reply["error"]
    rows = {r["symbol"]: r for r in reply["results"]}
    assert all(r["error"] is None for r in rows.values()), rows
    a, b = BARS["ACME"].column("close"), BARS["BOLT"].column("close")
    assert rows["ACME"]["result"] == {
        "name": "Acme Corp", "exchange": "NYSE", "lot_size": 1, "sector": "Tech", "members": 2,
        "last_return": pytest.approx(((a[-1] / a[-2] - 1) + (b[-1] / b[-2] - 1)) / 2), "pe": 11.0}
    o = BARS["OILX"].column("close")
    assert rows["OILX"]["result"] == {
        "name": "Oil X", "exchange": "NYSE", "lot_size": 100, "sector": "Energy", "members": 1,
        "last_return": pytest.approx(o[-1] / o[-2] - 1), "pe": 9.0}
    assert world["conns"].errors_of(world["client"]) == [] and world["node_errors"] == []


async def test_a_tenants_screen_with_an_end_reads_the_fundamentals_known_by_then(world):
    code = 'def classify_symbol(symbol):\n    return get_fundamental_data(symbol, "pe_ratio")["pe_ratio"]\n'
    for end, pe in (("2024-03-09", 30.0), ("2024-03-10", 11.0)):
        reply = await request_json(world["client"], subjects.SCREEN,
                                   {"code": code, "symbols": ["ACME"], "end": end}, timeout=60)
        assert reply["success"] is True, reply["error"]
        assert reply["results"][0]["result"] == pe, (end, reply["results"])
    assert world["conns"].errors_of(world["client"]) == [] and world["node_errors"] == []


BACKTEST = f'''
def strategy(data):
    if len(data) == {N}:
        info = get_security_info("ACME")
        members = get_sector_data(info["sector"])["members"]
        indices = get_market_indices()
        log(info["name"], info["sector"], int(members.iloc[-1]), sorted(indices))
    try:
        st = get_financial_statements("ACME", "income", 4)
    except LookupError:
        return "HOLD"
    return "BUY" if st["revenue"].iloc[-1] == 1000 else "SELL"
'''
BACKTEST_BODY = {"code": BACKTEST, "source": {"symbol": "ACME", "timeframe": "1d"}, "timeout_ms": 9000,
                 "options": {"max_trades": 0, "equity_points": 0}}


async def test_a_tenants_backtest_from_bars_reads_reference_data_point_in_time(world):
    reply = await request_json(world["client"], subjects.BACKTEST, BACKTEST_BODY, timeout=60)
    assert reply["success"] is True, reply["error"]
    # HOLD until the statement is published, then one signal per bar: it was never seen early
    assert reply["signals_count"] == N - FIRST_VISIBLE
    assert reply["logs"] == ["Acme Corp Tech 2 ['IDX']"]
    assert world["conns"].errors_of(world["client"]) == [] and world["node_errors"] == []


async def test_a_tenants_durable_backtest_job_reads_reference_data_point_in_time(world):
    job_id = await jobs_client.submit(world["client"], "backtest", BACKTEST_BODY)
    result = await jobs_client.result(world["client"], job_id, wait=60)
    assert result is not None and result.success is True, result and result.error
    assert result.signals_count == N - FIRST_VISIBLE
    assert result.logs == ["Acme Corp Tech 2 ['IDX']"]
    assert world["conns"].errors_of(world["client"]) == [] and world["node_errors"] == []


# -- and nobody gets more than that ---------------------------------------------------------------

async def stored_counts(world) -> tuple[int, int]:
    js = world["ingest"].jetstream(timeout=5)  # ingest may look at both streams' info
    return (await js.stream_info(STREAM)).state.messages, (await js.stream_info(KV_STREAM)).state.messages


async def refused(conns, nc, subject: str, body: bytes = b"{}") -> None:
    """`subject` is denied to `nc`: no reply, and the server reports the violation."""
    with pytest.raises(NatsTimeoutError):
        await nc.request(subject, body, timeout=0.5)
    await conns.wait_for_error(nc, subject)


async def test_ingest_cannot_delete_purge_or_consume_reference_data_nor_read_results(world):
    conns = world["conns"]
    ingest = await conns.connect("ingest")  # its own connection: the violations are recorded there
    before = await stored_counts(world)
    for api in (f"$JS.API.STREAM.DELETE.{STREAM}", f"$JS.API.STREAM.PURGE.{STREAM}",
                f"$JS.API.STREAM.DELETE.{KV_STREAM}", f"$JS.API.STREAM.PURGE.{KV_STREAM}",
                f"$JS.API.STREAM.UPDATE.{STREAM}", f"$JS.API.CONSUMER.CREATE.{STREAM}",
                f"$JS.API.CONSUMER.CREATE.{KV_STREAM}", f"$JS.API.STREAM.MSG.DELETE.{STREAM}",
                "$JS.API.DIRECT.GET.STRATEGY_RESULTS", "$JS.API.STREAM.MSG.GET.STRATEGY_RESULTS"):
        await refused(conns, ingest, api)
    assert await stored_counts(world) == before


async def test_the_node_cannot_write_delete_or_purge_reference_data(world):
    conns = world["conns"]
    node = await conns.connect("node")
    before = await stored_counts(world)
    fact = json.dumps({"kind": "fundamentals", "symbol": "ACME", "known_ns": 0, "values": {"pe_ratio": 1}}).encode()
    for subject, body in (("refdata.fundamentals.ACME", fact), (f"$KV.{BUCKET}.security.ACME", b'{"name": "x"}')):
        await node.publish(subject, body)
        await conns.wait_for_error(node, subject)
    for api in (f"$JS.API.STREAM.CREATE.{STREAM}", f"$JS.API.STREAM.CREATE.{KV_STREAM}",
                f"$JS.API.STREAM.UPDATE.{STREAM}", f"$JS.API.STREAM.DELETE.{STREAM}",
                f"$JS.API.STREAM.PURGE.{STREAM}", f"$JS.API.STREAM.PURGE.{KV_STREAM}",
                f"$JS.API.STREAM.MSG.DELETE.{KV_STREAM}"):
        await refused(conns, node, api)
    assert await stored_counts(world) == before


async def test_a_tenant_can_neither_write_nor_read_reference_data_directly(world):
    conns = world["conns"]
    tenant = await conns.connect("client2")
    for subject in ("refdata.fundamentals.ACME", f"$KV.{BUCKET}.security.ACME"):
        await tenant.publish(subject, b'{"pe_ratio": 1}')
        await conns.wait_for_error(tenant, subject)
    for api in (f"$JS.API.DIRECT.GET.{STREAM}", f"$JS.API.DIRECT.GET.{KV_STREAM}.$KV.{BUCKET}.security.ACME",
                f"$JS.API.STREAM.INFO.{STREAM}"):
        await refused(conns, tenant, api)


async def test_the_nodes_key_listings_leave_no_consumer_behind(world):
    # get_sector_data lists the master with an ordered consumer, which the node may create but not
    # delete: the server drops it once the listing ends, not minutes later, one per run
    js = world["ingest"].jetstream(timeout=5)
    code = 'def classify_symbol(symbol):\n    return int(get_sector_data("Tech")["members"].iloc[-1])\n'
    for _ in range(3):
        reply = await request_json(world["client"], subjects.SCREEN, {"code": code, "symbols": ["ACME"]}, timeout=60)
        assert reply["success"] is True and reply["results"][0]["result"] == 2, (reply["results"], reply["logs"])
    assert (await js.stream_info(KV_STREAM)).state.consumer_count >= 1  # the listings' consumers
    deadline = time.monotonic() + WATCH_INACTIVE_S + 5
    while (await js.stream_info(KV_STREAM)).state.consumer_count:
        assert time.monotonic() < deadline, "the listings' consumers outlived them"
        await asyncio.sleep(0.25)
    assert world["node_errors"] == []


# -- last: a security master large enough that listing it needs flow control ----------------------

async def test_the_node_lists_a_security_master_large_enough_for_flow_control(world):
    # get_sector_data lists the master's keys with kv.watch, an ordered consumer with flow control;
    # from some 12,000 keys on the server asks the node to answer flow-control messages, and without
    # that permission the watch stalls (20,000: the screen times out). Written with the loader's
    # own put, in batches (ingest's permissions), each in a sector of its own.
    kv = await world["ingest"].jetstream(timeout=5).key_value(BUCKET)
    bulk = 20_000
    for start in range(0, bulk, 500):
        await asyncio.gather(*(kv.put(f"security.BULK{i}", json.dumps(
            {"symbol": f"BULK{i}", "name": f"Bulk {i}", "sector": f"Bulk{i}"}).encode())
            for i in range(start, min(bulk, start + 500))))
    code = 'def classify_symbol(symbol):\n    return int(get_sector_data("Tech")["members"].iloc[-1])\n'
    reply = await request_json(world["client"], subjects.SCREEN, {"code": code, "symbols": ["ACME"]}, timeout=60)
    assert reply["success"] is True, reply["error"]
    assert reply["results"][0]["result"] == 2, reply["results"]
    assert world["node_errors"] == [] and world["conns"].errors_of(world["ingest"]) == []


# -- without the permissions: a clear error, quickly -------------------------------------------------

REFDATA_ENTRIES = 15  # the node's 7 read entries and ingest's 8 load entries in permissions.conf


def is_refdata_entry(line: str) -> bool:
    entry = line.strip()
    return entry.startswith('"') and ("REFDATA" in entry or entry.startswith('"refdata.'))


@pytest_asyncio.fixture(scope="module")
async def denied(tmp_path_factory):
    """permissions.conf without its reference-data entries (as it was before they were added), its
    own server, and a real node as `node`."""
    lines = PERMISSIONS_CONF.read_text().splitlines(keepends=True)
    assert sum(map(is_refdata_entry, lines)) == REFDATA_ENTRIES
    conf = tmp_path_factory.mktemp("denied") / "permissions.conf"
    conf.write_text("".join(line for line in lines if not is_refdata_entry(line)))
    server = EmbeddedServer(config_file=str(conf), jetstream=True)
    with password_env():
        server.start()
    conns = Connections(server.url)
    settings = Settings.from_env({"NODE_ID": "refdata-denied", "NODE_ROLE": "requests", "MAX_WORKERS": "2",
                                  "SANDBOX_READY": "1",
                                  "HEARTBEAT_FILE": str(tmp_path_factory.mktemp("hb") / "heartbeat")})
    node = Node(settings, server.url, connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    try:
        await node.start()
        yield {"server": server, "conns": conns, "client": await conns.connect("client")}
    finally:
        await node.stop()
        await conns.close()
        server.close()


async def timed(nc, subject: str, body: dict) -> tuple[dict, float]:
    started = time.monotonic()
    reply = await request_json(nc, subject, body, timeout=60)
    return reply, time.monotonic() - started


async def test_a_node_that_may_not_read_reference_data_answers_a_clear_error_and_then_at_once(denied):
    client = denied["client"]
    code = 'def classify_symbol(symbol):\n    return get_security_info(symbol)["name"]\n'
    first, first_s = await timed(client, subjects.SCREEN, {"code": code, "symbols": ["ACME"]})
    # the server's asynchronous Permissions Violation fails the read at once (not at the JetStream
    # context's 5 s timeout), with a clear error, not "internal error in the execution node"
    assert first["success"] is False and first["error"] == {"code": "INTERNAL", "message": UNAVAILABLE, "line": None}
    assert first_s < 3, first_s
    bars = columnar_bars(30)
    execute = {"code": 'def strategy(data):\n    get_fundamental_data("ACME")\n    return "HOLD"\n',
               "bars": bars, "symbol": "ACME"}
    again, again_s = await timed(client, subjects.EXECUTE, execute)
    assert again["success"] is False and again["error"]["message"] == UNAVAILABLE
    assert again_s < min(1.0, UNAVAILABLE_FOR_S), again_s  # no second wait for the same silence
    plain, _ = await timed(client, subjects.EXECUTE, {"code": "def strategy(data):\n    return 'BUY'\n", "bars": bars})
    assert plain["success"] is True, plain["error"]  # runs that name no reference accessor are untouched


async def test_loading_reference_data_without_the_permission_fails_with_a_line_that_says_so(denied, tmp_path):
    path = tmp_path / "securities.csv"
    path.write_text(SECURITIES)
    code, _, err, took = await run_refdata_load(denied["server"].url, path, "securities")
    assert code == 2, err
    assert "to this NATS user: check that it may load reference data" in err and " refused '" in err, err
    assert "Traceback" not in err and "is one running" not in err
    assert took < 4.5, took  # the refusal, not the 5 s JetStream timeout
