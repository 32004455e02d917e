"""Fixtures of the dashboard tests: everything real, shared for the whole session (CI budget).

* `web_env`: a nats-server with accounts (deploy/nats/permissions.conf: alice = NATS user
  `client` in account TENANT_A, bob = `client2` in TENANT_B), an in-process node with its
  sandbox, and the web app served by uvicorn on a free port of 127.0.0.1 with sign-in required
  (Secure cookies; no --insecure-local). All of it runs on one background event loop;
  `web_env.run(coro)` runs a coroutine there, `web_env.nats(user)` is a NATS connection as
  that user on that loop (for setting up strategies, deployments and bars as a client would),
  `web_env.bars(symbol, timeframe, arrays)` publishes bars to BARS as the README's loader does.
* `browser`: Debian's chromium driven by Playwright (launch pattern of
  tests/node/test_report_browser.py), one per module; skipped without /usr/bin/chromium
  outside CI.
* `local_web_env`: the same on the README's setup: a server without auth (the embedded one),
  a node, and the dashboard with --insecure-local (no sign-in; the anonymous user, tenant
  `local`); `new_page(env)` opens a recording page on either env without signing in.
* `signed_in_page(user)`: a fresh browser context signed in through the form as "alice" or
  "bob"; the page records console errors (`page.problems`), every response body it received
  (`page.bodies`, event streams included: a wrapper records each SSE frame) and
  `web_env.screenshot(page, name)` keeps a screenshot under `web_env.artifacts` (outside the
  repository: $WEB_ARTIFACTS or pytest's base temp dir).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from node.embedded import EmbeddedServer
from tests.deploy.support import PASSWORDS, PERMISSIONS_CONF, password_env

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
USERS = {"alice": "client", "bob": "client2"}
TENANTS = {"alice": "TENANT_A", "bob": "TENANT_B"}
INBOX = {"client": "_INBOX_client", "client2": "_INBOX_client2", "ingest": "_INBOX_ingest", "node": None}

# Records every event-stream frame the page receives, so a test can read what reached the browser.
SSE_RECORDER = """
(() => {
  window.__sse = [];
  const Original = window.EventSource;
  window.EventSource = function (url, opts) {
    const source = new Original(url, opts);
    const add = source.addEventListener.bind(source);
    source.addEventListener = (name, fn, o) => add(name, (e) => { window.__sse.push(e.data); fn(e); }, o);
    return source;
  };
})();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebEnv:
    def __init__(self, artifacts: Path, accounts: bool = True) -> None:
        self.artifacts = artifacts
        self.accounts = accounts  # False: the README's embedded server (no auth), --insecure-local
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="web-env", daemon=True)
        self.thread.start()
        self.server: EmbeddedServer | None = None
        self.node: Any = None
        self.uvicorn: Any = None
        self.app: Any = None
        self.url = ""
        self._conns: dict[str, Any] = {}
        self.users = {name: {"user": nats_user, "password": PASSWORDS[nats_user]} for name, nats_user in USERS.items()}
        self.tenants = dict(TENANTS)

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def nats_url(self) -> str:
        return self.server.url

    def start(self) -> "WebEnv":
        if self.accounts:
            self.server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
            with password_env():
                self.server.start()
        else:
            self.server = EmbeddedServer().start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        import uvicorn

        from node.config import Settings
        from node.service import Node
        from node.web.app import WebSettings, create_app, prepare

        settings = Settings.from_env({"NODE_ID": "web-node", "MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10",
                                      "SECRETS_KEY": "d2ViLXRlc3RzLWtleS0zMi1ieXRlcy1sb25nLW9rISE=",
                                      # the configmap's: the dashboard's backtest jobs push to the user's inbox
                                      "JOB_REPLY_PREFIXES": "TENANT_A=_INBOX_client,TENANT_B=_INBOX_client2"})
        self.node = Node(settings, self.server.url,
                         connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]} if self.accounts else None)
        await self.node.start()
        await asyncio.wait_for(self.node.hosting.ready.wait(), 30)
        port = free_port()
        web = WebSettings(nats_url=self.server.url, bind="127.0.0.1", port=port, insecure_local=not self.accounts)
        await prepare(web)  # reads the server's INFO: sign-in with accounts, the anonymous local user without
        self.app = create_app(web)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        self.uvicorn = uvicorn.Server(config)
        self._serving = asyncio.ensure_future(self.uvicorn.serve())
        while not self.uvicorn.started:
            await asyncio.sleep(0.02)
        self.url = f"http://127.0.0.1:{port}"

    async def _nats(self, name: str) -> Any:
        import nats

        nats_user = USERS.get(name, name)
        if not self.accounts:
            if "local" not in self._conns:
                self._conns["local"] = await nats.connect(self.server.url)
            return self._conns["local"]
        if nats_user not in self._conns:
            options: dict[str, Any] = {"user": nats_user, "password": PASSWORDS[nats_user], "allow_reconnect": False}
            if INBOX.get(nats_user):
                options["inbox_prefix"] = INBOX[nats_user]
            self._conns[nats_user] = await nats.connect(self.server.url, **options)
        return self._conns[nats_user]

    def nats(self, name: str) -> Any:
        """A NATS connection (on the background loop) as alice, bob or ingest."""
        return self.run(self._nats(name))

    def hosting(self, name: str) -> Any:
        from node.hosting.client import HostingClient

        return HostingClient(self.nats(name), tenant=self.tenants[name] if self.accounts else "local")

    def bars(self, symbol: str, timeframe: str, arrays: Any) -> None:
        """Publish bars to BARS as a loader does (`strategy-node bars load` / BarStore.load)."""
        from backtest.store import BarStore

        async def load() -> None:
            ingest = await self._nats("ingest" if self.accounts else "local")
            await BarStore(ingest.jetstream(), ingest).load(symbol, timeframe, arrays)

        self.run(load())

    def screenshot(self, page: Any, name: str) -> Path:
        path = self.artifacts / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        async def stop() -> None:
            for nc in self._conns.values():
                await nc.close()
            if self.uvicorn is not None:
                self.uvicorn.should_exit = True
                await asyncio.wait_for(self._serving, 10)
            if self.node is not None:
                await self.node.stop()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if self.server is not None:
                self.server.close()


@pytest.fixture(scope="package")  # gone before other packages' tests: its node's loop runs in a thread
def web_env(tmp_path_factory):
    artifacts = Path(os.environ.get("WEB_ARTIFACTS") or tmp_path_factory.getbasetemp() / "web-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    env = WebEnv(artifacts).start()
    yield env
    env.close()
    print(f"\ndashboard screenshots: {artifacts}")


@pytest.fixture(scope="package")
def local_web_env(tmp_path_factory):
    """The README's setup: a server without auth (the embedded one), a node, and the dashboard
    with --insecure-local (no sign-in: the anonymous local user, tenant `local`)."""
    artifacts = Path(os.environ.get("WEB_ARTIFACTS") or tmp_path_factory.getbasetemp() / "web-artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    env = WebEnv(artifacts, accounts=False).start()
    yield env
    env.close()


@pytest.fixture(scope="module")
def browser():
    """Per module, not per session: while Playwright's sync API is open its event loop counts as
    running in this thread, and every pytest-asyncio test after it would fail to start its own."""
    if os.environ.get("CI"):  # in CI a missing browser or driver fails the suite, never skips it
        import playwright.sync_api as sync_api
    else:
        if not os.path.exists(CHROMIUM):
            pytest.skip("no /usr/bin/chromium (apt-get install chromium; CI installs it)")
        sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser: Any, web_env: WebEnv) -> Any:
    """A new context and page that records problems and response bodies."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=web_env.url)
    context.add_init_script(SSE_RECORDER)
    page = context.new_page()
    page.problems, page.bodies, page.foreign = [], [], []
    page.on("console", lambda m: page.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(f"pageerror: {e}"))
    page.on("request", lambda r: page.foreign.append(r.url) if not r.url.startswith(web_env.url) else None)

    def keep(response: Any) -> None:
        if "text/event-stream" in (response.headers.get("content-type") or ""):
            return  # recorded frame by frame in the page (SSE_RECORDER)
        try:
            page.bodies.append(response.body())
        except Exception:  # noqa: BLE001 - a redirect or aborted response has no body
            pass

    page.on("response", keep)
    return page


def sign_in(page: Any, web_env: WebEnv, name: str) -> None:
    page.goto("/signin")
    page.fill("#user", web_env.users[name]["user"])
    page.fill("#password", web_env.users[name]["password"])
    page.click("#signin")
    page.wait_for_url(lambda url: "/signin" not in url)


@pytest.fixture
def new_page(browser):
    """new_page(env) -> a page on that env without signing in (closed after the test)."""
    opened = []

    def make(env: WebEnv) -> Any:
        page = open_page(browser, env)
        opened.append(page.context)
        return page

    yield make
    for context in opened:
        context.close()


@pytest.fixture
def signed_in_page(browser, web_env):
    """signed_in_page("alice") -> a Playwright page signed in as that user (closed after the test)."""
    opened = []

    def make(name: str = "alice") -> Any:
        page = open_page(browser, web_env)
        opened.append(page.context)
        sign_in(page, web_env, name)
        return page

    yield make
    for context in opened:
        context.close()
