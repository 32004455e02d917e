"""`strategy-node screen FILE --symbols ... --timeframe ...`: a readable table of a classify_symbol run."""

from __future__ import annotations

import json
import os
import uuid

import pytest

from node.cli import build_parser

pytestmark = pytest.mark.usefixtures("node")  # the session's node serves every command here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BARS = os.path.join(ROOT, "examples", "bars.csv")
CLASSIFY = os.path.join(ROOT, "examples", "classify_trend.py")


async def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return await args.func(args)


@pytest.fixture
async def stored(nats_url, capsys) -> str:
    symbol = "SC" + uuid.uuid4().hex[:6].upper()
    assert await cli("bars", "load", BARS, "--symbol", symbol, "--timeframe", "1d", "--quiet", "--url", nats_url) == 0
    capsys.readouterr()
    return symbol


async def test_screen_prints_a_row_per_symbol_with_pass_bars_and_result(nats_url, stored, capsys):
    missing = "NONE" + uuid.uuid4().hex[:4].upper()
    assert await cli("screen", CLASSIFY, "--symbols", stored, missing, "--timeframe", "1d", "--url", nats_url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("screened 2 symbols (1d) in ") and lines[0].endswith(": 1 passed")
    assert lines[1].split() == ["SYMBOL", "PASSED", "BARS", "RESULT"]
    assert lines[2].split() == [stored, "yes", "500", "true"]
    assert lines[3].split()[:4] == [missing, "error", "0", "INVALID_REQUEST:"]
    assert f"no bars stored for {missing} 1d" in lines[3]
    assert lines[4] == f"passed: {stored}"


async def test_screen_takes_comma_separated_symbols(nats_url, stored, capsys):
    assert await cli("screen", CLASSIFY, "--symbols", f"{stored},{stored}X", "--url", nats_url, "--json") == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["symbol"] for r in result["results"]] == [stored, stored + "X"]
    assert result["passed"] == [stored]


async def test_screen_of_a_file_without_classify_symbol_says_which_command_to_use(nats_url, tmp_path):
    path = tmp_path / "s.py"
    path.write_text("def strategy(data):\n    return 'BUY'\n")
    with pytest.raises(SystemExit, match="defines no classify_symbol\\(symbol\\).*strategy-node exec"):
        await cli("screen", str(path), "--symbols", "X", "--url", nats_url)


async def test_screen_passes_parameters_to_the_strategy(nats_url, stored, capsys, tmp_path):
    path = tmp_path / "p.py"
    path.write_text("def classify_symbol(symbol):\n    return params['n'] * 2\n")
    assert await cli("screen", str(path), "--symbols", stored, "--param", "n=21", "--url", nats_url) == 0
    assert capsys.readouterr().out.splitlines()[2].split() == [stored, "yes", "500", "42"]
