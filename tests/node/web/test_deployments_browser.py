"""The Deployments and Deployment pages in a real browser (Playwright driving /usr/bin/chromium)
against a real nats-server with accounts and a real node: bars replayed live show up as status,
signals, runs, state and log lines without reloading; pause from the page; another tenant sees
none of it; no secret value ever reaches the browser. Screenshots go to web_env.artifacts."""

from __future__ import annotations

import json
import time

import pytest

from tests.node.hosting.support import arrays, bar_range, one_bar

from .support import wait_until

STRATEGY = """
def strategy(data):
    n = state.get("runs", 0) + 1
    state["runs"] = n
    print("web run", n, "bars", len(data))
    return "BUY" if n % 2 else "SELL"
"""
SECRET_STRATEGY = """
def strategy(data):
    print("token is", secrets["WEB_TOKEN"], "mode given:", bool(env["MODE"]))
    return "BUY"
"""
SECRET_VALUE = "sv-9f3c1e77-do-not-leak"
ENV_VALUE = "paper-env-value-17"
READY = "() => document.body.dataset.live === 'ready'"


@pytest.fixture(scope="module")
def live_dep(web_env):
    """alice's deployment `live-dep` on WEBL 1d, and the bars it will be fed."""
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("web-alt", STRATEGY))
    web_env.run(alice.put_strategy("web-alt", STRATEGY.replace("web run", "web run v2")))
    web_env.run(alice.create_deployment("live-dep", strategy="web-alt", version=1, symbols=["WEBL"],
                                        timeframe="1d", lookback=5))
    return arrays(40, seed=17)


def runs_of(web_env, dep: str) -> int:
    status = web_env.run(web_env.hosting("alice").get_deployment(dep)).status
    return status.runs if status else 0


def test_replayed_bars_show_up_live_on_the_deployments_page(web_env, signed_in_page, live_dep):
    page = signed_in_page("alice")
    page.goto("/")
    page.wait_for_function(READY)
    page.evaluate("window.__marker = 'same page'")
    row = page.locator("#dep-live-dep")
    assert row.locator(".runs").inner_text() == "0"
    web_env.bars("WEBL", "1d", bar_range(live_dep, 0, 10))  # history chunk: one run on its newest bar
    page.wait_for_function("() => document.querySelector('#dep-live-dep .runs').textContent === '1'", timeout=30_000)
    assert row.locator(".last-signal").inner_text().startswith("BUY WEBL")
    web_env.bars("WEBL", "1d", one_bar(live_dep, 10))  # a live bar: another run
    page.wait_for_function("() => document.querySelector('#dep-live-dep .runs').textContent === '2'", timeout=30_000)
    assert row.locator(".status").inner_text() == "running"
    assert row.locator(".last-signal").inner_text().startswith("SELL WEBL")  # run 2 of the alternation
    assert "ok" in row.locator(".last-run").inner_text()
    assert row.locator(".errors").inner_text() == "0"
    assert page.evaluate("window.__marker") == "same page"  # nothing was reloaded
    assert page.problems == [] and page.foreign == []
    web_env.screenshot(page, "deployments")


def test_the_deployment_page_follows_runs_logs_signals_and_state_live(web_env, signed_in_page, live_dep):
    page = signed_in_page("alice")
    page.goto("/deployments/live-dep")
    page.wait_for_function(READY)
    page.wait_for_function("() => window.Plotly && document.querySelector('#chart').dataset.signals !== undefined")
    records = web_env.run(web_env.hosting("alice").runs("live-dep")).runs
    before = page.locator("#runs tbody tr").count()
    assert before == len(records) >= 2  # the history shown is the deployment's run records
    ok = runs_of(web_env, "live-dep")  # runs that ran (each one a BUY or SELL)
    page.evaluate("window.__marker = 'same page'")
    web_env.bars("WEBL", "1d", one_bar(live_dep, 11))
    page.wait_for_function(f"() => document.querySelectorAll('#runs tbody tr').length === {before + 1}", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#logs').textContent.includes('web run')", timeout=10_000)
    logs = page.locator("#logs").inner_text()
    assert f"web run {ok + 1} bars 5" in logs and "WEBL |" in logs
    page.wait_for_function("() => document.querySelector('#state-json').textContent.includes('runs')")
    state = json.loads(page.locator("#state-json").inner_text())
    assert state == {"WEBL": {"runs": ok + 1}}
    # every BUY/SELL of the runs is a marker on the chart, the live one included
    page.wait_for_function(f"() => document.querySelector('#chart').dataset.signals === '{ok + 1}'")
    traces = page.evaluate("() => document.getElementById('chart').data.map(t => [t.name, t.x.length])")
    assert sum(n for name, n in traces if name in ("BUY", "SELL")) == ok + 1
    # the 11 prices stored when the page opened (BARS, read by direct get), and the live bar's
    # (bars.> is exported read-only to tenant accounts)
    assert ["WEBL close", 12] in traces
    assert page.evaluate("window.__marker") == "same page"
    assert page.problems == [] and page.foreign == []
    web_env.screenshot(page, "deployment")


def test_the_deployment_page_diffs_two_versions(web_env, signed_in_page, live_dep):
    page = signed_in_page("alice")
    page.goto("/deployments/live-dep")
    page.select_option("#diff-a", "1")
    page.select_option("#diff-b", "2")
    page.click("#diff-go")
    page.wait_for_selector("#diff .add")
    assert 'print("web run v2", n, "bars", len(data))' in page.locator("#diff .add").first.inner_text()
    assert 'print("web run", n, "bars", len(data))' in page.locator("#diff .del").first.inner_text()
    assert "v1 (deployed)" in page.locator("#versions").inner_text()


def test_pause_from_the_page_and_see_a_resume_from_elsewhere_live(web_env, signed_in_page, live_dep):
    alice = web_env.hosting("alice")
    page = signed_in_page("alice")
    page.goto("/")
    page.wait_for_function(READY)
    page.click("#dep-live-dep button.act-pause")
    page.wait_for_function("() => document.querySelector('#dep-live-dep .status').textContent === 'paused'")
    assert web_env.run(alice.get_deployment("live-dep")).deployment.desired == "paused"
    # a resume by another client (the CLI, a script) reaches the open page through the KV watch
    web_env.run(alice.resume("live-dep"))
    page.wait_for_function("() => document.querySelector('#dep-live-dep .status').textContent === 'running'")
    assert page.problems == []


def test_a_second_user_does_not_see_the_first_users_deployments(web_env, signed_in_page, live_dep):
    bob = signed_in_page("bob")
    bob.goto("/")
    bob.wait_for_function(READY)
    assert bob.locator("#dep-live-dep").count() == 0
    assert "TENANT_B" in bob.locator("#tenant").inner_text()
    # alice's deployment runs while bob watches: nothing of it reaches bob's page
    runs = runs_of(web_env, "live-dep")
    web_env.bars("WEBL", "1d", one_bar(live_dep, 12))
    wait_until(lambda: runs_of(web_env, "live-dep") == runs + 1, 30)
    time.sleep(0.3)
    frames = bob.evaluate("window.__sse")
    assert not [f for f in frames if "live-dep" in f or "WEBL" in f]
    api = bob.evaluate("fetch('/api/deployments/live-dep').then(r => r.status)")
    assert api == 404
    assert bob.evaluate("fetch('/api/deployments').then(r => r.json())") == {"deployments": []}
    response = bob.goto("/deployments/live-dep")
    assert response.status == 404
    action = bob.evaluate("window.sn.post('/api/deployments/live-dep/pause')")
    assert action["status"] == 404
    assert web_env.run(web_env.hosting("alice").get_deployment("live-dep")).deployment.desired == "running"
    assert [p for p in bob.problems if "status of 404" not in p] == []  # the 404s asked for above


def test_no_secret_value_reaches_the_browser(web_env, signed_in_page):
    alice = web_env.hosting("alice")
    web_env.run(alice.set_secret("WEB_TOKEN", SECRET_VALUE))
    web_env.run(alice.put_strategy("web-secret", SECRET_STRATEGY))
    web_env.run(alice.create_deployment("secret-dep", strategy="web-secret", symbols=["WEBS"], timeframe="1d",
                                        lookback=3, secrets=["WEB_TOKEN"], env={"MODE": ENV_VALUE}))
    page = signed_in_page("alice")
    page.goto("/deployments/secret-dep")
    page.wait_for_function(READY)
    full = arrays(10, seed=5)
    web_env.bars("WEBS", "1d", bar_range(full, 0, 5))
    page.wait_for_function("() => document.querySelector('#logs').textContent.includes('token is')", timeout=30_000)
    assert "WEB_TOKEN" in page.locator("#secret-names").inner_text()
    assert "MODE" in page.locator("#env-names").inner_text()
    page.goto("/")
    page.wait_for_function(READY)
    page.goto("/fleet")
    received = [b.decode("utf-8", "replace") for b in page.bodies]
    frames = page.evaluate("window.__sse")  # this page's frames (the deployment page's were checked live)
    shown = page.content()
    for text in received + frames + [shown]:
        assert SECRET_VALUE not in text and ENV_VALUE not in text
    assert len(received) >= 5


def test_no_secret_value_in_the_deployment_pages_event_stream(web_env, signed_in_page):
    page = signed_in_page("alice")
    page.goto("/deployments/secret-dep")
    page.wait_for_function(READY)
    runs = runs_of(web_env, "secret-dep")
    web_env.bars("WEBS", "1d", one_bar(arrays(10, seed=5), 5))
    wait_until(lambda: runs_of(web_env, "secret-dep") == runs + 1, 30)
    page.wait_for_function("() => window.__sse.some(f => f.includes('token is'))", timeout=10_000)
    frames = page.evaluate("window.__sse")
    assert not [f for f in frames if SECRET_VALUE in f or ENV_VALUE in f]
    assert not [b for b in page.bodies if SECRET_VALUE.encode() in b or ENV_VALUE.encode() in b]


def test_a_run_nows_late_reply_does_not_undo_the_run_count_the_live_watch_showed(web_env, signed_in_page, live_dep):
    """The order CI once met under load: the run ends and its status reaches the page over the
    watch before the HTTP reply of the click does. That reply carries no status (Run now answers
    before its run ends), and the row must keep the newer count."""
    page = signed_in_page("alice")
    page.goto("/")
    page.wait_for_function(READY)
    runs = runs_of(web_env, "live-dep")
    held = []  # the click's request, answered by the node, its reply held back from the page
    page.route("**/api/deployments/live-dep/run", lambda route: held.append((route, route.fetch())))
    page.click("#dep-live-dep button.act-run")
    page.wait_for_function(f"() => document.querySelector('#dep-live-dep .runs').textContent === '{runs + 1}'",
                           timeout=30_000)
    assert len(held) == 1
    route, response = held[0]
    route.fulfill(response=response)
    page.wait_for_function("() => document.getElementById('flash').textContent === 'Run now live-dep: done'")
    assert page.locator("#dep-live-dep .runs").inner_text() == str(runs + 1)
    assert page.locator("#dep-live-dep .status").inner_text() == "running"
    page.unroute("**/api/deployments/live-dep/run")


def test_run_now_and_stop_from_the_page(web_env, signed_in_page, live_dep):
    alice = web_env.hosting("alice")
    page = signed_in_page("alice")
    page.goto("/")
    page.wait_for_function(READY)
    runs = runs_of(web_env, "live-dep")
    page.click("#dep-live-dep button.act-run")  # a manual run on the newest stored bar
    try:
        page.wait_for_function(f"() => document.querySelector('#dep-live-dep .runs').textContent === '{runs + 1}'",
                               timeout=30_000)
    except Exception as exc:  # say what the page and the node showed instead (seen once under load)
        records = web_env.run(alice.runs("live-dep")).runs
        raise AssertionError(
            f"the row's run count never read {runs + 1}: row {page.locator('#dep-live-dep .runs').inner_text()!r}, "
            f"node {runs_of(web_env, 'live-dep')}, flash {page.locator('#flash').inner_text()!r}, "
            f"manual records {sum(1 for r in records if r.manual)}, page problems {page.problems}") from exc
    assert [r for r in web_env.run(alice.runs("live-dep")).runs if r.manual]
    page.click("#dep-live-dep button.act-stop")
    page.wait_for_function("() => document.querySelector('#dep-live-dep .status').textContent === 'stopped'")
    assert web_env.run(alice.get_deployment("live-dep")).deployment.desired == "stopped"
    page.click("#dep-live-dep button.act-run")  # refused by the node: the reason is shown, nothing runs
    page.wait_for_function("() => document.getElementById('flash').textContent.includes('is stopped')")
    assert "error" in page.locator("#flash").get_attribute("class")
    assert runs_of(web_env, "live-dep") == runs + 1
    web_env.screenshot(page, "deployments-stopped")


def test_signing_in_in_the_browser_lands_on_the_page_asked_for(web_env, new_page):
    page = new_page(web_env)
    page.goto("/fleet")
    assert "/signin?next=%2Ffleet" in page.url
    page.fill("#user", web_env.users["bob"]["user"])
    page.fill("#password", "wrong")
    page.click("#signin")
    assert "NATS refused these credentials" in page.locator(".error").inner_text()
    web_env.screenshot(page, "signin")
    page.fill("#user", web_env.users["bob"]["user"])
    page.fill("#password", web_env.users["bob"]["password"])
    page.click("#signin")
    page.wait_for_url("**/fleet")
    assert "TENANT_B" in page.locator("#tenant").inner_text()
    assert [p for p in page.problems if "status of 401" not in p] == []  # the wrong password's answer
