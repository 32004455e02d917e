"""Backtests and sweeps on bars the node hands to its children in a sealed memfd
(sandbox/shm.py), attacked through NATS as a client would: a strategy that tries to write the
bars' memory, or to reach the buffer behind its arrays, is refused, and nothing it does to its
own frame changes its metrics, a later run's result or another point of its sweep."""

from __future__ import annotations

import uuid

import pytest
import pytest_asyncio

from contracts import subjects
from sandbox import shm
from tests.node.test_backtest import load
from tests.support import columnar_bars, request_json

MINUTE_MS = 60_000

BARS = 30_000  # 1.44 MB of bars: sealed and mapped, not sent through the child's socket
assert 48 * BARS >= shm.MIN_BYTES

SMA = (
    "def strategy(data, params):\n"
    "    close = data['close']\n"
    "    fast = close.rolling(params.get('fast', 10)).mean()\n"
    "    slow = close.rolling(params.get('slow', 40)).mean()\n"
    "    return (fast > slow).astype('int8').diff().fillna(0)\n"
)


@pytest.fixture(scope="module")
def symbol() -> str:
    return "SHM" + uuid.uuid4().hex[:8].upper()


@pytest_asyncio.fixture(scope="module")
async def source(nc, symbol) -> dict:
    await load(nc, symbol, columnar_bars(BARS, seed=21, step_ms=MINUTE_MS), timeframe="1m")
    return {"symbol": symbol, "timeframe": "1m"}


async def backtest(nc, code: str, source: dict, **extra) -> dict:
    return await request_json(nc, subjects.BACKTEST, {"code": code, "source": source, **extra}, timeout=30)


@pytest_asyncio.fixture(scope="module")
async def clean(nc, source) -> dict:
    reply = await backtest(nc, SMA, source)
    assert reply["success"] is True, reply["error"]
    assert reply["performance"]["total_trades"] > 10
    return reply["performance"]


# What a strategy can reach of its bars: its frame (this child's private copy-on-write mapping
# of the memfd) and the frame's index (a copy). Whatever it writes there, or fails to write,
# stays in its own process: the next run on the same sealed bars gives the same result.
WRITES = {
    "a column's numpy values": "    data['close'].to_numpy()[0] = 0.0\n",
    "a column's values made writable": "    v = data['close'].values\n    v.setflags(write=True)\n    v[:] = 0.0\n",
    "the whole block made writable": "    v = data.to_numpy()\n    v.setflags(write=True)\n    v[:] = 0.0\n",
    "the index's int64 values": "    data.index.asi8[:] = 0\n",
    "every price in place": "    data.iloc[:, :] = 0.0\n",
}


@pytest.mark.parametrize("what", list(WRITES))
async def test_a_strategy_writing_its_bars_changes_no_later_run(nc, source, clean, what):
    reply = await backtest(nc, "def strategy(data):\n" + WRITES[what] + "    return data['close'] * 0\n", source)
    if not reply["success"]:
        assert reply["error"]["code"] in ("RUNTIME_ERROR", "SECURITY_VIOLATION"), reply["error"]
    assert (await backtest(nc, SMA, source))["performance"] == clean


async def test_a_strategy_reaching_for_the_buffer_behind_its_frame_is_refused(nc, source):
    code = "def strategy(data):\n    x = data['close'].to_numpy().base.base\n    return data['close'] * 0\n"
    reply = await backtest(nc, code, source)
    assert reply["success"] is False
    assert reply["error"]["code"] == "SECURITY_VIOLATION", reply["error"]
    assert "memoryview" in reply["error"]["message"]


async def test_a_strategy_rewriting_its_frame_gets_metrics_of_the_real_bars(nc, source, clean):
    rewrites = (
        "def strategy(data, params):\n"
        "    fast = data['close'].copy().rolling(10).mean()\n"
        "    slow = data['close'].copy().rolling(40).mean()\n"
        "    signals = (fast > slow).astype('int8').diff().fillna(0)\n"
        "    data.iloc[:, :] = 1.0\n"  # no view of the frame is alive: written in place
        "    return signals\n"
    )
    reply = await backtest(nc, rewrites, source)
    assert reply["success"] is True, reply["error"]
    assert reply["performance"] == clean


async def test_a_run_rewriting_its_frame_changes_no_later_run(nc, source, clean):
    rewrites = "def strategy(data):\n    data.iloc[:, 3] = 0.0\n    return data['close'] * 0\n"
    assert (await backtest(nc, rewrites, source))["success"] is True
    assert (await backtest(nc, SMA, source))["performance"] == clean


async def test_a_sweep_point_rewriting_its_frame_changes_no_other_point(nc, source):
    grid = {"fast": [5, 10, 15, 20], "slow": [40]}
    first_rewrites = SMA.replace(  # before any view of the frame exists: written in place
        "    close = data['close']\n",
        "    if params['fast'] == 5:\n"
        "        data.iloc[:, 3] = data.iloc[::-1, 3].to_numpy()\n"
        "    close = data['close']\n",
    )
    clean_rows = (await backtest(nc, SMA, source, grid=grid))["sweep"]
    attacked = await backtest(nc, first_rewrites, source, grid=grid)
    assert attacked["success"] is True, attacked["error"]
    by_point = {row["parameters"]["fast"]: row for row in attacked["sweep"]}
    for row in clean_rows:
        if row["parameters"]["fast"] != 5:
            assert by_point[row["parameters"]["fast"]]["performance"] == row["performance"]


# -- look-ahead: the walk's attacks, on bars handed over in a memfd ----------------------------
from tests.node import test_lookahead as lookahead  # noqa: E402


@pytest.fixture
def every_bar_in_a_memfd(monkeypatch):
    """The node (in this process) seals even the look-ahead tests' 90 bars."""
    monkeypatch.setattr(shm, "MIN_BYTES", 1)


@pytest_asyncio.fixture(scope="module")
async def honest_sealed(nc) -> dict:
    made = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shm, "MIN_BYTES", 1)
        patch.setattr(shm, "_memfd", lambda real=shm._memfd: made.append(1) or real())
        reply = await request_json(nc, subjects.BACKTEST, lookahead.body(lookahead.HONEST, {}), timeout=30)
    assert reply["success"] is True, reply["error"]
    assert made, "the bars did not go through a memfd"
    return reply


async def test_the_honest_walk_on_a_memfd_gives_the_walk_on_bytes(nc, honest_sealed):
    on_bytes = await request_json(nc, subjects.BACKTEST, lookahead.body(lookahead.HONEST, {}), timeout=30)
    assert honest_sealed["performance"] == on_bytes["performance"]
    assert honest_sealed["signals_count"] == on_bytes["signals_count"] > 0


@pytest.mark.parametrize("name", lookahead.NAMES)
async def test_a_walked_backtest_on_a_memfd_cannot_see_a_later_bar_through(nc, honest_sealed,
                                                                          every_bar_in_a_memfd, name):
    code, params, refused = lookahead.attack(name)
    reply = await request_json(nc, subjects.BACKTEST, lookahead.body(code, params), timeout=30)
    lookahead.same_as_honest(reply, honest_sealed, refused)


@pytest.mark.parametrize("name", ["params", "module global list", "closure", "suspended generator in module state",
                                  "numpy error callback that signals later bars"])
async def test_a_walked_sweep_on_a_memfd_cannot_see_a_later_bar_through(nc, every_bar_in_a_memfd, name):
    honest_row = (await request_json(nc, subjects.BACKTEST, lookahead.body(
        lookahead.HONEST, {}, options=lookahead.ROW_OPTIONS), timeout=30))["performance"]
    code, params, refused = lookahead.attack(name)
    reply = await request_json(nc, subjects.BACKTEST, lookahead.body(code, params, grid={"k": [1, 2, 3]}), timeout=60)
    assert len(reply["sweep"]) == 3
    for row in reply["sweep"]:
        if refused is not None:
            assert row["error"]["code"] == refused, row
        else:
            assert row["error"] is None, row["error"]
            assert row["performance"] == honest_row


# -- screens: classify runs on replayed series handed over in a memfd ---------------------------
async def test_a_screen_on_memfd_bars_answers_as_on_bytes_and_a_run_rewriting_them_changes_nothing(nc):
    from tests.node.test_screen import RISING, trend

    tag = uuid.uuid4().hex[:6].upper()
    up, down = f"SU{tag}", f"SD{tag}"
    from backtest.store import BarStore
    store = BarStore(nc.jetstream())
    await store.load(up, "1d", trend(120, 0.5))
    await store.load(down, "1d", trend(120, -0.5))
    rewrites = (
        "def classify_symbol(symbol):\n"
        "    df = get_price_data(symbol)\n"
        "    df.iloc[:, :] = 0.0\n"
        "    return True\n"
    )
    made = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shm, "MIN_BYTES", 1)
        patch.setattr(shm, "_memfd", lambda real=shm._memfd: made.append(1) or real())
        first = await request_json(nc, subjects.SCREEN, {"code": RISING, "symbols": [up, down]}, timeout=30)
        attacked = await request_json(nc, subjects.SCREEN, {"code": rewrites, "symbols": [up, down]}, timeout=30)
        again = await request_json(nc, subjects.SCREEN, {"code": RISING, "symbols": [up, down]}, timeout=30)
    assert made, "the screen's bars did not go through a memfd"
    assert first["success"] is True, first["error"]
    assert first["passed"] == [up]
    assert attacked["success"] is True, attacked["error"]
    assert again["passed"] == [up] and again["results"] == first["results"]
