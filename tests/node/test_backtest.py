"""strategy.v1.backtest through a real nats-server and node, as any client would call it."""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone

import msgspec
import numpy as np
import pytest

from backtest.store import STREAM, BarStore, subject_for
from contracts import Bars, from_columns, subjects
from tests.support import DAY_MS, START_MS, columnar_bars, request_json, row_bars

SMA = (
    "import numpy as np\n"
    "def strategy(data, params):\n"
    "    fast = data['close'].rolling(params.get('fast', 5)).mean()\n"
    "    slow = data['close'].rolling(params.get('slow', 20)).mean()\n"
    "    return np.sign(fast - slow)\n"
)


def fresh_symbol() -> str:
    return "BT" + uuid.uuid4().hex[:8].upper()


async def load(nc, symbol: str, cols: dict, timeframe: str = "1d") -> BarStore:
    store = BarStore(nc.jetstream())
    await store.load(symbol, timeframe, from_columns(msgspec.convert(cols, Bars)))
    return store


async def backtest(nc, **payload) -> dict:
    return await request_json(nc, subjects.BACKTEST, payload, timeout=30)


async def backtest_msgpack(nc, payload: dict) -> dict:
    msg = await nc.request(subjects.BACKTEST, msgspec.msgpack.encode(payload), timeout=30,
                           headers={subjects.CONTENT_TYPE: subjects.MSGPACK})
    return msgspec.msgpack.decode(msg.data)


async def test_inline_backtest_replies_with_metrics_signal_count_and_bars(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(300), parameters={"fast": 5, "slow": 20})
    assert reply["success"] is True, reply["error"]
    assert reply["bars"] == 300
    assert reply["signals_count"] > 0
    perf = reply["performance"]
    assert perf["bars"] == 300 and perf["total_trades"] > 0
    assert perf["sharpe_ratio"] is not None and perf["max_drawdown"] <= 0
    assert perf["trades"] and perf["equity_curve"]
    assert reply["sweep"] is None and reply["node_id"] == "test-node"


async def test_row_format_bars_give_the_same_result_as_columnar(nc):
    rows = row_bars(120)
    cols = {k: [r[k] for r in rows] for k in ("timestamp", "open", "high", "low", "close", "volume")}
    by_rows = await backtest(nc, code=SMA, market_data=rows)
    by_cols = await backtest(nc, code=SMA, bars=cols)
    assert by_rows["success"] and by_cols["success"]
    assert by_rows["performance"] == by_cols["performance"]


async def test_backtest_by_reference_replays_the_bars_from_the_store(nc):
    symbol, cols = fresh_symbol(), columnar_bars(400, seed=11)
    await load(nc, symbol, cols)
    stored = await backtest(nc, code=SMA, source={"symbol": symbol, "timeframe": "1d"})
    inline = await backtest(nc, code=SMA, bars=cols)
    assert stored["success"] is True, stored["error"]
    assert stored["bars"] == 400
    assert stored["performance"] == inline["performance"]


async def test_backtest_by_reference_uses_only_the_bars_between_start_and_end(nc):
    symbol, cols = fresh_symbol(), columnar_bars(300, seed=12)
    await load(nc, symbol, cols)
    reply = await backtest(nc, code=SMA, source={
        "symbol": symbol, "timeframe": "1d", "start": cols["timestamp"][100], "end": "2024-07-18"})
    assert reply["success"] is True, reply["error"]
    first_day = 100
    last_day = (datetime(2024, 7, 18, tzinfo=timezone.utc).timestamp() * 1000 - START_MS) // DAY_MS
    assert reply["bars"] == last_day - first_day + 1
    assert reply["performance"]["start"].startswith("2024-04-10")
    assert reply["performance"]["end"].startswith("2024-07-18")


async def test_walked_string_strategy_cannot_see_bars_after_its_own(nc):
    cols = columnar_bars(80, seed=5)
    peak_at = int(np.argmax(cols["close"]))
    code = (
        "def strategy(data, params):\n"
        "    return 'BUY' if data['close'].max() >= params['peak'] else 'HOLD'\n"
    )
    reply = await backtest(nc, code=code, bars=cols, parameters={"peak": max(cols["close"])})
    assert reply["success"] is True, reply["error"]
    # with look-ahead every bar would see the peak; walked, only bars from the peak on do
    assert reply["signals_count"] == 80 - peak_at


async def test_walked_strategy_that_counts_total_bars_signals_only_on_the_last_bar(nc):
    code = "def strategy(data, params):\n    return 'BUY' if len(data) == params['total'] else 'HOLD'\n"
    reply = await backtest(nc, code=code, bars=columnar_bars(50), parameters={"total": 50})
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == 1
    assert reply["performance"]["buy_count"] == 1


async def test_walked_strategy_cannot_carry_the_full_series_over_in_module_state(nc):
    code = (
        "seen = []\n"
        "def strategy(data):\n"
        "    seen.append(len(data))\n"
        "    return 'BUY' if max(seen) > len(data) else 'HOLD'\n"
    )
    reply = await backtest(nc, code=code, bars=columnar_bars(40))
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == 0


async def test_vectorized_strategy_is_called_once(nc):
    code = "import numpy as np\ndef strategy(data):\n    log('call', len(data))\n    return np.ones(len(data))\n"
    reply = await backtest(nc, code=code, bars=columnar_bars(60))
    assert reply["success"] is True, reply["error"]
    assert reply["logs"] == ["call 60"]
    assert reply["signals_count"] == 60


async def test_script_style_signals_at_bar_positions(nc):
    code = "signal('buy', 'in', at=10)\nsignal('sell', 'out', at=30)\n"
    reply = await backtest(nc, code=code, bars=columnar_bars(50))
    assert reply["success"] is True, reply["error"]
    perf = reply["performance"]
    assert reply["signals_count"] == 2 and perf["total_trades"] == 1
    assert perf["trades"][0]["entry_reason"] == "in" and perf["trades"][0]["exit_reason"] == "out"


async def test_backtest_without_signals_still_reports_performance(nc):
    reply = await backtest(nc, code="def strategy(data):\n    return 'HOLD'\n", bars=columnar_bars(30))
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == 0
    assert reply["performance"]["total_trades"] == 0 and reply["performance"]["total_return"] == 0


async def test_compat_mode_warmup_starts_buy_and_hold_where_the_signal_is_defined(nc):
    cols = columnar_bars(200, seed=3)
    close = cols["close"]
    native = await backtest(nc, code=SMA, bars=cols, parameters={"fast": 5, "slow": 30})
    compat = await backtest(nc, code=SMA, bars=cols, parameters={"fast": 5, "slow": 30},
                            options={"mode": "backtesting_py"})
    assert native["success"] and compat["success"], compat["error"]
    # the signal is NaN until the 30-bar mean exists: bar 29 is the first defined one
    assert native["performance"]["buy_and_hold_return"] == pytest.approx((close[-1] / close[0] - 1) * 100)
    assert compat["performance"]["buy_and_hold_return"] == pytest.approx((close[-1] / close[29] - 1) * 100)


async def test_unknown_symbol_is_an_invalid_request(nc):
    reply = await backtest(nc, code=SMA, source={"symbol": "NOSUCH" + uuid.uuid4().hex[:6], "timeframe": "1d"})
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "no bars stored" in reply["error"]["message"]


async def test_range_with_start_after_end_is_an_invalid_request(nc):
    symbol = fresh_symbol()
    await load(nc, symbol, columnar_bars(20))
    reply = await backtest(nc, code=SMA, source={"symbol": symbol, "timeframe": "1d",
                                                 "start": "2024-01-10", "end": "2024-01-05"})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "empty range" in reply["error"]["message"]


async def test_range_outside_the_stored_bars_is_an_invalid_request(nc):
    symbol = fresh_symbol()
    await load(nc, symbol, columnar_bars(20))
    reply = await backtest(nc, code=SMA, source={"symbol": symbol, "timeframe": "1d",
                                                 "start": "2030-01-01", "end": "2030-02-01"})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "no bars for" in reply["error"]["message"]


async def test_nan_in_inline_bars_is_refused_naming_the_first_bad_bar(nc):
    cols = columnar_bars(30)
    cols["close"][17] = math.nan
    cols["high"][21] = math.inf
    reply = await backtest_msgpack(nc, {"code": SMA, "bars": cols})
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "bars.close[17]" in reply["error"]["message"]


async def test_nan_literal_in_json_bars_is_refused_naming_the_bar(nc):
    rows = row_bars(20)
    rows[4]["low"] = math.nan
    raw = json.dumps({"code": SMA, "market_data": rows}).encode()  # Python writes NaN
    reply = await request_json(nc, subjects.BACKTEST, None, raw=raw)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "market_data[4].low" in reply["error"]["message"]


async def test_timestamps_going_back_in_time_are_refused(nc):
    cols = columnar_bars(20)
    cols["timestamp"][8], cols["timestamp"][9] = cols["timestamp"][9], cols["timestamp"][8]
    reply = await backtest(nc, code=SMA, bars=cols)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "timestamp[9] goes back in time" in reply["error"]["message"]


async def test_duplicate_bars_are_refused(nc):
    cols = columnar_bars(20)
    cols["timestamp"][12] = cols["timestamp"][11]
    reply = await backtest(nc, code=SMA, bars=cols)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "timestamp[12] repeats" in reply["error"]["message"]


async def test_bad_backtest_requests_leave_the_store_intact(nc):
    symbol, cols = fresh_symbol(), columnar_bars(50)
    store = await load(nc, symbol, cols)
    before = await store.info(symbol, "1d")
    stream_before = (await store.js.stream_info(STREAM, subjects_filter=subject_for(symbol, "1d"))).state.subjects
    bad = columnar_bars(10)
    bad["timestamp"][3] = bad["timestamp"][2]
    for payload in (
        {"code": SMA, "bars": bad, "symbol": symbol, "timeframe": "1d"},
        {"code": SMA, "source": {"symbol": symbol, "timeframe": "1d", "start": "2031-01-01"}},
        {"code": "def strategy(data):\n    raise ValueError('boom')\n", "source": {"symbol": symbol, "timeframe": "1d"}},
    ):
        assert (await backtest(nc, **payload))["success"] is False
    assert await store.info(symbol, "1d") == before
    after = (await store.js.stream_info(STREAM, subjects_filter=subject_for(symbol, "1d"))).state.subjects
    assert after == stream_before
    assert (await store.replay(symbol, "1d")) == from_columns(msgspec.convert(cols, Bars))


async def test_strategy_error_is_a_runtime_error_with_its_line(nc):
    code = "def strategy(data):\n    x = 1\n    raise ValueError('boom')\n"
    reply = await backtest(nc, code=code, bars=columnar_bars(20))
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert reply["error"]["line"] == 3


async def test_classify_strategy_is_refused_on_backtest(nc):
    reply = await backtest(nc, code="def classify_symbol(symbol):\n    return True\n", bars=columnar_bars(20))
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "strategy.v1.screen" in reply["error"]["message"]


async def test_backtest_without_bars_is_an_invalid_request(nc):
    reply = await backtest(nc, code=SMA)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "no bars" in reply["error"]["message"]


async def test_client_backtest_by_reference(client, nc):
    from contracts import BarsRef

    symbol = fresh_symbol()
    await load(nc, symbol, columnar_bars(100))
    result = await client.backtest(SMA, source=BarsRef(symbol=symbol, timeframe="1d"))
    assert result.success, result.error
    assert result.bars == 100 and result.performance is not None


async def test_reply_too_large_for_max_payload_is_an_output_limit(nc):
    symbol = fresh_symbol()
    n = 30_000
    cols = columnar_bars(n, seed=2, step_ms=60_000)
    await load(nc, symbol, cols, timeframe="1m")
    code = "import numpy as np\ndef strategy(data):\n    return np.where(np.arange(len(data)) % 2 == 0, 1, -1)\n"
    reply = await backtest(nc, code=code, source={"symbol": symbol, "timeframe": "1m"},
                           options={"max_trades": 100_000})
    assert reply["success"] is False
    assert reply["error"]["code"] == "OUTPUT_LIMIT"
    assert "max_trades" in reply["error"]["message"] and reply["bars"] == n


def test_sweep_table_too_large_for_max_payload_keeps_its_best_rows(node):
    from contracts import BacktestResult, Performance, SweepRow

    rows = [SweepRow(parameters={"k": i, "pad": "x" * 500}, performance=Performance(sharpe_ratio=-i))
            for i in range(5_000)]
    fitted = node.backtesting.fit(BacktestResult(success=True, sweep=rows, bars=10), subjects.JSON)
    assert fitted.success is False and fitted.error.code == "OUTPUT_LIMIT"
    assert 0 < len(fitted.sweep) < 5_000 and fitted.sweep == rows[:len(fitted.sweep)]
    assert len(msgspec.json.encode(fitted)) <= node.nc.max_payload
    assert "the best" in fitted.error.message


async def test_per_bar_output_through_nats_has_every_bar_and_trade_bar_indices(nc):
    n = 5_000
    reply = await backtest(nc, code=SMA, bars=columnar_bars(n, seed=21),
                           options={"per_bar": True, "allow_short": True, "max_trades": 100_000})
    assert reply["success"] is True, reply["error"]
    perf = reply["performance"]
    per_bar = perf["per_bar"]
    assert len(per_bar["position"]) == len(per_bar["equity"]) == len(per_bar["timestamp"]) == n
    assert len(perf["equity_curve"]) == n
    assert per_bar["equity"][-1] == perf["final_equity"] and max(per_bar["equity"]) == perf["peak_equity"]
    for t in perf["trades"]:
        assert t["exit_bar"] - t["entry_bar"] == t["bars_held"]
        assert per_bar["position"][t["entry_bar"]] != 0


async def test_compat_mode_reports_the_warmup_bar(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(300, seed=22), parameters={"fast": 5, "slow": 20},
                           options={"mode": "backtesting_py"})
    assert reply["success"] is True, reply["error"]
    assert reply["performance"]["warmup_bar"] == 19
