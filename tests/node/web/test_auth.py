"""Who you are: nothing answers without a session, sign-in is NATS's decision, cookies are
locked down, every state-changing request needs the CSRF token, and the dashboard will not
serve a NATS server without credentials except as --insecure-local on loopback."""

from __future__ import annotations

from pathlib import Path
import re
import subprocess
import sys
import time

import httpx
import pytest
from starlette.routing import Mount, Route

from .conftest import free_port
from .support import CSRF_META, Http, cookies_of, sign_in

ROOT = Path(__file__).resolve().parents[3]
PUBLIC = {"/signin", "/static", "/static/vendor/plotly.min.js"}  # the sign-in form and the assets only


def walk(app) -> list[tuple[str, str]]:
    """(method, concrete path) of every route of the app; path parameters filled with a name."""
    out = []
    for route in app.routes:
        if isinstance(route, Mount):
            out.append(("GET", route.path + "/app.css"))
            continue
        assert isinstance(route, Route), route
        path = re.sub(r"\{[^}]+\}", "x1", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, path))
    return out


def test_every_page_and_api_route_refuses_a_request_without_a_session(web_env):
    routes = walk(web_env.app)
    assert len(routes) >= 10  # the walk really covers the app (pages, APIs, event streams)
    http = Http(web_env.url)
    for method, path in routes:
        if path in PUBLIC or any(path.startswith(p + "/") for p in PUBLIC if p != "/signin"):
            continue
        for cookie in (None, "sn_session=forged.value.here"):
            headers = {"Cookie": cookie} if cookie else {}
            reply = http.client.request(method, path, headers=headers)
            if method == "GET" and not (path.startswith(("/api/", "/events/")) or path.endswith("/events")):
                assert reply.status_code == 303, (method, path, reply.status_code)
                assert reply.headers["location"].startswith("/signin"), (method, path)
            else:
                assert reply.status_code == 401, (method, path, reply.status_code)
            assert "TENANT_" not in reply.text


def test_public_routes_are_only_the_sign_in_form_and_static_assets(web_env):
    public = {route.path for route in web_env.app.routes
              if getattr(route, "path", "") in PUBLIC}
    assert public == PUBLIC
    assert httpx.get(web_env.url + "/static/app.css").status_code == 200


def test_wrong_password_is_refused_by_nats_and_starts_no_session(web_env):
    http = Http(web_env.url)
    token = CSRF_META.search(http.get("/signin").text).group(1)
    reply = http.post("/signin", data={"csrf_token": token, "user": "client", "password": "not-it"})
    assert reply.status_code == 401
    assert "NATS refused these credentials" in reply.text
    assert "sn_session" not in http.cookies
    assert http.get("/api/deployments").status_code == 401


@pytest.mark.parametrize("fields, status, says", [
    ({"user": "\x00", "password": "x"}, 401, "NATS refused these credentials"),
    ({"user": "a" * 5000, "password": "x"}, 400, "user: at most 1024 characters"),
    ({"token": "t\r\nPUB strategy.v1.deployments.delete 2\r\n{}\r\n"}, 401, "NATS refused these credentials"),
    ({"user": "client", "password": "p\r\nPING"}, 401, "NATS refused these credentials"),
    ({"user": "\u00fc", "password": "\u00e9"}, 401, "NATS refused these credentials"),
    ({"user": "", "token": ""}, 400, "give a NATS user and password, or a token"),
    ({"user": "client"}, 401, "NATS refused these credentials"),
])
def test_odd_sign_in_input_gets_a_clear_refusal_and_no_session(web_env, fields, status, says):
    http = Http(web_env.url)
    token = CSRF_META.search(http.get("/signin").text).group(1)
    reply = http.post("/signin", data={"csrf_token": token, **fields})
    assert reply.status_code == status and says in reply.text
    assert "sn_session" not in http.cookies


def test_session_cookie_is_httponly_samesite_strict_and_secure(web_env):
    http = Http(web_env.url)
    token = CSRF_META.search(http.get("/signin").text).group(1)
    reply = http.post("/signin", data={"csrf_token": token, **web_env.users["alice"]})
    assert reply.status_code == 303
    cookie = cookies_of(reply)["sn_session"]["sn_session"]
    assert cookie["httponly"] and cookie["secure"]
    assert cookie["samesite"].lower() == "strict"
    assert cookie.value not in reply.text


def test_the_tenant_is_the_nats_account_of_the_user(web_env):
    alice, bob = (sign_in(web_env.url, **web_env.users[n]) for n in ("alice", "bob"))
    assert '<b id="tenant">TENANT_A</b>' in alice.get("/").text
    assert '<b id="tenant">TENANT_B</b>' in bob.get("/").text
    assert 'name="tenant"' not in alice.get("/signin").text  # no form field could claim one


def test_a_post_without_the_csrf_token_is_refused(web_env):
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("csrf-s", "def strategy(data):\n    return 'HOLD'\n"))
    web_env.run(alice.create_deployment("csrf-dep", strategy="csrf-s", symbols=["CSRF1"], timeframe="1d"))
    http = sign_in(web_env.url, **web_env.users["alice"])
    other = sign_in(web_env.url, **web_env.users["alice"])
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": other.csrf()}):
        reply = http.post("/api/deployments/csrf-dep/pause", headers=headers)
        assert reply.status_code == 403, headers
    form = http.post("/api/deployments/csrf-dep/pause", data={"csrf_token": "wrong"})
    assert form.status_code == 403
    assert web_env.run(alice.get_deployment("csrf-dep")).deployment.desired == "running"
    # the same request with the session's token goes through
    reply = http.post("/api/deployments/csrf-dep/pause", headers={"X-CSRF-Token": http.csrf()})
    assert reply.status_code == 200 and reply.json()["status"]["state"] == "paused"
    assert web_env.run(alice.get_deployment("csrf-dep")).deployment.desired == "paused"


def test_the_sign_in_form_itself_needs_its_csrf_token(web_env):
    http = Http(web_env.url)
    http.get("/signin")
    reply = http.post("/signin", data={**web_env.users["alice"]})
    assert reply.status_code == 403
    stranger = Http(web_env.url)  # a token from another visitor's form does not fit this one's cookie
    token = CSRF_META.search(Http(web_env.url).get("/signin").text).group(1)
    stranger.get("/signin")
    assert stranger.post("/signin", data={"csrf_token": token, **web_env.users["alice"]}).status_code == 403


def test_sign_out_ends_the_session_and_its_cookie_no_longer_works(web_env):
    http = sign_in(web_env.url, **web_env.users["alice"])
    cookie = dict(http.cookies)
    assert http.get("/api/deployments").status_code == 200
    assert http.post("/signout", data={"csrf_token": http.csrf()}).status_code == 303
    replay = Http(web_env.url)
    replay.cookies = cookie
    assert replay.get("/api/deployments").status_code == 401


def test_sign_in_sends_you_back_only_within_the_site(web_env):
    for target, expected in (("/fleet", "/fleet"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
                             ("/\\evil.example", "/")):
        http = Http(web_env.url)
        token = CSRF_META.search(http.get("/signin").text).group(1)
        reply = http.post("/signin", data={"csrf_token": token, "next": target, **web_env.users["alice"]})
        assert reply.headers["location"] == expected, target


def test_an_oversized_request_body_is_refused_before_any_handler(web_env):
    http = sign_in(web_env.url, **web_env.users["alice"])
    reply = http.post("/api/deployments/x1/pause", headers={"X-CSRF-Token": http.csrf()},
                      content=b"x" * (2 << 20))
    assert reply.status_code == 413


# -- starting it --------------------------------------------------------------------------------
def web_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "node", "web", *args]


def test_the_dashboard_refuses_a_nats_server_without_credentials(nats_url):
    done = subprocess.run(web_command("--nats-url", nats_url, "--port", str(free_port())),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2
    assert "has no credentials configured" in done.stderr and "--insecure-local" in done.stderr


def test_insecure_local_binds_loopback_only(nats_url):
    done = subprocess.run(web_command("--nats-url", nats_url, "--insecure-local", "--bind", "0.0.0.0"),
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert done.returncode == 2 and "127.0.0.1 only" in done.stderr


def test_insecure_local_serves_the_local_user_on_loopback_and_still_checks_csrf(nats_url):
    port = free_port()
    proc = subprocess.Popen(web_command("--nats-url", nats_url, "--insecure-local", "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                first = httpx.get(base + "/fleet", timeout=5)
                break
            except httpx.ConnectError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert first.status_code == 200  # no sign-in: the anonymous local user
        cookie = cookies_of(first)["sn_session"]["sn_session"]
        assert cookie["httponly"] and cookie["samesite"].lower() == "strict"
        assert not cookie["secure"]  # plain http on loopback: a Secure cookie would be dropped
        http = Http(base)
        http.cookies = {"sn_session": cookie.value}
        assert http.post("/api/deployments/x1/pause").status_code == 403
    finally:
        proc.terminate()
        proc.wait(10)
