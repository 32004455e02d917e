"""The Fleet page: nodes from $SRV.INFO/$SRV.STATS, each node's isolation layers and pool from
its health, and the job/trigger backlogs from JetStream consumer info where the user may read
them. Also the README's one command: the dashboard against the embedded server (no auth) with
--insecure-local, no sign-in."""

from __future__ import annotations

import json

import msgspec

from contracts import Health, decode, subjects
from tests.node.hosting.support import arrays, bar_range, one_bar

READY = "() => document.body.dataset.live === 'ready'"


def health_of(env, user: str) -> Health:
    msg = env.run(env.nats(user).request(subjects.HEALTH, b"{}", timeout=5))
    return decode(msg.data, Health)


def test_the_fleet_page_shows_each_node_with_its_isolation_layers_and_pool(web_env, signed_in_page):
    health = health_of(web_env, "alice")
    web_env.run(web_env.nats("alice").request(subjects.VALIDATE, b'{"code": "def strategy(data):\\n    return 1\\n"}',
                                              timeout=10))
    page = signed_in_page("alice")
    page.goto("/fleet")
    card = page.locator(".node[data-node='web-node']")
    assert card.count() == 1
    text = card.inner_text()
    for layer in health.isolation:
        tag = card.locator(".layers .tag", has_text=layer.name)
        assert tag.count() >= 1, layer.name
        assert ("on" if layer.active else "off") in tag.first.get_attribute("class")
    assert f"target {health.pool.target}" in text and "healthy" in text
    assert "strategy.v1.validate" in text  # per-endpoint stats from $SRV.STATS
    assert "(1 node)" in page.locator("#node-count").inner_text()
    assert page.problems == [] and page.foreign == []
    web_env.screenshot(page, "fleet")


def test_a_tenant_is_told_the_backlogs_are_not_visible_to_its_nats_user(web_env, signed_in_page):
    page = signed_in_page("alice")
    page.goto("/fleet")
    rows = page.locator("#backlog tbody tr")
    assert rows.count() == 4
    for i in range(4):
        assert "not visible to your NATS user" in rows.nth(i).inner_text()


def test_the_fleet_api_answers_the_same_as_the_page(web_env, signed_in_page):
    page = signed_in_page("bob")
    data = page.evaluate("() => fetch('/api/fleet').then(r => r.json())")
    assert [n["node_id"] for n in data["nodes"]] == ["web-node"]
    assert data["nodes"][0]["health"]["isolation"]
    assert {b["consumer"] for b in data["backlog"]} == {"strategy-workers", "strategy-triggers", "strategy-fanout",
                                                         "strategy-fires"}


# -- the README's setup: embedded server without auth, --insecure-local -------------------------
def test_insecure_local_fleet_shows_the_backlogs_with_numbers(local_web_env, new_page):
    page = new_page(local_web_env)
    page.goto("/fleet")  # no sign-in on --insecure-local
    assert "/signin" not in page.url
    triggers = page.locator("#backlog tbody tr[data-stream='STRATEGY_TRIGGERS']")
    cells = triggers.locator("td.num")
    assert cells.count() == 4 and all(c.isdigit() for c in cells.all_inner_texts())
    assert page.locator(".node[data-node='web-node']").count() == 1
    assert page.problems == []


def test_insecure_local_deployment_page_draws_prices_and_reads_state(local_web_env, new_page):
    env = local_web_env
    client = env.hosting("local")
    env.run(client.put_strategy("local-s", "def strategy(data):\n    state['seen'] = len(data)\n    print('seen', len(data))\n    return 'BUY'\n"))
    env.run(client.create_deployment("local-dep", strategy="local-s", symbols=["LOC1"], timeframe="1d", lookback=4))
    full = arrays(12, seed=3)
    env.bars("LOC1", "1d", bar_range(full, 0, 8))
    page = new_page(env)
    page.goto("/")
    page.wait_for_function(READY)
    page.wait_for_function("() => document.querySelector('#dep-local-dep .runs').textContent === '1'", timeout=30_000)
    page.goto("/deployments/local-dep")
    page.wait_for_function(READY)
    # the local user may read KV and BARS: the state is there from the first paint, prices are drawn
    assert json.loads(page.locator("#state-json").inner_text()) == {"LOC1": {"seen": 4}}
    assert "LOC1 | seen 4" in page.locator("#logs").inner_text()  # the last day's logs, from STRATEGY_LOGS
    page.wait_for_function("() => window.Plotly && document.getElementById('chart').data")
    traces = page.evaluate("() => document.getElementById('chart').data.map(t => [t.name, t.x.length])")
    assert ["LOC1 close", 8] in traces and ["BUY", 1] in traces
    env.bars("LOC1", "1d", one_bar(full, 8))
    page.wait_for_function("() => document.getElementById('chart').dataset.signals === '2'", timeout=30_000)
    traces = page.evaluate("() => document.getElementById('chart').data.map(t => [t.name, t.x.length])")
    assert ["LOC1 close", 9] in traces  # the new bar extended the price line live
    assert page.problems == []
    assert msgspec.json.decode(page.locator("#page-data").text_content())["deployment"]["id"] == "local-dep"
    env.screenshot(page, "local-deployment")


def test_every_node_of_the_fleet_gets_its_own_card_with_its_own_health(local_web_env, new_page):
    from node.config import Settings
    from node.service import Node

    env = local_web_env
    second = Node(Settings.from_env({"NODE_ID": "web-node-2", "MAX_WORKERS": "1", "MAX_TIMEOUT_SECONDS": "10"}),
                  env.nats_url)
    env.run(second.start())
    try:
        page = new_page(env)
        page.goto("/fleet")
        assert "(2 nodes)" in page.locator("#node-count").inner_text()
        for node_id, workers in (("web-node", 2), ("web-node-2", 1)):
            card = page.locator(f".node[data-node='{node_id}']")
            assert f"max workers {workers}" in card.inner_text()  # each node's own health, asked by name
    finally:
        env.run(second.stop())


def test_insecure_local_visitors_share_one_nats_connection(local_web_env):
    from .support import Http

    sessions = local_web_env.app.state.sessions
    before = len(sessions._by_id)
    for _ in range(5):  # five visitors without a cookie: five sessions, not five NATS connections
        assert Http(local_web_env.url).get("/api/deployments").status_code == 200
    assert len(sessions._by_id) == before + 5
    assert len({id(s.user.nc) for s in sessions._by_id.values()}) == 1
    assert len(sessions.shared) == 1 and sessions.shared[0].nc.is_connected


def test_a_node_whose_discovery_reply_misses_the_wait_is_still_shown_from_its_health(web_env, monkeypatch):
    from node.web.pages import fleet as page

    gather = page.gather_replies
    monkeypatch.setattr(page, "gather_replies", lambda nc, subject, wait_s=0.0: gather(nc, subject, 0.0))
    data = web_env.run(page.fleet(web_env.nats("alice")))  # no $SRV reply can arrive in no time
    (node,) = data["nodes"]
    assert node["node_id"] == "web-node" and node["health"]["node_id"] == "web-node"
    assert node["health"]["isolation"] and "no $SRV.INFO reply" in node["discovery"]
