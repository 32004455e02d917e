"""Node memory stays bounded against small requests that ask it to build large things.

A real `strategy-node run` subprocess on its own nats-server (the cluster's `max_payload 8MB`);
its peak resident memory is read from /proc/<pid>/status (VmHWM) after each shape:

* sweeps: the largest grid the contract admits, every row echoing its grid values (10,000
  points, four 250-byte values each), and a grid request like the reported 309 KB one (long
  values), which is now refused at decode;
* screens: many symbols whose `classify_symbol` returns ~0.9 MB each; the node stops screening
  once the reply cannot hold another row, instead of keeping every result;
* 8 MB payloads at high concurrency: tests/node/test_admission.py::
  test_a_burst_of_large_requests_is_answered_without_a_slow_consumer_disconnect.

The bound, `NODE_RSS_MB`, is the documented per-node figure of the README ("Memory bounds").
"""

from __future__ import annotations

import json
import time
import uuid

import nats
import numpy as np
import pytest

from backtest.store import BarStore
from contracts import BarArrays, subjects
from tests.node.memory import NodeOnServer
from tests.support import DAY_MS, START_MS, columnar_bars

NODE_RSS_MB = 300
QUICK = "def strategy(data, params):\n    return 'HOLD'\n"
VECTOR = "import numpy as np\ndef strategy(data, params):\n    return np.zeros(len(data))\n"
BIG_RESULT = "def classify_symbol(symbol):\n    return 'r' * 900_000\n"


@pytest.fixture
async def setup(tmp_path):
    node = NodeOnServer(tmp_path, f"mem-{uuid.uuid4().hex[:6]}", "max_payload: 8MB",
                        MAX_WORKERS="2", SANDBOX_READY="2", MAX_TIMEOUT_SECONDS="20")
    conn = await nats.connect(node.server.url)
    try:
        await node.ready(conn)
        yield node, conn
    finally:
        await conn.close()
        node.close()


async def ask(conn, subject: str, body: dict, timeout: float = 120) -> dict:
    msg = await conn.request(subject, json.dumps(body).encode(), timeout=timeout)
    return json.loads(msg.data)


async def test_the_widest_sweep_the_contract_admits_keeps_node_memory_bounded(setup):
    node, conn = setup
    values = lambda tag: [f"{tag}{i}-" + "v" * 240 for i in range(10)]  # noqa: E731
    grid = {"a": values("a"), "b": values("b"), "c": values("c"), "d": values("d")}  # 10,000 points
    started = time.monotonic()
    reply = await ask(conn, subjects.BACKTEST, {"code": VECTOR, "bars": columnar_bars(30), "grid": grid,
                                                "rank_by": "total_return"}, timeout=300)
    took = time.monotonic() - started
    memory = node.memory_kb()
    rows = len(reply.get("sweep") or [])
    print(f"\n[memory] sweep of 10,000 points x 4 values of 250 B: {took:.1f}s, {rows} rows, "
          f"error {reply['error'] and reply['error']['code']}, node VmHWM {memory['VmHWM'] // 1024} MB")
    assert reply["error"] is None or reply["error"]["code"] == "OUTPUT_LIMIT", reply["error"]
    assert rows > 0
    if reply["error"] is not None:
        assert reply["truncated"] is True
    assert memory["VmHWM"] < NODE_RSS_MB * 1024


async def test_a_grid_of_long_values_is_refused_at_decode_without_growing_the_node(setup):
    node, conn = setup
    grid = {"a": ["v" * 3000 for _ in range(100)], "b": list(range(100))}  # ~300 KB request
    before = node.memory_kb()["VmHWM"]
    reply = await ask(conn, subjects.BACKTEST, {"code": VECTOR, "bars": columnar_bars(30), "grid": grid})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "grid.a[0]" in reply["error"]["message"]
    assert node.memory_kb()["VmHWM"] - before < 50 * 1024


async def test_a_screen_of_many_large_results_stops_and_keeps_node_memory_bounded(setup):
    node, conn = setup
    store = BarStore(conn.jetstream())
    tag = uuid.uuid4().hex[:5].upper()
    symbols = [f"M{tag}{i:03d}" for i in range(300)]
    close = 100 + np.arange(5, dtype=np.float64)
    ts = (START_MS + np.arange(5, dtype=np.int64) * DAY_MS) * 1_000_000
    arrays = BarArrays.from_numpy(ts, open=close, high=close, low=close, close=close, volume=np.ones(5))
    for symbol in symbols:
        await store.load(symbol, "1d", arrays)
    started = time.monotonic()
    reply = await ask(conn, subjects.SCREEN, {"code": BIG_RESULT, "symbols": symbols}, timeout=300)
    took = time.monotonic() - started
    memory = node.memory_kb()
    print(f"\n[memory] screen of {len(symbols)} symbols x 0.9 MB results: {took:.1f}s, "
          f"{len(reply['results'])} rows kept, node VmHWM {memory['VmHWM'] // 1024} MB")
    assert reply["truncated"] is True and reply["error"]["code"] == "OUTPUT_LIMIT"
    assert 1 <= len(reply["results"]) <= 9  # what 8 MB holds
    assert memory["VmHWM"] < NODE_RSS_MB * 1024


async def test_a_screen_over_a_large_universe_keeps_node_memory_bounded(setup):
    """40 symbols x 10,000 bars (400,000 bars, 19 MB of arrays) handed to every run: the node
    keeps at most RUN_MEMORY_BUDGET of encoded universe copies in flight, not one per worker."""
    node, conn = setup
    store = BarStore(conn.jetstream())
    n = 10_000
    close = 100 + np.arange(n, dtype=np.float64)
    ts = (START_MS + np.arange(n, dtype=np.int64) * 60_000) * 1_000_000
    arrays = BarArrays.from_numpy(ts, open=close, high=close, low=close, close=close, volume=np.ones(n))
    tag = uuid.uuid4().hex[:5].upper()
    symbols = [f"W{tag}{i:02d}" for i in range(40)]
    for symbol in symbols:
        await store.load(symbol, "1m", arrays)
    code = "def classify_symbol(symbol):\n    return len(get_multiple_symbols_data(params['all'])) == 40\n"
    started = time.monotonic()
    reply = await ask(conn, subjects.SCREEN, {"code": code, "symbols": symbols, "timeframe": "1m",
                                              "max_bars": n, "parameters": {"all": symbols}}, timeout=300)
    took = time.monotonic() - started
    memory = node.memory_kb()
    print(f"\n[memory] screen of 40 symbols over a 400,000-bar universe: {took:.1f}s, "
          f"node VmHWM {memory['VmHWM'] // 1024} MB")
    assert reply["success"] is True, reply["error"]
    assert reply["passed"] == symbols
    assert memory["VmHWM"] < NODE_RSS_MB * 1024


async def test_a_screen_over_more_than_the_universe_limit_is_refused(setup):
    from node.screen import MAX_UNIVERSE_BARS

    node, conn = setup
    store = BarStore(conn.jetstream())
    n = MAX_UNIVERSE_BARS // 2 + 1
    close = 100 + np.arange(n, dtype=np.float64)
    ts = (START_MS + np.arange(n, dtype=np.int64) * 60_000) * 1_000_000
    arrays = BarArrays.from_numpy(ts, open=close, high=close, low=close, close=close, volume=np.ones(n))
    tag = uuid.uuid4().hex[:5].upper()
    symbols = [f"X{tag}{i}" for i in range(2)]
    for symbol in symbols:
        await store.load(symbol, "1m", arrays)
    reply = await ask(conn, subjects.SCREEN, {"code": BIG_RESULT, "symbols": symbols, "timeframe": "1m",
                                              "max_bars": n})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert f"the limit is {MAX_UNIVERSE_BARS:,}" in reply["error"]["message"]
