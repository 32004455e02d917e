"""Reports open in a real headless browser (Debian's chromium, driven by Playwright) with no
console or script errors, no request leaving the file, and every chart drawn — including a
report of 1,000,000 bars, aggregated for display.

.ci/run installs chromium when /usr/bin/chromium is missing; outside CI the tests skip without it.
"""

from __future__ import annotations

import os
import shutil
import time

import numpy as np
import pytest

from backtest import run_backtest
from contracts import BacktestOptions, BacktestResult, BarArrays, Performance, SweepRow
from node.report import MAX_CANDLES, backtest_report, sweep_report

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api") if not os.environ.get("CI") else __import__(
    "playwright.sync_api", fromlist=["sync_playwright"])
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip("no /usr/bin/chromium (apt-get install chromium; CI installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def render(browser, path, screenshot=None) -> dict:
    """Open ``path``; wait until every Plotly chart is drawn; report errors and requests."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"requestfailed: {r.url}"))
    page.on("request", lambda r: requests.append(r.url))
    started = time.perf_counter()
    page.goto(f"file://{path}")
    page.wait_for_function(
        "() => { const d = [...document.querySelectorAll('.js-plotly-plot')];"
        " return d.length > 0 && d.every(x => x._fullLayout && x.querySelector('.main-svg')); }",
        timeout=60_000)
    seconds = time.perf_counter() - started
    info = page.evaluate(
        "() => [...document.querySelectorAll('.js-plotly-plot')].map(d => ({"
        " traces: d.data.map(t => [t.type, t.name || '', (t.x || []).length]),"
        " drawn: d.querySelectorAll('.trace, .cartesianlayer .plot g').length }))")
    if screenshot:
        page.screenshot(path=screenshot, full_page=True)
    page.close()
    return {"problems": problems, "foreign": [u for u in requests if not u.startswith(("file://", "data:"))],
            "plots": info, "seconds": seconds}


def synthetic(n: int, minutes: int = 1):
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    open_ = np.concatenate(([close[0]], close[:-1]))
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    ts = 1_600_000_000 * 10**9 + np.arange(n, dtype=np.int64) * minutes * 60 * 10**9
    return ts, open_, high, low, close


def report_of(n: int, tmp_path, minutes: int = 1) -> tuple[str, Performance]:
    ts, o, h, l, c = synthetic(n, minutes)
    fast = np.convolve(c, np.ones(n // 200) / (n // 200))[:n]
    slow = np.convolve(c, np.ones(n // 50) / (n // 50))[:n]
    fast[: n // 200], slow[: n // 50] = np.nan, np.nan
    sig = np.nan_to_num(np.sign(fast - slow)).astype(np.int8)
    ind = {"sma_fast": [None if np.isnan(x) else x for x in fast.tolist()],
           "sma_slow": [None if np.isnan(x) else x for x in slow.tolist()]}
    perf = run_backtest(ts, o, h, l, c, np.ones(n), sig, BacktestOptions(equity_points=5_000, allow_short=True),
                        reasons={int(np.flatnonzero(sig)[0]): "a long reason " * 30}, indicators=ind)
    bars = BarArrays.from_numpy(ts, open=o, high=h, low=l, close=c, volume=np.ones(n))
    page = backtest_report(BacktestResult(success=True, performance=perf, bars=n), title=f"{n:,} bars", bars=bars)
    path = tmp_path / f"report_{n}.html"
    path.write_text(page, encoding="utf-8")
    return str(path), perf


def test_backtest_report_renders_without_errors_or_network(browser, tmp_path):
    path, perf = report_of(20_000, tmp_path, minutes=60)
    out = render(browser, path)
    assert out["problems"] == [] and out["foreign"] == []
    main, monthly = out["plots"]
    kinds = {t[0] for t in main["traces"]}
    assert {"candlestick", "scatter"} <= kinds and main["drawn"] > 0
    assert monthly["traces"][0][0] == "heatmap"


def test_sweep_report_with_a_heatmap_renders_without_errors(browser, tmp_path):
    rows = [SweepRow(parameters={"fast": f, "slow": s}, performance=Performance(sharpe_ratio=(f - s) / 10))
            for f in (2, 4, 6) for s in (20, 30)]
    rows.sort(key=lambda r: -r.performance.sharpe_ratio)
    path = tmp_path / "sweep.html"
    path.write_text(sweep_report(BacktestResult(success=True, sweep=rows, bars=100), rank_by="sharpe_ratio"))
    out = render(browser, str(path))
    assert out["problems"] == [] and out["foreign"] == []
    assert out["plots"][0]["traces"][0][0] == "heatmap"


def test_a_million_bar_report_renders_aggregated_with_candles_markers_equity_drawdown_and_months(browser, tmp_path):
    path, perf = report_of(1_000_000, tmp_path)
    assert os.path.getsize(path) < 12_000_000
    shot = tmp_path / "report_1m.png"
    out = render(browser, path, screenshot=str(shot))
    assert out["problems"] == [] and out["foreign"] == []
    traces = {name or kind: (kind, count) for kind, name, count in out["plots"][0]["traces"]}
    assert traces["price"] == ("candlestick", MAX_CANDLES)
    assert {"long entry", "short entry", "exit", "equity", "buy & hold", "drawdown", "sma_fast"} <= set(traces)
    assert traces["equity"][1] == len(perf.equity_curve) <= 5_000
    assert out["plots"][1]["traces"][0][0] == "heatmap"
    assert out["seconds"] < 30
    assert shot.stat().st_size > 50_000
    keep = os.environ.get("REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
