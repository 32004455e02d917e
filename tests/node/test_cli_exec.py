"""`strategy-node exec`: every strategy style, metrics only when they mean something, helpful errors."""

from __future__ import annotations

import os
import uuid

import pytest

from node.cli import build_parser

pytestmark = pytest.mark.usefixtures("node")  # the session's node serves every command here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")
BARS = os.path.join(EXAMPLES, "bars.csv")
SMA = os.path.join(EXAMPLES, "sma_crossover.py")
CLASSIFY = os.path.join(EXAMPLES, "classify_trend.py")


async def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return await args.func(args)


def write(tmp_path, code: str, name: str = "s.py") -> str:
    path = tmp_path / name
    path.write_text(code)
    return str(path)


async def test_exec_prints_backtest_metrics_when_the_signals_trade(nats_url, capsys):
    assert await cli("exec", SMA, "--bars", BARS, "--url", nats_url) == 0
    out = capsys.readouterr().out
    assert "performance:" in out and "sharpe           1.1007" in out and "trades           7" in out


async def test_exec_says_no_signals_and_shows_no_metrics_when_there_are_none(nats_url, tmp_path, capsys):
    code = "import numpy as np\ndef strategy(data):\n    return np.zeros(len(data))\n"
    assert await cli("exec", write(tmp_path, code), "--bars", BARS, "--url", nats_url) == 0
    out = capsys.readouterr().out
    assert "no signals" in out.splitlines() and "performance" not in out


async def test_exec_shows_no_metrics_for_one_signal_on_the_last_bar(nats_url, tmp_path, capsys):
    code = "def strategy(data):\n    return 'BUY'\n"
    assert await cli("exec", write(tmp_path, code), "--bars", BARS, "--url", nats_url) == 0
    out = capsys.readouterr().out
    assert "sharpe" not in out
    assert "performance: not shown (no completed trade from one signal on the last bar; return a Series" in out


async def test_exec_of_a_classify_file_without_a_symbol_says_what_it_needs(nats_url):
    with pytest.raises(SystemExit) as exc:
        await cli("exec", CLASSIFY, "--bars", BARS, "--url", nats_url)
    message = str(exc.value)
    assert "defines classify_symbol(symbol)" in message
    assert f"strategy-node screen {CLASSIFY} --symbols SYMBOL" in message and "--symbol SYMBOL" in message


async def test_exec_of_a_classify_file_with_bars_and_a_symbol_says_whether_it_passes(nats_url, capsys):
    assert await cli("exec", CLASSIFY, "--bars", BARS, "--symbol", "DEMO", "--url", nats_url) == 0
    out = capsys.readouterr().out
    assert "classify_symbol('DEMO') returned true: DEMO passes" in out
    assert "no signals" not in out


async def test_exec_of_a_classify_file_with_a_stored_symbol_screens_it(nats_url, capsys):
    symbol = "EX" + uuid.uuid4().hex[:6].upper()
    assert await cli("bars", "load", BARS, "--symbol", symbol, "--timeframe", "1d", "--quiet", "--url", nats_url) == 0
    capsys.readouterr()
    assert await cli("exec", CLASSIFY, "--symbol", symbol, "--url", nats_url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["SYMBOL", "PASSED", "BARS", "RESULT"]
    assert lines[2].split() == [symbol, "yes", "500", "true"]


async def test_exec_without_bars_for_a_strategy_function_says_to_give_them(nats_url):
    with pytest.raises(SystemExit, match="exec needs --bars FILE.csv"):
        await cli("exec", SMA, "--url", nats_url)


async def test_an_empty_strategy_file_is_refused_readably(nats_url, tmp_path):
    path = write(tmp_path, "\n  \n")
    with pytest.raises(SystemExit, match=f"{path} is empty: a strategy defines strategy\\(data\\)"):
        await cli("exec", path, "--bars", BARS, "--url", nats_url)


async def test_a_text_parameter_that_breaks_the_strategy_gets_a_hint(nats_url, capsys):
    assert await cli("exec", SMA, "--bars", BARS, "--param", "fast=abc", "--url", nats_url) == 1
    out = capsys.readouterr().out
    assert "note: fast='abc' reached the strategy as text; --param values are read as JSON" in out


async def test_a_strategy_error_names_its_line_once(nats_url, tmp_path, capsys):
    code = "def strategy(data):\n    x = 1\n    return data['nope']\n"
    assert await cli("exec", write(tmp_path, code), "--bars", BARS, "--url", nats_url) == 1
    out = capsys.readouterr().out
    assert out.count("line 3") == 1, out


async def test_validate_names_the_line_once(nats_url, tmp_path, capsys):
    code = "import os\n"
    assert await cli("validate", write(tmp_path, code), "--url", nats_url) == 1
    out = capsys.readouterr().out
    assert out.count("line 1") == 1, out


async def test_empty_code_on_the_wire_gets_a_readable_message(nc):
    from contracts import subjects
    from tests.support import columnar_bars, request_json

    reply = await request_json(nc, subjects.EXECUTE, {"code": "", "bars": columnar_bars(3)})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert reply["error"]["message"].startswith("invalid request: `$.code` is empty: send the strategy's source")
