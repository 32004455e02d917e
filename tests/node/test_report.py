"""The interactive one-file HTML report of a backtest and of a sweep (node/report.py).

What the page holds is checked here; that it renders in a real browser without script errors
or network requests is tests/node/test_report_browser.py.
"""

from __future__ import annotations

import json
import re

import numpy as np

from backtest import run_backtest
from contracts import (BacktestOptions, BacktestResult, BarArrays, ErrorCode, ErrorInfo, Performance,
                       SweepRow)
from node.report import MAX_CANDLES, aggregate_ohlc, backtest_report, sweep_report

DAY_NS = 86_400 * 10**9
T0 = 1_704_067_200 * 10**9


def series(n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = T0 + np.arange(n, dtype=np.int64) * DAY_NS
    return ts, close


def performance(n: int = 120, reason: str = "cross up", **options) -> Performance:
    ts, close = series(n)
    signals = np.zeros(n, dtype=np.int8)
    signals[10::20], signals[20::20] = 1, -1
    sma = np.convolve(close, np.ones(5) / 5)[:n]
    return run_backtest(ts, close, close * 1.01, close * 0.99, close, np.ones(n), signals,
                        BacktestOptions(**options), reasons={10: reason},
                        indicators={"sma_5": [None] * 4 + sma[4:].tolist()})


def bars(n: int = 120) -> BarArrays:
    ts, close = series(n)
    return BarArrays.from_numpy(ts, open=close, high=close * 1.01, low=close * 0.99, close=close,
                                volume=np.ones(n))


def figures(page: str) -> list[dict]:
    """The data of every Plotly figure on the page."""
    out = []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{', page, re.S):
        out.append({"data": json.loads(match.group(1))})
    return out


def test_backtest_report_has_price_trades_indicators_equity_buy_and_hold_and_drawdown():
    perf = performance()
    page = backtest_report(BacktestResult(success=True, performance=perf, bars=120), title="SMA on TEST",
                           bars=bars())
    assert page.startswith("<!DOCTYPE html>")
    traces = figures(page)[0]["data"]
    names = [t.get("name") for t in traces]
    assert traces[0]["type"] == "candlestick"
    assert {"sma_5", "long entry", "exit", "equity", "buy & hold", "drawdown"} <= set(names)
    assert "Price, trades and indicators" in page and "Equity vs buy" in page and "Drawdown [%]" in page


def test_report_inlines_plotly_once_and_loads_nothing_from_elsewhere():
    page = backtest_report(BacktestResult(success=True, performance=performance(), bars=120), bars=bars())
    assert page.count("<script") >= 2  # plotly.js itself, then the figures
    assert len(page) > 1_000_000  # the library is in the page
    assert not re.search(r"<script[^>]*\bsrc=", page) and "<link" not in page and "<img" not in page
    assert "@import" not in page and "<iframe" not in page
    assert page.count("plotly.js v") <= 2  # one bundle (its banner may name the version twice)


def test_metrics_include_the_full_statistics():
    page = backtest_report(BacktestResult(success=True, performance=performance(), bars=120))
    for label in ("Sharpe ratio", "Max drawdown", "Alpha", "Beta", "Avg drawdown", "Kelly criterion",
                  "Expectancy %", "Duration", "Avg drawdown duration"):
        assert f"<span>{label}</span>" in page


def test_trades_table_lists_every_trade_and_long_reasons_wrap():
    reason = "because " * 40
    perf = performance(reason=reason)
    page = backtest_report(BacktestResult(success=True, performance=perf, bars=120))
    trade_rows = re.findall(r"<tr><td>\d+</td><td class='l'>long</td>", page)
    assert len(trade_rows) == perf.total_trades > 0
    assert f"<td class='wrap'>{reason}</td>" in page
    assert "td.wrap{white-space:normal;overflow-wrap:anywhere" in page


def test_monthly_returns_table_and_heatmap():
    perf = performance(400)
    page = backtest_report(BacktestResult(success=True, performance=perf, bars=400))
    assert "<h2>Monthly returns</h2>" in page and "<table class='monthly'>" in page
    heat = [t for f in figures(page) for t in f["data"] if t["type"] == "heatmap"]
    assert len(heat) == 1
    first = perf.monthly_returns[0]
    assert f"{first.return_pct:,.2f} %" in page


def test_report_escapes_every_value_from_the_reply():
    evil = "</script><script>alert(1)</script>"
    result = BacktestResult(success=True, performance=performance(reason=evil), bars=120, logs=[evil])
    page = backtest_report(result, title=evil, bars=bars())
    assert evil not in page and "alert(1)</script>" not in page
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_sweep_report_ranks_rows_shows_errors_and_a_two_parameter_heatmap():
    rows = [
        SweepRow(parameters={"fast": 10, "slow": 50}, performance=Performance(sharpe_ratio=1.5, total_return=12.0)),
        SweepRow(parameters={"fast": 5, "slow": 60}, performance=Performance(sharpe_ratio=0.5, total_return=3.0)),
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
    assert "Best: fast=10, slow=50" in page
    heat = figures(page)[0]["data"][0]
    assert heat["type"] == "heatmap" and heat["x"] == ["5", "10"] and heat["y"] == ["50", "60"]
    assert "sharpe_ratio by fast and slow" in page


def test_candles_aggregate_without_losing_a_high_or_a_low():
    n = 1_000_003
    rng = np.random.default_rng(2)
    c = 100 + rng.normal(size=n).cumsum()
    h, l = c + rng.random(n), c - rng.random(n)
    ts = np.arange(n, dtype=np.int64)
    t, o, hi, lo, cl = aggregate_ohlc(ts, c, h, l, c)
    assert len(t) == MAX_CANDLES
    assert hi.max() == h.max() and lo.min() == l.min()
    assert o[0] == c[0] and cl[-1] == c[-1]
    assert (hi >= np.maximum(o, cl)).all() and (lo <= np.minimum(o, cl)).all()


def test_small_series_are_drawn_bar_for_bar():
    ts = np.arange(10, dtype=np.int64)
    x = np.arange(10.0)
    assert len(aggregate_ohlc(ts, x, x, x, x)[0]) == 10
