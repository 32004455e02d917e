"""`strategy-node refdata load FILE --kind ...`: the example files load, reloading stores nothing,
bad rows are named, and the example classify_symbol strategy screens them from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import nats
import pytest

from backtest.refdata_store import BUCKET, STREAM
from node.cli import build_parser

pytestmark = pytest.mark.usefixtures("node")  # the session's node serves every command here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "refdata")
FILES = [("securities.csv", "securities", 3), ("fundamentals.csv", "fundamentals", 12),
         ("earnings.json", "earnings", 12), ("statements.csv", "statements", 10), ("indices.csv", "indices", 500)]


async def cli(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return await args.func(args)


async def load(nats_url, capsys, path: str, kind: str, *extra: str) -> dict:
    assert await cli("refdata", "load", path, "--kind", kind, "--json", "--url", nats_url, *extra) == 0
    return json.loads(capsys.readouterr().out)


async def refdata_messages(nats_url) -> tuple[int, int]:
    """(messages in stream REFDATA, messages in bucket REFDATA_MASTER's stream)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        return ((await js.stream_info(STREAM)).state.messages,
                (await js.stream_info(f"KV_{BUCKET}")).state.messages)
    finally:
        await nc.drain()


async def test_reloading_each_example_file_stores_nothing(nats_url, capsys):
    for name, kind, records in FILES:
        await load(nats_url, capsys, os.path.join(EXAMPLES, name), kind)
    before = await refdata_messages(nats_url)
    for name, kind, records in FILES:
        again = await load(nats_url, capsys, os.path.join(EXAMPLES, name), kind)
        assert (again["records"], again["stored"], again["skipped"]) == (records, 0, records), name
    assert await refdata_messages(nats_url) == before


async def test_a_new_file_is_stored_once_and_its_reload_stores_nothing(nats_url, capsys, tmp_path):
    tag = uuid.uuid4().hex[:6].upper()
    path = tmp_path / "earnings.csv"
    path.write_text("symbol,period,report_date,eps_actual,eps_estimate\n"
                    f"A{tag},2024Q1,2024-05-02,1.1,1.0\nA{tag},2024Q2,2024-08-02,1.2,1.0\nB{tag},2024Q1,2024-05-03,2,2\n")
    first = await load(nats_url, capsys, str(path), "earnings")
    assert (first["stored"], first["skipped"], first["symbols"]) == (3, 0, 2)
    before = await refdata_messages(nats_url)
    second = await load(nats_url, capsys, str(path), "earnings")
    assert (second["stored"], second["skipped"]) == (0, 3)
    assert await refdata_messages(nats_url) == before


async def test_the_text_summary_says_what_was_stored_and_skipped(nats_url, capsys):
    path = os.path.join(EXAMPLES, "securities.csv")
    assert await cli("refdata", "load", path, "--kind", "securities", "--url", nats_url) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"securities: 3 records for 3 symbols read from {path}; stored ")
    assert out.endswith(" already stored")


def run_cli(nats_url: str, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NATS_URL": nats_url}
    return subprocess.run([sys.executable, "-m", "node", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)


def test_a_bad_row_is_named_by_row_and_column_and_nothing_is_stored(nats_url, tmp_path):
    tag = uuid.uuid4().hex[:6].upper()
    path = tmp_path / "fundamentals.csv"
    path.write_text(f"symbol,known_date,pe_ratio\nG{tag},2024-05-02,12\nG{tag},2024-08-02,cheap\n")
    done = run_cli(nats_url, "refdata", "load", str(path), "--kind", "fundamentals")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {path}: row 1 (line 3), column 'pe_ratio': 'cheap' is not a number"
    assert "Traceback" not in done.stderr
    done = run_cli(nats_url, "refdata", "load", str(path).replace("fundamentals", "missing"), "--kind", "fundamentals")
    assert done.returncode == 2 and "no such file" in done.stderr


async def test_nothing_of_a_file_with_a_bad_row_is_stored(nats_url, capsys, tmp_path):
    tag = uuid.uuid4().hex[:6].upper()
    path = tmp_path / "fundamentals.csv"
    path.write_text(f"symbol,known_date,pe_ratio\nH{tag},2024-05-02,12\nH{tag},2024-08-02,cheap\n")
    with pytest.raises(ValueError, match="column 'pe_ratio'"):
        await cli("refdata", "load", str(path), "--kind", "fundamentals", "--url", nats_url)
    path.write_text(f"symbol,known_date,pe_ratio\nH{tag},2024-05-02,12\n")
    assert (await load(nats_url, capsys, str(path), "fundamentals"))["stored"] == 1  # the good row was not


async def test_symbol_applies_to_index_files_only(nats_url, tmp_path):
    with pytest.raises(ValueError, match="--symbol applies to --kind indices only"):
        await cli("refdata", "load", os.path.join(EXAMPLES, "fundamentals.csv"), "--kind", "fundamentals",
                  "--symbol", "SPY", "--url", nats_url)


async def test_an_index_file_of_one_index_is_loaded_under_symbol(nats_url, capsys, tmp_path):
    tag = uuid.uuid4().hex[:6].upper()
    path = tmp_path / "index.csv"
    path.write_text("date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1.5,2,1,1.8\n")
    first = await load(nats_url, capsys, str(path), "indices", "--symbol", f"IX{tag}")
    assert (first["stored"], first["indices_marked"]) == (2, 1)
    again = await load(nats_url, capsys, str(path), "indices", "--symbol", f"IX{tag}")
    assert (again["stored"], again["skipped"], again["indices_marked"]) == (0, 2, 0)


async def test_the_classify_example_screens_the_example_files_from_the_cli(nats_url, capsys):
    for name, kind, _ in FILES:
        await load(nats_url, capsys, os.path.join(EXAMPLES, name), kind)
    for symbol in ("AAPL", "MSFT", "XOM"):
        assert await cli("bars", "load", os.path.join(EXAMPLES, f"bars_{symbol}.csv"), "--symbol", symbol,
                         "--timeframe", "1d", "--quiet", "--url", nats_url) == 0
    capsys.readouterr()
    strategy = os.path.join(ROOT, "examples", "classify_quality.py")
    assert await cli("screen", strategy, "--symbols", "AAPL", "MSFT", "XOM", "--url", nats_url) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(": 1 passed")
    assert [line.split()[:4] for line in lines[2:5]] == [["AAPL", "yes", "250", "true"], ["MSFT", "no", "250", "false"],
                                                         ["XOM", "no", "250", "false"]]
    assert "passed: AAPL" in lines
    assert "  log: AAPL: Apple Inc.: P/E 26.7, EPS surprise +2.0%, 90-day excess return +7.72%" in lines


async def test_the_readme_shows_what_the_reference_data_screen_prints(nats_url, capsys):
    from tests.test_readme import masked, output_after

    shown = output_after(lambda lang, body: lang == "sh" and "screen examples/classify_quality.py" in body)
    for name, kind, _ in FILES:
        await load(nats_url, capsys, os.path.join(EXAMPLES, name), kind)
    for symbol in ("AAPL", "MSFT", "XOM"):
        await cli("bars", "load", os.path.join(EXAMPLES, f"bars_{symbol}.csv"), "--symbol", symbol,
                  "--timeframe", "1d", "--quiet", "--url", nats_url)
    capsys.readouterr()
    strategy = os.path.join(ROOT, "examples", "classify_quality.py")
    assert await cli("screen", strategy, "--symbols", "AAPL", "MSFT", "XOM", "--url", nats_url) == 0
    printed = masked(capsys.readouterr().out).splitlines()
    expected = masked(shown).splitlines()
    is_log = lambda line: line.startswith("  log: ")  # noqa: E731 - symbols run concurrently: any order
    assert [x for x in printed if not is_log(x)] == [x for x in expected if not is_log(x)]
    assert sorted(filter(is_log, printed)) == sorted(filter(is_log, expected))
