"""`strategy-node bars load|ls` and `strategy-node backtest` against the session's node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from backtest.store import STREAM, BarStore, subject_for
from node.cli import build_parser
from tests.support import columnar_bars

SMA = (
    "import numpy as np\n"
    "def strategy(data, params):\n"
    "    fast = data['close'].rolling(params.get('fast', 5)).mean()\n"
    "    slow = data['close'].rolling(params.get('slow', 20)).mean()\n"
    "    return np.sign(fast - slow)\n"
)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_csv(path, n: int = 200, seed: int = 7, duplicate_at: int | None = None) -> str:
    cols = columnar_bars(n, seed=seed)
    if duplicate_at is not None:
        cols["timestamp"][duplicate_at] = cols["timestamp"][duplicate_at - 1]
    lines = ["timestamp,open,high,low,close,volume"]
    for i in range(n):
        lines.append(",".join(str(cols[k][i]) for k in ("timestamp", "open", "high", "low", "close", "volume")))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def cli(*argv: str) -> int:
    """Run one CLI command in this process (its output goes to capsys)."""
    args = build_parser().parse_args(list(argv))
    return await args.func(args)


def fresh_symbol() -> str:
    return "CLI" + uuid.uuid4().hex[:8].upper()


@pytest.fixture
def strategy_file(tmp_path):
    path = tmp_path / "sma.py"
    path.write_text(SMA)
    return str(path)


async def test_bars_load_twice_stores_nothing_the_second_time(nc, nats_url, tmp_path, capsys):
    csv, symbol = write_csv(tmp_path / "bars.csv", 2500), fresh_symbol()
    assert await cli("bars", "load", csv, "--symbol", symbol, "--timeframe", "1d", "--url", nats_url, "--json") == 0
    first = json.loads(capsys.readouterr().out)
    assert await cli("bars", "load", csv, "--symbol", symbol, "--timeframe", "1d", "--url", nats_url, "--json") == 0
    second = json.loads(capsys.readouterr().out)
    assert first["load"]["bars"] == 2500 and first["load"]["stored_chunks"] == 3
    assert second["load"]["bars"] == 0 and second["load"]["stored_chunks"] == 0
    assert second["load"]["skipped_bars"] == 2500 and second["series"]["bars"] == 2500
    info = await BarStore(nc.jetstream()).js.stream_info(STREAM, subjects_filter=subject_for(symbol, "1d"))
    assert info.state.subjects == {subject_for(symbol, "1d"): 3}


async def test_bars_load_shows_a_progress_bar(nats_url, tmp_path, capsys):
    csv = write_csv(tmp_path / "bars.csv", 300)
    assert await cli("bars", "load", csv, "--symbol", fresh_symbol(), "--timeframe", "1d", "--url", nats_url) == 0
    out = capsys.readouterr()
    assert "100.0% 300/300" in out.err and "[" in out.err
    assert "stored 300 new bars" in out.out


async def test_bars_load_of_a_file_with_duplicate_bars_stores_nothing(nc, nats_url, tmp_path):
    csv, symbol = write_csv(tmp_path / "bad.csv", 50, duplicate_at=20), fresh_symbol()
    with pytest.raises(ValueError, match="row 20"):
        await cli("bars", "load", csv, "--symbol", symbol, "--timeframe", "1d", "--url", nats_url)
    assert all(s.symbol != symbol for s in await BarStore(nc.jetstream()).symbols())


async def test_bars_ls_lists_loaded_series(nats_url, tmp_path, capsys):
    symbol = fresh_symbol()
    await cli("bars", "load", write_csv(tmp_path / "b.csv", 40), "--symbol", symbol, "--timeframe", "1h",
              "--url", nats_url, "--quiet")
    capsys.readouterr()
    assert await cli("bars", "ls", "--url", nats_url) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith(symbol))
    assert "1h" in line and " 40 " in line and "2024-01-01T00:00:00Z" in line


async def test_backtest_of_a_stored_symbol_prints_the_result_as_json(nats_url, tmp_path, strategy_file, capsys):
    symbol = fresh_symbol()
    await cli("bars", "load", write_csv(tmp_path / "b.csv", 250), "--symbol", symbol, "--timeframe", "1d",
              "--url", nats_url, "--quiet")
    capsys.readouterr()
    code = await cli("backtest", strategy_file, "--symbol", symbol, "--timeframe", "1d", "--start", "2024-02-01",
                     "--param", "fast=3", "--url", nats_url, "--json")
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["success"] is True, result["error"]
    assert result["bars"] == 250 - 31 and result["performance"]["total_trades"] > 0


async def test_backtest_grid_writes_a_ranked_html_report(nats_url, tmp_path, strategy_file, capsys):
    csv, report = write_csv(tmp_path / "b.csv", 300, seed=3), tmp_path / "out.html"
    code = await cli("backtest", strategy_file, "--bars", csv, "--grid", "fast=3:9:3", "slow=20,30",
                     "--report", str(report), "--url", nats_url)
    out = capsys.readouterr()
    assert code == 0, out
    assert "100.0% 6/6" in out.err  # the sweep's progress bar
    assert "6 grid points ranked by sharpe_ratio" in out.out
    page = report.read_text()
    assert "Ranked grid" in page and page.count("<tr class='best'>") == 1
    assert "Best: fast=" in page and "fast and slow" in page  # the two-parameter heatmap
    assert '"type":"candlestick"' in page.replace(" ", "")  # the best point's price chart


async def test_backtest_grid_json_rows_are_ranked(nats_url, tmp_path, strategy_file, capsys):
    csv = write_csv(tmp_path / "b.csv", 300, seed=5)
    await cli("backtest", strategy_file, "--bars", csv, "--grid", "fast=2:10:2", "slow=25",
              "--rank-by", "total_return", "--url", nats_url, "--json")
    result = json.loads(capsys.readouterr().out)
    returns = [row["performance"]["total_return"] for row in result["sweep"]]
    assert len(returns) == 5 and returns == sorted(returns, reverse=True)


def test_strategy_node_entry_point_runs_bars_ls(nats_url, node):
    proc = subprocess.run([sys.executable, "-m", "node", "bars", "ls", "--json"], cwd=ROOT, timeout=60,
                          env={**os.environ, "NATS_URL": nats_url}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads(proc.stdout), list)


async def test_backtest_grid_over_a_stored_symbol_ranks_every_point(nats_url, tmp_path, strategy_file, capsys):
    symbol = fresh_symbol()
    await cli("bars", "load", write_csv(tmp_path / "b.csv", 300, seed=8), "--symbol", symbol, "--timeframe", "1d",
              "--url", nats_url, "--quiet")
    capsys.readouterr()
    code = await cli("backtest", strategy_file, "--symbol", symbol, "--grid", "fast=2:20:2", "slow=30,40",
                     "--url", nats_url, "--json")
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["success"] is True, result["error"]
    assert len(result["sweep"]) == 20 and all(r["error"] is None for r in result["sweep"])
    sharpes = [r["performance"]["sharpe_ratio"] for r in result["sweep"]]
    assert sharpes == sorted(sharpes, reverse=True)


async def test_backtest_grid_over_an_unknown_symbol_fails_with_the_reason(nats_url, strategy_file, capsys):
    code = await cli("backtest", strategy_file, "--symbol", "NOPE" + uuid.uuid4().hex[:6], "--grid", "fast=2,3",
                     "--url", nats_url, "--json")
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["error"]["code"] == "INVALID_REQUEST"
    assert "no bars stored" in result["error"]["message"]
