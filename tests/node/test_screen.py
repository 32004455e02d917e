"""strategy.v1.screen: a classify_symbol strategy over symbols replayed from the bar store."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from backtest.store import BarStore
from contracts import BarArrays, limits, subjects
from tests.support import DAY_MS, START_MS, request_json

RISING = (
    "def classify_symbol(symbol):\n"
    "    df = get_price_data(symbol)\n"
    "    return bool(df['close'].iloc[-1] > df['close'].iloc[0])\n"
)


def trend(n: int, slope: float) -> BarArrays:
    close = 100 + slope * np.arange(n, dtype=np.float64)
    ts = (START_MS + np.arange(n, dtype=np.int64) * DAY_MS) * 1_000_000
    return BarArrays.from_numpy(ts, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(n))


@pytest.fixture(scope="module")
async def universe(nc):
    """Three stored symbols: two rising, one falling."""
    tag = uuid.uuid4().hex[:6].upper()
    names = {"up": f"UP{tag}", "down": f"DN{tag}", "flat_up": f"FU{tag}"}
    store = BarStore(nc.jetstream())
    await store.load(names["up"], "1d", trend(120, 0.5))
    await store.load(names["down"], "1d", trend(120, -0.5))
    await store.load(names["flat_up"], "1d", trend(60, 0.01))
    return names


async def screen(nc, **payload) -> dict:
    return await request_json(nc, subjects.SCREEN, payload, timeout=30)


async def test_screen_returns_the_symbols_that_pass_in_request_order(nc, universe):
    symbols = [universe["flat_up"], universe["down"], universe["up"]]
    reply = await screen(nc, code=RISING, symbols=symbols)
    assert reply["success"] is True, reply["error"]
    assert reply["passed"] == [universe["flat_up"], universe["up"]]
    assert [r["symbol"] for r in reply["results"]] == symbols
    assert [r["result"] for r in reply["results"]] == [True, False, True]


async def test_screen_serves_the_universe_to_get_multiple_symbols_data(nc, universe):
    code = (
        "def classify_symbol(symbol):\n"
        "    peers = get_multiple_symbols_data(params['peers'])\n"
        "    return {'peers': sorted(peers), 'bars': len(df), 'sum': sum(len(d) for d in peers.values())}\n"
    )
    peers = [universe["up"], universe["down"]]
    reply = await screen(nc, code=code, symbols=[universe["flat_up"]], universe=peers,
                         parameters={"peers": peers})
    assert reply["success"] is True, reply["error"]
    (row,) = reply["results"]
    assert row["error"] is None, row["error"]
    assert row["result"] == {"peers": sorted(peers), "bars": 60, "sum": 240}


async def test_screen_limits_each_symbol_to_the_range_and_max_bars(nc, universe):
    code = "def classify_symbol(symbol):\n    return len(get_price_data(symbol))\n"
    reply = await screen(nc, code=code, symbols=[universe["up"]], start="2024-01-11", max_bars=30)
    assert reply["results"][0]["result"] == 30 and reply["results"][0]["bars"] == 30
    reply = await screen(nc, code=code, symbols=[universe["up"]], start="2024-04-20")
    assert reply["results"][0]["result"] == 120 - 110


async def test_screen_row_of_an_unknown_symbol_carries_the_error(nc, universe):
    missing = "NONE" + uuid.uuid4().hex[:6].upper()
    reply = await screen(nc, code=RISING, symbols=[universe["up"], missing])
    assert reply["success"] is True
    assert reply["passed"] == [universe["up"]]
    row = reply["results"][1]
    assert row["passed"] is False and row["error"]["code"] == "INVALID_REQUEST"
    assert "no bars stored" in row["error"]["message"]


async def test_screen_row_of_a_failing_strategy_carries_its_runtime_error(nc, universe):
    code = "def classify_symbol(symbol):\n    raise KeyError('nope')\n"
    reply = await screen(nc, code=code, symbols=[universe["up"]])
    assert reply["passed"] == []
    assert reply["results"][0]["error"]["code"] == "RUNTIME_ERROR"


async def test_screen_refuses_code_without_classify_symbol(nc, universe):
    reply = await screen(nc, code="def strategy(data):\n    return 'BUY'\n", symbols=[universe["up"]])
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "classify_symbol" in reply["error"]["message"]


async def test_screen_of_more_than_max_symbols_is_refused_at_decode(nc):
    symbols = [f"S{i}" for i in range(limits.MAX_SYMBOLS + 1)]
    reply = await screen(nc, code=RISING, symbols=symbols)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "$.symbols" in reply["error"]["message"]


async def test_screen_with_start_after_end_is_an_invalid_request(nc, universe):
    reply = await screen(nc, code=RISING, symbols=[universe["up"]], start="2024-03-01", end="2024-02-01")
    assert reply["error"]["code"] == "INVALID_REQUEST"


async def test_client_screen(client, universe):
    result = await client.screen(RISING, [universe["up"], universe["down"]])
    assert result.success and result.passed == [universe["up"]]


BIG = "def classify_symbol(symbol):\n    return 'x' * 60_000\n"


async def test_a_screen_whose_results_outgrow_the_reply_stops_and_says_it_was_truncated(nc):
    """40 symbols each returning 60 KB cannot fit one reply (max_payload 1 MB): the node stops
    starting symbols once a row no longer fits and answers with the rows it kept."""
    tag = uuid.uuid4().hex[:6].upper()
    store = BarStore(nc.jetstream())
    symbols = [f"TR{tag}{i:02d}" for i in range(40)]
    for symbol in symbols:
        await store.load(symbol, "1d", trend(20, 0.1))
    reply = await screen(nc, code=BIG, symbols=symbols)
    assert reply["success"] is False
    assert reply["truncated"] is True
    assert reply["error"]["code"] == "OUTPUT_LIMIT"
    kept = [r["symbol"] for r in reply["results"]]
    assert 5 <= len(kept) < 40, len(kept)
    assert all(r["result"] == "x" * 60_000 for r in reply["results"])  # kept rows are whole
    assert kept == [s for s in symbols if s in kept]  # request order
    assert reply["passed"] == kept
    assert f"after {len(kept):,} of 40 symbols" in reply["error"]["message"]


async def test_a_screen_that_fits_is_not_truncated(nc, universe):
    reply = await screen(nc, code=RISING, symbols=[universe["up"]])
    assert reply["success"] is True and reply["truncated"] is False
