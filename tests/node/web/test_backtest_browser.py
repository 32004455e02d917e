"""The Backtest page in a real browser (Debian's chromium), against a real nats-server with
accounts, a real node and the served dashboard (tests/node/web/conftest.py).

A run is a set of durable jobs published as the signed-in user; the page follows it on an SSE
stream fed by the jobs' pushed replies and then draws node/report.py's report (the same charts
as `strategy-node backtest --report`) with the page's own plotly.js; a sweep adds the heatmap.
"""

from __future__ import annotations

from typing import Any

import json
import uuid

import msgspec
import pytest

from tests.node.web import conftest as web

from contracts import Bars, from_columns
from tests.support import columnar_bars

SMA = (
    "import numpy as np\n"
    "def strategy(data, params):\n"
    "    fast = data['close'].rolling(params.get('fast', 5)).mean()\n"
    "    slow = data['close'].rolling(params.get('slow', 20)).mean()\n"
    "    return np.sign(fast - slow)\n"
)
BARS = 400


@pytest.fixture(scope="module")
def pages(browser, web_env):
    """One signed-in browser context per user for the whole module (sign-in costs a second)."""
    opened: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in opened:
            opened[name] = web.open_page(browser, web_env)
            web.sign_in(opened[name], web_env, name)
        page = opened[name]
        page.problems.clear()
        page.foreign.clear()
        return page

    yield get
    for page in opened.values():
        page.context.close()


@pytest.fixture(scope="module")
def series(web_env):
    """A series in BARS (loaded as the ingest user) and alice's strategy in the registry."""
    symbol = "BT" + uuid.uuid4().hex[:6].upper()
    web_env.bars(symbol, "1d", from_columns(msgspec.convert(columnar_bars(BARS, seed=3), Bars)))
    name = "sma-" + uuid.uuid4().hex[:6]
    web_env.run(web_env.hosting("alice").put_strategy(name, SMA))
    return {"symbol": symbol, "timeframe": "1d", "strategy": name}


def open_backtest(page, series):
    page.goto(f"/backtest?strategy={series['strategy']}")
    page.select_option("#bt-strategy", series["strategy"])
    page.fill("#bt-symbol", series["symbol"])
    page.fill("#bt-timeframe", series["timeframe"])


def sse_events(page) -> list[dict]:
    return [json.loads(d) for d in page.evaluate("() => window.__sse")]


def wait_report(page, timeout: float = 45_000) -> None:
    page.wait_for_selector("#report[data-ready='1']", timeout=timeout)


def plotted(page) -> list[list[str]]:
    """The trace types of each figure plotly drew in the report."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('#report .js-plotly-plot'))
        .map(gd => gd.data.map(trace => trace.type || 'scatter'))""")


def test_a_single_backtest_shows_progress_then_the_report_with_no_console_errors(pages, web_env, series):
    page = pages("alice")
    open_backtest(page, series)
    page.fill("#bt-parameters", '{"fast": 5, "slow": 20}')
    page.click("#bt-run")
    wait_report(page)
    assert page.get_attribute("#run-status", "data-state") == "done"
    events = sse_events(page)
    assert events[0]["total"] == 1 and events[-1]["summary"]["success"] is True
    assert events[-1]["summary"]["bars"] == BARS
    figures = plotted(page)
    assert figures and all(figures), "every figure block was drawn by plotly"
    assert "candlestick" in figures[0], "the price, read from BARS as the tenant, is drawn with the trades"
    assert "No price chart" not in page.inner_text("#report")
    report = page.inner_text("#report")
    assert f"{series['strategy']} v1" in report and "Metrics" in report and "Trades" in report
    web_env.screenshot(page, "backtest-report")
    assert not page.problems, page.problems
    assert not page.foreign, f"requests leaving the dashboard: {page.foreign}"


def test_a_sweep_shows_progress_as_its_sub_grids_finish_then_the_heatmap(pages, web_env, series):
    page = pages("alice")
    open_backtest(page, series)
    page.fill("#bt-grid", "fast=2:21:1 slow=30,40")  # 40 points: 5 sub-grid jobs of 8
    page.click("#bt-run")
    wait_report(page)
    events = sse_events(page)
    progress = [e for e in events if "done" in e]
    done = [e["done"] for e in progress if e["stage"] == "sweep"]
    assert progress[0]["total"] == 40 and done[-1] == 40
    assert done == sorted(done) and any(0 < d < 40 for d in done), f"no step between start and end: {done}"
    assert progress[-1]["stage"] == "best", "the best point is backtested in full for the charts"
    summary = events[-1]["summary"]
    assert summary["points"] == 40 and summary["ran"] == 40 and set(summary["best"]) == {"fast", "slow"}
    figures = plotted(page)
    assert figures[0] == ["heatmap"], figures
    heat = page.evaluate("() => document.querySelector('#report .js-plotly-plot').data[0]")
    assert heat["x"] == [str(v) for v in range(2, 22)] and heat["y"] == ["30", "40"]
    assert "sharpe_ratio by fast and slow" in page.inner_text("#report")
    assert page.locator("#report table.ranked tr").count() == 1 + 40
    web_env.screenshot(page, "backtest-sweep-heatmap")
    assert not page.problems, page.problems


def test_reloading_the_page_follows_the_run_again_and_shows_its_report(pages, series):
    page = pages("alice")
    open_backtest(page, series)
    page.fill("#bt-grid", "fast=3,5 slow=20,30")
    page.click("#bt-run")
    page.wait_for_url(lambda url: "run=" in url)
    page.reload()
    wait_report(page)
    assert page.get_attribute("#run-status", "data-state") == "done"
    assert plotted(page)[0] == ["heatmap"]
    assert page.locator("#report table.ranked tr").count() == 1 + 4
    assert not page.problems, page.problems


def test_a_tenant_sees_the_series_bars_holds_and_picking_one_fills_the_form(pages, series):
    page = pages("alice")
    page.goto("/backtest")
    options = page.eval_on_selector_all("#bt-series option", "els => els.map(e => e.textContent)")
    mine = [o for o in options if o.startswith(f"{series['symbol']} 1d")]
    assert mine and f"{BARS} bars" in mine[0], options
    page.select_option("#bt-series", label=mine[0])
    assert page.input_value("#bt-symbol") == series["symbol"] and page.input_value("#bt-timeframe") == "1d"
    assert page.input_value("#bt-start") == "2024-01-01T00:00:00Z"


def test_a_tenant_reads_bars_but_cannot_write_purge_or_consume_them(web_env, series):
    import asyncio

    import nats.errors
    import nats.js.errors

    from backtest.store import BarStore

    async def attack() -> list[str]:
        nc = await web_env._nats("alice")
        js = nc.jetstream(timeout=1.0)
        refused = []
        for name, attempt in [
            ("publish a chunk", js.publish(f"bars.1d.{series['symbol']}", b"poison")),
            ("purge the series", js.purge_stream("BARS", subject=f"bars.1d.{series['symbol']}")),
            ("open a consumer", js.pull_subscribe(f"bars.1d.{series['symbol']}", stream="BARS")),
            ("write the index", nc.request(f"$KV.BARS_INDEX.{series['symbol']}.1d", b"{}", timeout=1.0)),
        ]:
            try:
                await attempt
            except (asyncio.TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError,
                    nats.js.errors.Error):
                refused.append(name)
        stored = await BarStore(nc.jetstream(timeout=2.0), nc).replay(series["symbol"], "1d")
        assert len(stored.column("timestamp")) == BARS, "the series is untouched"
        return refused

    refused = web_env.run(attack())
    assert refused == ["publish a chunk", "purge the series", "open a consumer", "write the index"]


def test_a_series_bars_does_not_hold_ends_with_the_nodes_error(pages, series):
    page = pages("alice")
    open_backtest(page, {**series, "symbol": "NOSUCH" + uuid.uuid4().hex[:4].upper()})
    page.click("#bt-run")
    page.wait_for_selector("#run-status[data-state='failed']", timeout=30_000)
    assert "no bars stored" in page.inner_text("#run-status")
    assert not page.problems or all("Failed to load resource" not in p for p in page.problems)


def test_a_strategy_error_is_shown_with_its_line(pages, web_env, series):
    name = "broken-" + uuid.uuid4().hex[:6]
    web_env.run(web_env.hosting("alice").put_strategy(name, "def strategy(data):\n    x = 1\n    return 1 / 0\n"))
    page = pages("alice")
    open_backtest(page, {**series, "strategy": name})
    page.click("#bt-run")
    page.wait_for_selector("#run-status[data-state='failed']", timeout=30_000)
    status = page.inner_text("#run-status")
    assert "RUNTIME_ERROR" in status and "line 3" in status and "division by zero" in status


HOSTILE = (
    "indicator('<img src=x onerror=window.__xss=1>', data['close'].rolling(3).mean())\n"
    "log('</script><img src=x onerror=window.__xss=2>')\n"
    "signal('buy', '<img src=x onerror=window.__xss=3>')\n"
)


def test_markup_from_a_strategy_is_shown_as_text_never_run(pages, web_env, series):
    name = "hostile-" + uuid.uuid4().hex[:6]
    web_env.run(web_env.hosting("alice").put_strategy(name, HOSTILE))
    page = pages("alice")
    open_backtest(page, {**series, "strategy": name})
    page.click("#bt-run")
    wait_report(page)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#report img").count() == 0
    assert "</script><img src=x onerror=window.__xss=2>" in page.inner_text("#report")
    assert not page.problems, page.problems


# -- the page's actions, posted as a client would ------------------------------------------------

def csrf_of(page) -> str:
    """The session's CSRF token, from the page's meta (any dashboard page has it)."""
    if page.query_selector("meta[name=csrf-token]") is None:
        page.goto("/backtest")
    return page.get_attribute("meta[name=csrf-token]", "content")


def post_run(page, body: dict):
    return page.request.post("/backtest/run", data=body, headers={"X-CSRF-Token": csrf_of(page)})


def test_running_needs_a_session_and_the_csrf_token(browser, web_env, pages, series):
    context = browser.new_context(base_url=web_env.url)
    try:
        assert context.request.post("/backtest/run", data={}).status == 401
        assert context.request.get("/backtest/runs/x/events").status == 401
        response = context.request.get("/backtest", max_redirects=0)
        assert response.status == 303 and response.headers["location"].startswith("/signin")
    finally:
        context.close()
    page = pages("alice")
    assert page.request.post("/backtest/run", data={"strategy": series["strategy"]}).status == 403


@pytest.mark.parametrize("change,words", [
    ({"grdi": "fast=1,2"}, ["unknown field `grdi`"]),
    ({"grid": "fast=5:1:1"}, ["grid", "stop >= start"]),
    ({"grid": "fast=1,2", "rank_by": "luck"}, ["rank_by", "luck"]),
    ({"rank_by": "total_return"}, ["rank_by", "grid"]),
    ({"mode": "fast"}, ["mode"]),
    ({"symbol": "A B"}, ["symbol"]),
    ({"cash": 0}, ["cash"]),
    ({"parameters": "fast=5"}, ["parameters"]),
    ({"start": "yesterday"}, ["start", "yesterday"]),
    ({"parameters": {"note": "x" * 7_000}}, ["run's links"]),
])
def test_bad_input_is_an_invalid_request_naming_what_is_wrong(pages, series, change, words):
    page = pages("alice")
    body = {"strategy": series["strategy"], "symbol": series["symbol"], "timeframe": "1d", **change}
    response = post_run(page, body)
    assert response.status == 400
    error = response.json()["error"]
    assert error["code"] == "INVALID_REQUEST"
    for word in words:
        assert word in error["message"]


def test_another_users_strategy_cannot_be_backtested(pages, series):
    page = pages("bob")
    response = post_run(page, {"strategy": series["strategy"], "symbol": series["symbol"], "timeframe": "1d"})
    assert response.status == 400 and "not found" in response.json()["error"]["message"]


def test_a_run_link_works_only_in_the_session_that_started_it(pages, series):
    alice = pages("alice")
    run = post_run(alice, {"strategy": series["strategy"], "symbol": series["symbol"], "timeframe": "1d"}).json()
    assert alice.request.get(run["report"]).status in (200, 400)  # 400 only while the result is not stored yet
    bob = pages("bob")
    for url in (run["report"], run["events"]):
        response = bob.request.get(url)
        assert response.status == 403 and "another session" in response.json()["error"]["message"]
    forged = run["run"].rpartition(".")[0] + "." + "0" * 32
    assert alice.request.get(f"/backtest/runs/{forged}/report").status == 403


def test_a_damaged_run_token_is_an_invalid_request(pages):
    import base64
    import hashlib
    import hmac

    page = pages("alice")
    key = csrf_of(page)
    for body in ("bm90LWpzb24", base64.urlsafe_b64encode(b'{"id": "x"}').decode().rstrip("=")):
        signed = f"{body}.{hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()[:32]}"
        for what in ("report", "events"):
            response = page.request.get(f"/backtest/runs/{signed}/{what}")
            assert response.status == 400
            assert response.json()["error"]["code"] == "INVALID_REQUEST"


def test_figures_are_embedded_as_json_no_value_can_close_their_block():
    import plotly.graph_objects as go

    from node.web.pages.backtest_runs import EmbeddedFigures

    hostile = "</script><script>window.__xss=1</script><!--"
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4], name=hostile))
    block = EmbeddedFigures().html(fig)
    inner = block.split('<script type="application/json">', 1)[1].rsplit("</script>", 1)[0]
    assert "<" not in inner and ">" not in inner and "&" not in inner
    assert json.loads(inner)["data"][0]["name"] == hostile


# -- against the README's embedded node: --insecure-local, the anonymous local user ---------------

class LocalEnv(web.WebEnv):
    """A nats-server without auth, a node and the dashboard with --insecure-local (the README's
    embedded setup): no sign-in, and the local user may read BARS, so the page lists it."""

    def start(self) -> "LocalEnv":
        from node.embedded import EmbeddedServer

        self.server = EmbeddedServer(jetstream=True).start()
        self.run(self._start_local())
        return self

    async def _start_local(self) -> None:
        import asyncio

        import nats
        import uvicorn

        from node.config import Settings
        from node.service import Node
        from node.web.app import WebSettings, create_app, prepare

        self.node = Node(Settings.from_env({"NODE_ID": "local-web-node", "MAX_WORKERS": "2",
                                            "MAX_TIMEOUT_SECONDS": "10"}), self.server.url)
        await self.node.start()
        port = web.free_port()
        settings = WebSettings(nats_url=self.server.url, bind="127.0.0.1", port=port, insecure_local=True)
        await prepare(settings)
        assert settings.anonymous
        self.app = create_app(settings)
        self.uvicorn = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning",
                                                     lifespan="on"))
        self._serving = asyncio.ensure_future(self.uvicorn.serve())
        while not self.uvicorn.started:
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"
        self._conns["local"] = await nats.connect(self.server.url)


@pytest.fixture(scope="module")
def local_env(web_env):
    env = LocalEnv(web_env.artifacts).start()
    nc = env._conns["local"]
    symbol = "LOC" + uuid.uuid4().hex[:5].upper()

    async def setup() -> None:
        from backtest.store import BarStore
        from node.hosting.client import HostingClient

        await BarStore(nc.jetstream(), nc).load(symbol, "1d", from_columns(msgspec.convert(columnar_bars(BARS, seed=5), Bars)))
        await HostingClient(nc).put_strategy("sma-local", SMA)

    env.run(setup())
    env.symbol = symbol
    yield env
    env.close()


def test_the_local_page_lists_the_series_bars_holds_and_draws_the_price_with_the_report(browser, local_env):
    page = web.open_page(browser, local_env)
    try:
        page.goto("/backtest")  # no sign-in: the anonymous local user
        options = page.eval_on_selector_all("#bt-series option", "els => els.map(e => e.textContent)")
        mine = [o for o in options if o.startswith(f"{local_env.symbol} 1d")]
        assert mine and f"{BARS} bars" in mine[0] and "2024-01-01" in mine[0]
        page.select_option("#bt-series", label=mine[0])
        assert page.input_value("#bt-symbol") == local_env.symbol and page.input_value("#bt-timeframe") == "1d"
        assert page.input_value("#bt-start").startswith("2024-01-01")
        page.fill("#bt-start", "2024-03-01")
        page.select_option("#bt-strategy", "sma-local")
        page.click("#bt-run")
        wait_report(page)
        events = sse_events(page)
        assert events[-1]["summary"]["success"] is True and events[-1]["summary"]["bars"] < BARS
        assert "candlestick" in plotted(page)[0], "the price, replayed from BARS, is drawn with the trades"
        assert "No price chart" not in page.inner_text("#report")
        local_env.screenshot(page, "backtest-local-price")
        assert not page.problems, page.problems
        assert not page.foreign, page.foreign
    finally:
        page.context.close()
