"""A tenant account's deployment page in a real browser (Playwright driving /usr/bin/chromium),
against a real nats-server with the shipped accounts: alice (account TENANT_A, no JetStream of
its own) sees her deployment's current `state` and its earlier log lines at first paint (read
for her by the node: `deployments.state` / `deployments.logs`), and a new bar extends the
chart's price line live (`bars.>` exported read-only to tenants). Screenshot: tenant-deployment."""

from __future__ import annotations

import json

import pytest

from tests.node.hosting.support import arrays, bar_range, one_bar

from .support import wait_until

STRATEGY = """
def strategy(data):
    n = state.get("runs", 0) + 1
    state["runs"] = n
    print("tv run", n)
    return "HOLD"
"""
READY = "() => document.body.dataset.live === 'ready'"


@pytest.fixture(scope="module")
def ran_twice(web_env):
    """alice's deployment `tenant-view` on TVW1 1d, run twice before any page opens."""
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("tenant-view", STRATEGY))
    web_env.run(alice.create_deployment("tenant-view", strategy="tenant-view", symbols=["TVW1"], timeframe="1d",
                                        lookback=5))
    full = arrays(20, seed=23)
    web_env.bars("TVW1", "1d", bar_range(full, 0, 10))  # one run on the history's newest bar
    wait_until(lambda: _runs(web_env) >= 1, timeout=30)
    web_env.bars("TVW1", "1d", one_bar(full, 10))
    wait_until(lambda: _runs(web_env) >= 2, timeout=30)
    return full


def _runs(web_env) -> int:
    status = web_env.run(web_env.hosting("alice").get_deployment("tenant-view")).status
    return status.runs if status else 0


def test_a_tenants_deployment_page_shows_its_state_and_earlier_logs_at_first_paint(web_env, signed_in_page,
                                                                                   ran_twice):
    page = signed_in_page("alice")
    page.goto("/deployments/tenant-view")
    painted = json.loads(page.locator("#page-data").text_content())  # what the server rendered
    assert painted["state"] == {"TVW1": {"runs": 2}} and painted["state_error"] is None
    assert [line for logs in painted["logs"] for line in logs["lines"]] == ["tv run 1", "tv run 2"]
    assert json.loads(page.locator("#state-json").inner_text()) == {"TVW1": {"runs": 2}}
    logs = page.locator("#logs").inner_text()
    assert "TVW1 | tv run 1" in logs and "TVW1 | tv run 2" in logs
    assert page.locator("#state-note").is_hidden()
    assert "cannot read" not in page.content()
    assert page.problems == [] and page.foreign == []


def test_a_new_bar_extends_a_tenants_price_line_live(web_env, signed_in_page, ran_twice):
    page = signed_in_page("alice")
    page.goto("/deployments/tenant-view")
    page.wait_for_function(READY)
    page.wait_for_function("() => window.Plotly && document.getElementById('chart').data")
    closes = "() => document.getElementById('chart').data.find(t => t.name === 'TVW1 close').x.length"
    assert page.evaluate(closes) == 11
    page.evaluate("window.__marker = 'same page'")
    web_env.bars("TVW1", "1d", one_bar(ran_twice, 11))
    page.wait_for_function(f"() => ({closes})() === 12", timeout=30_000)
    last = page.evaluate("() => document.getElementById('chart').data.find(t => t.name === 'TVW1 close').y.at(-1)")
    assert last == pytest.approx(float(ran_twice.column("close")[11]))
    # the run on that bar follows live too: its log line and the state it left
    page.wait_for_function("() => document.querySelector('#logs').textContent.includes('tv run 3')", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#state-json').textContent.includes('3')")
    assert json.loads(page.locator("#state-json").inner_text()) == {"TVW1": {"runs": 3}}
    assert page.evaluate("window.__marker") == "same page"
    assert page.problems == [] and page.foreign == []
    web_env.screenshot(page, "tenant-deployment")


def test_another_tenant_cannot_open_the_page(web_env, signed_in_page, ran_twice):
    page = signed_in_page("bob")
    response = page.goto("/deployments/tenant-view")
    assert response.status == 404
    assert "tv run" not in page.content() and "TVW1" not in page.content()


def test_the_deployments_page_shows_the_tenants_own_quotas(web_env, signed_in_page, ran_twice):
    alice = {q.name: q for q in web_env.run(web_env.hosting("alice").quotas()).quotas}
    page = signed_in_page("alice")
    page.goto("/deployments")
    for name in ("strategies", "versions_per_strategy", "deployments", "secrets"):
        row = page.locator(f"#quota-{name}")
        assert row.locator(".used").inner_text() == str(alice[name].used), name
        assert row.locator(".limit").inner_text() == str(alice[name].limit), name
    assert alice["deployments"].used >= 1  # tenant-view, at least
    bob = {q.name: q.used for q in web_env.run(web_env.hosting("bob").quotas()).quotas}
    other = signed_in_page("bob")
    other.goto("/deployments")
    assert other.locator("#quota-deployments .used").inner_text() == str(bob["deployments"])
    assert page.problems == [] and other.problems == []
