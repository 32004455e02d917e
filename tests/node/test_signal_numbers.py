"""Numeric signals mean one thing on every path: +1 (any positive) BUY, -1 (any negative) SELL,
0/NaN HOLD; booleans are refused with a message saying what a signal is. And a walked strategy
that runs out of time is told why."""

from __future__ import annotations

import pytest

from contracts import subjects
from tests.support import columnar_bars, request_json

N = 6
SERIES = [1, 0, -1, 2.5, -0.1, float("nan")]
EXPECTED = ["BUY", "SELL", "BUY", "SELL"]  # HOLD bars are not listed as signals

CODES = {
    "execute-list": "def strategy(data):\n    return [1, 0, -1, 2.5, -0.1, None]\n",
    "execute-numpy": ("import numpy as np\ndef strategy(data):\n"
                      "    return np.array([1, 0, -1, 2.5, -0.1, np.nan])\n"),
    "execute-series": ("def strategy(data):\n"
                       "    return pd.Series([1, 0, -1, 2.5, -0.1, float('nan')], index=data.index)\n"),
    "script-signal": ("for i, v in enumerate([1, 0, -1, 2.5, -0.1, 0]):\n"
                      "    signal(v, at=i)\n"),
}


@pytest.mark.parametrize("name", sorted(CODES))
async def test_numbers_are_signals_by_their_sign_on_execute(nc, node, name):
    reply = await request_json(nc, subjects.EXECUTE, {"code": CODES[name], "bars": columnar_bars(N)})
    assert reply["success"], reply["error"]
    signals = [s["type"] for s in reply["signals"] if s["type"] != "HOLD"]
    assert signals == EXPECTED


WALKED = ("def strategy(data):\n"
          "    i = len(data) - 1\n"
          "    return [1, 0, -1, 2.5, -0.1, 0][i]\n")
VECTOR = "def strategy(data):\n    return [1, 0, -1, 2.5, -0.1, 0]\n"


async def test_a_walked_strategy_reads_numbers_like_a_vectorized_one(nc, node):
    walked = await request_json(nc, subjects.BACKTEST, {"code": WALKED, "bars": columnar_bars(N)})
    vector = await request_json(nc, subjects.BACKTEST, {"code": VECTOR, "bars": columnar_bars(N)})
    assert walked["success"] and vector["success"], (walked["error"], vector["error"])
    assert walked["signals_count"] == vector["signals_count"] == 4
    assert walked["performance"]["total_trades"] == vector["performance"]["total_trades"] == 2
    assert walked["performance"]["total_return"] == vector["performance"]["total_return"]


@pytest.mark.parametrize("code", [
    "def strategy(data):\n    return [True] * len(data)\n",
    "def strategy(data):\n    return data['close'] > data['open']\n",
    "signal(True)\n",
], ids=["list", "series", "signal"])
async def test_booleans_are_refused_saying_what_a_signal_is(nc, node, code):
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": columnar_bars(N)})
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert "a signal is BUY, SELL or HOLD" in reply["error"]["message"]


async def test_a_walked_strategy_that_times_out_is_told_to_return_a_series(nc, node):
    slow = ("def strategy(data):\n    total = 0\n    for x in range(20000):\n        total += x\n"
            "    return 'BUY' if total > 0 else 'SELL'\n")
    reply = await request_json(nc, subjects.BACKTEST,
                               {"code": slow, "bars": columnar_bars(3000), "timeout_ms": 800}, timeout=30)
    assert reply["error"]["code"] == "TIMEOUT", reply["error"]
    message = reply["error"]["message"]
    assert "calls it once per bar (3,000 calls" in message
    assert "return a Series or array with a signal for every bar instead" in message
