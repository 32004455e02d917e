"""The JSON routes behind the Deployments pages, as a script would call them: options a route
does not take are refused by name (never ignored), bad input is a coded client error (never a
500 or INTERNAL), every page is served with a CSP that runs no inline script, and a page that is
left drops its NATS subscriptions."""

from __future__ import annotations

import time

import pytest

from tests.node.hosting.support import arrays, bar_range, one_bar

from .support import sign_in, wait_until


@pytest.fixture(scope="module")
def alice_http(web_env):
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("api-s", "def strategy(data):\n    return 'HOLD'\n"))
    web_env.run(alice.create_deployment("api-dep", strategy="api-s", symbols=["API1"], timeframe="1d"))
    http = sign_in(web_env.url, **web_env.users["alice"])
    yield http
    http.close()


def test_an_action_refuses_options_it_does_not_take_and_names_them(web_env, alice_http):
    token = alice_http.csrf()
    reply = alice_http.post("/api/deployments/api-dep/pause", headers={"X-CSRF-Token": token},
                            json={"limit": 5, "force": True})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["code"] == "INVALID_REQUEST" and "'force'" in error["message"] and "'limit'" in error["message"]
    assert web_env.run(web_env.hosting("alice").get_deployment("api-dep")).deployment.desired == "running"


def test_a_read_refuses_unknown_query_parameters_and_names_them(alice_http):
    for path in ("/api/deployments?tenant=TENANT_B", "/api/quotas?tenant=TENANT_B",
                 "/api/deployments/api-dep?verbose=1", "/api/fleet?all=1",
                 "/api/deployments/api-dep/diff?a=1&b=1&context=9"):
        reply = alice_http.get(path)
        assert reply.status_code == 400, path
        assert reply.json()["error"]["code"] == "INVALID_REQUEST"
        assert path.rsplit("?", 1)[1].split("&")[-1].split("=")[0] in reply.json()["error"]["message"]


@pytest.mark.parametrize("path", [
    "/api/deployments/" + "a" * 65, "/api/deployments/bad.id", "/api/deployments/%2e%2e",
    "/api/deployments/api-dep/diff?a=x&b=1", "/api/deployments/api-dep/diff?a=0&b=1",
    "/api/deployments/api-dep/diff?a=1&b=99", "/api/deployments/nope/diff?a=1&b=1",
])
def test_bad_input_is_a_coded_client_error(alice_http, path):
    reply = alice_http.get(path)
    assert 400 <= reply.status_code < 500, (path, reply.status_code, reply.text)
    assert reply.json()["error"]["code"] == "INVALID_REQUEST"


def test_an_unknown_action_is_refused_and_nothing_happens(web_env, alice_http):
    reply = alice_http.post("/api/deployments/api-dep/delete", headers={"X-CSRF-Token": alice_http.csrf()})
    assert reply.status_code == 404 and "unknown action 'delete'" in reply.json()["error"]["message"]
    assert web_env.run(web_env.hosting("alice").get_deployment("api-dep")).deployment.id == "api-dep"


def test_pages_are_served_with_a_policy_that_runs_no_inline_script(alice_http):
    for path in ("/", "/deployments/api-dep", "/fleet", "/signin"):
        reply = alice_http.get(path)
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
        assert "frame-ancestors 'none'" in policy and reply.headers["x-content-type-options"] == "nosniff"
        assert "<script>" not in reply.text  # page data travels as application/json, never as inline code


def test_leaving_a_page_drops_its_nats_subscriptions(web_env, signed_in_page):
    page = signed_in_page("alice")
    page.goto("/fleet")
    session = next(s for s in web_env.app.state.sessions._by_id.values()
                   if s.csrf == page.evaluate("() => window.sn.csrf()"))
    nc = session.user.nc
    idle = len(nc._subs)
    page.goto("/deployments/api-dep")
    page.wait_for_function("() => document.body.dataset.live === 'ready'")
    assert len(nc._subs) >= idle + 5  # status, runs, state, logs and signals
    page.goto("/fleet")
    deadline = time.monotonic() + 10
    while len(nc._subs) > idle and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(nc._subs) == idle


def test_the_last_signal_outlives_a_hold_in_the_list(web_env, alice_http):
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("api-hold", "def strategy(data):\n    return 'BUY' if len(data) < 6 else 'HOLD'\n"))
    web_env.run(alice.create_deployment("api-hold", strategy="api-hold", symbols=["APIH"], timeframe="1d", lookback=10))
    full = arrays(8, seed=4)
    web_env.bars("APIH", "1d", bar_range(full, 0, 5))  # 5 bars: BUY
    wait_until(lambda: (web_env.run(alice.get_deployment("api-hold")).status.runs == 1))
    web_env.bars("APIH", "1d", one_bar(full, 5))  # 6 bars: HOLD
    wait_until(lambda: (web_env.run(alice.get_deployment("api-hold")).status.runs == 2))
    row = next(r for r in alice_http.get("/api/deployments").json()["deployments"] if r["id"] == "api-hold")
    assert row["last_run"]["signal"] is None  # the newest run held
    assert row["last_signal"]["type"] == "BUY" and row["last_signal"]["symbol"] == "APIH"


def test_a_deployment_may_be_called_events(web_env, alice_http):
    alice = web_env.hosting("alice")
    web_env.run(alice.create_deployment("events", strategy="api-s", symbols=["API2"], timeframe="1d"))
    page = alice_http.get("/deployments/events")
    assert page.status_code == 200 and 'id="dep-id">events<' in page.text
    assert alice_http.get("/api/deployments/events").json()["deployment"]["id"] == "events"


def quota_counts(quotas) -> dict:
    return {q["name"]: (q["used"], q["limit"]) for q in quotas}


def test_the_quotas_route_gives_the_signed_in_tenants_own_counts(web_env, alice_http):
    alice, bob = web_env.hosting("alice"), web_env.hosting("bob")
    web_env.run(bob.put_strategy("bob-quota", "def strategy(data):\n    return 'HOLD'\n"))
    reply = alice_http.get("/api/quotas")
    assert reply.status_code == 200, reply.text
    shown = quota_counts(reply.json()["quotas"])
    mine = {q.name: (q.used, q.limit) for q in web_env.run(alice.quotas()).quotas}
    assert shown == mine and shown["deployments"][0] >= 1  # api-dep, at least
    bob_http = sign_in(web_env.url, **web_env.users["bob"])
    try:
        bobs = quota_counts(bob_http.get("/api/quotas").json()["quotas"])
    finally:
        bob_http.close()
    assert bobs == {q.name: (q.used, q.limit) for q in web_env.run(bob.quotas()).quotas}
    assert bobs["strategies"][0] >= 1
