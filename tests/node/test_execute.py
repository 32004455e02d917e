"""strategy.v1.execute through a real nats-server, as any client would call it."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from contracts import subjects
from tests.support import columnar_bars, request_json, row_bars


async def execute(nc, **payload) -> dict:
    payload.setdefault("bars", columnar_bars(60))
    return await request_json(nc, subjects.EXECUTE, payload)


async def test_row_format_request_from_plain_nats_returns_buy(nc):
    reply = await request_json(nc, subjects.EXECUTE, {
        "code": "def strategy(data): return 'BUY'",
        "language": "python",
        "market_data": row_bars(30),
        "user_id": "user-1",
        "strategy_id": "strat-1",
    })
    assert reply["success"] is True, reply
    assert reply["error"] is None
    assert [s["type"] for s in reply["signals"]] == ["BUY"]
    assert reply["signals"][0]["timestamp"] == row_bars(30)[-1]["timestamp"]
    assert reply["node_id"] == "test-node"


async def test_function_style_string_signals_the_last_bar_at_its_close(nc):
    bars = columnar_bars(40)
    reply = await execute(nc, code="def strategy(data):\n    return 'sell'\n", bars=bars)
    assert reply["success"] is True
    (signal,) = reply["signals"]
    assert signal["type"] == "SELL"
    assert signal["price"] == bars["close"][-1]
    assert reply["result"] == "sell"


async def test_function_style_series_gives_a_signal_per_bar_and_metrics(nc):
    code = (
        "import numpy as np\n"
        "def strategy(data):\n"
        "    fast = data['close'].rolling(5).mean()\n"
        "    slow = data['close'].rolling(20).mean()\n"
        "    cross_up = (fast > slow) & (fast.shift(1) <= slow.shift(1))\n"
        "    cross_dn = (fast < slow) & (fast.shift(1) >= slow.shift(1))\n"
        "    return np.where(cross_up, 'BUY', np.where(cross_dn, 'SELL', 'HOLD'))\n"
    )
    reply = await execute(nc, code=code, bars=columnar_bars(300))
    assert reply["success"] is True, reply["error"]
    types = {s["type"] for s in reply["signals"]}
    assert types == {"BUY", "SELL"}
    perf = reply["performance"]
    assert perf["buy_count"] == sum(s["type"] == "BUY" for s in reply["signals"])
    assert perf["total_trades"] >= 1


async def test_execute_metrics_carry_trades_but_no_equity_curve(nc):
    code = ("import numpy as np\ndef strategy(data):\n    i = np.arange(len(data))\n"
            "    return np.where(i == 10, 'BUY', np.where(i == 50, 'SELL', 'HOLD'))\n")
    reply = await execute(nc, code=code, bars=columnar_bars(300))
    perf = reply["performance"]
    assert perf["total_trades"] == 1 and len(perf["trades"]) == 1 and perf["sharpe_ratio"] is not None
    assert perf["equity_curve"] == []  # a backtest request is where the curve comes from


async def test_a_strategy_may_change_its_data_without_changing_signal_prices_or_metrics(nc):
    plain = "def strategy(data):\n    return 'BUY'\n"
    vandal = ("def strategy(data):\n    data['close'] = data['close'] * 0 + 1\n"
              "    data['open'] = data['open'] * 0 + 1\n    return 'BUY'\n")
    a = await execute(nc, code=plain, bars=columnar_bars(100))
    b = await execute(nc, code=vandal, bars=columnar_bars(100))
    assert a["signals"] == b["signals"] and a["performance"] == b["performance"]


async def test_script_style_signal_indicator_log_and_print_are_captured(nc):
    code = (
        "sma = df['close'].rolling(10).mean()\n"
        "indicator('sma_10', sma)\n"
        "if df['close'].iloc[-1] > sma.iloc[-1]:\n"
        "    signal('buy', 'close above sma')\n"
        "else:\n"
        "    signal('sell', 'close below sma')\n"
        "log('bars', len(df))\n"
        "print('done', params['k'])\n"
    )
    reply = await execute(nc, code=code, parameters={"k": 3})
    assert reply["success"] is True, reply["error"]
    assert len(reply["indicators"]["sma_10"]) == 60
    assert reply["indicators"]["sma_10"][0] is None  # NaN travels as null
    assert reply["signals"][0]["reason"] in ("close above sma", "close below sma")
    assert reply["logs"] == ["bars 60", "done 3"]


async def test_classify_style_returns_the_verdict_as_result(nc):
    code = (
        "def classify_symbol(symbol):\n"
        "    data = get_price_data(symbol)\n"
        "    return bool(data['close'].iloc[-1] > data['close'].mean())\n"
    )
    bars = columnar_bars(60)
    reply = await execute(nc, code=code, bars=bars, symbol="AAPL", timeframe="1d")
    assert reply["success"] is True, reply["error"]
    closes = bars["close"]
    assert reply["result"] is (closes[-1] > sum(closes) / len(closes))


async def test_parameters_are_visible_as_params(nc):
    reply = await execute(nc, code="def strategy(data):\n    return params['side']\n",
                          parameters={"side": "HOLD"})
    assert reply["success"] is True
    assert reply["signals"][0]["type"] == "HOLD"


async def test_a_single_bar_is_enough(nc):
    reply = await execute(nc, code="def strategy(data):\n    return 'BUY' if len(data) == 1 else 'SELL'\n",
                          bars=columnar_bars(1))
    assert reply["success"] is True
    assert reply["signals"][0]["type"] == "BUY"


async def test_syntax_error_is_a_compile_error_with_its_line(nc):
    reply = await execute(nc, code="def strategy(data):\n    x = (1 +\n    return 'BUY'\n")
    assert reply["success"] is False
    assert reply["error"]["code"] == "COMPILE_ERROR"
    assert reply["error"]["line"] in (2, 3)
    assert "/" not in reply["error"]["message"]


async def test_code_without_an_entry_point_is_a_compile_error(nc):
    reply = await execute(nc, code="def strat(data):\n    return 'BUY'\n")
    assert reply["success"] is False
    assert reply["error"]["code"] == "COMPILE_ERROR"
    assert "strategy" in reply["error"]["message"]


@pytest.mark.parametrize("body,line,kind", [
    ("    x = {}\n    return x['missing']\n", 3, "KeyError"),
    ("    y = 0\n    return 1 / y\n", 3, "ZeroDivisionError"),
])
async def test_runtime_errors_report_type_and_strategy_line(nc, body, line, kind):
    reply = await execute(nc, code="def strategy(data):\n" + body)
    assert reply["success"] is False
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert reply["error"]["message"].startswith(kind)
    assert reply["error"]["line"] == line
    assert "site-packages" not in reply["error"]["message"]


async def test_an_invalid_signal_value_is_a_runtime_error(nc):
    reply = await execute(nc, code="def strategy(data):\n    return 'MAYBE'\n")
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert "MAYBE" in reply["error"]["message"]


async def test_a_misaligned_signal_series_is_a_runtime_error(nc):
    reply = await execute(nc, code="def strategy(data):\n    return ['BUY', 'SELL']\n")
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert "2 signals for 60 bars" in reply["error"]["message"]


async def test_empty_bars_are_an_invalid_request(nc):
    empty = {k: [] for k in ("timestamp", "open", "high", "low", "close", "volume")}
    reply = await execute(nc, code="def strategy(data): return 'BUY'", bars=empty)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "no bars" in reply["error"]["message"]


async def test_a_missing_column_is_an_invalid_request_naming_it(nc):
    bars = columnar_bars(5)
    del bars["close"]
    reply = await execute(nc, code="def strategy(data): return 'BUY'", bars=bars)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "close" in reply["error"]["message"]


async def test_unequal_columns_are_an_invalid_request(nc):
    bars = columnar_bars(5)
    bars["high"] = bars["high"][:3]
    reply = await execute(nc, code="def strategy(data): return 'BUY'", bars=bars)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "bars.high has 3 values" in reply["error"]["message"]


async def test_out_of_order_timestamps_are_an_invalid_request(nc):
    bars = columnar_bars(5)
    bars["timestamp"][3] = bars["timestamp"][1]
    reply = await execute(nc, code="def strategy(data): return 'BUY'", bars=bars)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "timestamp[3]" in reply["error"]["message"]


async def test_an_unparseable_timestamp_is_an_invalid_request(nc):
    rows = row_bars(3)
    rows[1]["timestamp"] = "yesterday"
    reply = await request_json(nc, subjects.EXECUTE, {"code": "def strategy(data): return 'BUY'", "market_data": rows})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "market_data.timestamp[1]" in reply["error"]["message"]


async def test_non_json_payload_is_an_invalid_request(nc):
    reply = await request_json(nc, subjects.EXECUTE, None, raw=b"\x00not json{")
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "not valid JSON" in reply["error"]["message"]


async def test_empty_payload_is_an_invalid_request(nc):
    reply = await request_json(nc, subjects.EXECUTE, None, raw=b"")
    assert reply["error"]["code"] == "INVALID_REQUEST"


@pytest.mark.parametrize("payload,field", [
    ({"code": 42}, "$.code"),
    ({"code": "x", "bars": {"timestamp": [1], "open": ["a"], "high": [1], "low": [1], "close": [1]}}, "$.bars.open[0]"),
    ({"code": "x", "timeout_ms": -5}, "$.timeout_ms"),
    ({"code": "x", "parameters": []}, "$.parameters"),
    ([1, 2, 3], "Expected `object`, got `array`"),
])
async def test_wrong_types_are_invalid_requests_naming_the_field(nc, payload, field):
    reply = await request_json(nc, subjects.EXECUTE, payload)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert field in reply["error"]["message"]


async def test_oversize_code_is_an_invalid_request(nc):
    reply = await execute(nc, code="x = 1\n" * 20_000)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "$.code" in reply["error"]["message"]


async def test_unsupported_language_is_refused(nc):
    reply = await execute(nc, code="console.log('hi')", language="javascript")
    assert reply["error"]["code"] == "UNSUPPORTED_LANGUAGE"


async def test_timeout_above_the_node_limit_is_an_invalid_request(nc):
    reply = await execute(nc, code="def strategy(data): return 'BUY'", timeout_ms=60_000)
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "10000" in reply["error"]["message"]


async def test_infinite_loop_times_out_on_time_and_the_node_keeps_serving(nc):
    started = time.monotonic()
    reply = await execute(nc, code="def strategy(data):\n    while True:\n        pass\n", timeout_ms=500)
    elapsed = time.monotonic() - started
    assert reply["error"]["code"] == "TIMEOUT"
    assert elapsed < 0.5 + 0.5
    after = await execute(nc, code="def strategy(data): return 'BUY'")
    assert after["success"] is True


async def test_a_hundred_concurrent_requests_are_all_answered(nc):
    async def one(i: int) -> dict:
        return await execute(nc, code=f"def strategy(data):\n    return 'BUY' if {i} % 2 else 'SELL'\n",
                             bars=columnar_bars(20))
    replies = await asyncio.gather(*(one(i) for i in range(100)))
    assert all(r["success"] for r in replies)
    assert [r["signals"][0]["type"] for r in replies] == ["BUY" if i % 2 else "SELL" for i in range(100)]


async def test_msgpack_requests_get_msgpack_replies(nc):
    import msgspec

    payload = {"code": "def strategy(data): return 'BUY'", "bars": columnar_bars(10)}
    msg = await nc.request(subjects.EXECUTE, msgspec.msgpack.encode(payload), timeout=10,
                           headers={"Content-Type": "application/msgpack"})
    assert msg.headers["Content-Type"] == "application/msgpack"
    reply = msgspec.msgpack.decode(msg.data)
    assert reply["success"] is True


async def test_error_replies_carry_micro_error_headers(nc):
    msg = await nc.request(subjects.EXECUTE, b"{}", timeout=10)
    assert msg.headers["Nats-Service-Error-Code"] == "400"
    assert json.loads(msg.data)["error"]["code"] == "INVALID_REQUEST"


async def test_request_id_is_echoed(nc):
    reply = await execute(nc, code="def strategy(data): return 'BUY'", request_id="req-42")
    assert reply["request_id"] == "req-42"
