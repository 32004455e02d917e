"""The self-contained HTML report of a backtest and of a sweep."""

from __future__ import annotations

import re

import numpy as np

from backtest import run_backtest
from contracts import BacktestOptions, BacktestResult, ErrorCode, ErrorInfo, Performance, SweepRow
from node.report import backtest_report, line_chart, sweep_report

DAY_NS = 86_400 * 10**9


def performance(n: int = 120, reason: str = "cross up") -> Performance:
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = 1_704_067_200 * 10**9 + np.arange(n, dtype=np.int64) * DAY_NS
    signals = np.zeros(n, dtype=np.int8)
    signals[10::20], signals[20::20] = 1, -1
    return run_backtest(ts, close, close * 1.01, close * 0.99, close, np.ones(n), signals,
                        BacktestOptions(), reasons={10: reason})


def test_backtest_report_has_equity_and_drawdown_charts_metrics_and_trades():
    perf = performance()
    page = backtest_report(BacktestResult(success=True, performance=perf, bars=120), title="SMA on TEST")
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<svg") == 2 and 'aria-label="Equity"' in page and 'aria-label="Drawdown"' in page
    assert page.count("<polyline") == 2 and "<polygon" in page  # drawdown is an area under zero
    assert "Sharpe ratio" in page and "Max drawdown" in page and "Total return" in page
    trade_rows = re.findall(r"<tr><td>\d+</td><td class='l'>long</td>", page)
    assert len(trade_rows) == perf.total_trades > 0
    assert f"{perf.final_equity:,.2f}" in page


def test_report_is_self_contained():
    page = backtest_report(BacktestResult(success=True, performance=performance(), bars=120))
    assert "<script" not in page and "<link" not in page and "<img" not in page
    assert "http://" not in page and "https://" not in page and "src=" not in page and "@import" not in page


def test_report_escapes_every_value_from_the_reply():
    evil = "<script>alert(1)</script>"
    result = BacktestResult(success=True, performance=performance(reason=evil), bars=120, logs=[evil])
    page = backtest_report(result, title=evil)
    assert evil not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_sweep_report_ranks_rows_and_shows_errors():
    rows = [
        SweepRow(parameters={"fast": 10, "slow": 50}, performance=Performance(sharpe_ratio=1.5, total_return=12.0)),
        SweepRow(parameters={"fast": 5, "slow": 50}, performance=Performance(sharpe_ratio=0.5, total_return=3.0)),
        SweepRow(parameters={"fast": 1, "slow": 50},
                 error=ErrorInfo(code=ErrorCode.RUNTIME_ERROR, message="ValueError: bad <fast>")),
    ]
    best = BacktestResult(success=True, performance=performance(), bars=120)
    page = sweep_report(BacktestResult(success=True, sweep=rows, bars=120), rank_by="sharpe_ratio", best=best)
    table = page[page.index("Ranked grid"):page.index("Best:")]
    assert table.index("1.500") < table.index("0.500")
    assert re.search(r"<tr class='best'><td>1</td><td>10</td><td>50</td>", table)
    assert "RUNTIME_ERROR: ValueError: bad &lt;fast&gt;" in table
    assert "3 grid points, 2 ran" in table
    assert "Best: fast=10, slow=50" in page and page.count("<svg") == 2


def test_line_chart_without_finite_values_says_no_data():
    svg = line_chart(["2024-01-01T00:00:00Z"], [float("nan")], title="Equity", color="#000")
    assert "no data" in svg and "<polyline" not in svg
