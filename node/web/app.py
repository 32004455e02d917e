"""The dashboard's ASGI app (`create_app`) and its runner (`run`, behind `strategy-node web`).

The process holds no NATS credentials: every page acts over the signed-in person's own NATS
connection (node/web/natsconn.py). It refuses to start against a NATS server without auth
unless `--insecure-local`, which serves 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from . import auth, natsconn

log = logging.getLogger("node.web")

PAGE_MODULES = ("deployments", "deployment", "fleet", "strategies", "backtest")
LOOPBACK = "127.0.0.1"
SHUTDOWN_S = 5
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "connect-src 'self'; font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


class StartRefused(Exception):
    """`strategy-node web` will not start (printed as one line, exit code 2)."""


@dataclass
class WebSettings:
    nats_url: str = "nats://127.0.0.1:4222"
    bind: str = LOOPBACK
    port: int = 8080
    insecure_local: bool = False
    # Whether the NATS server asks for credentials (read from its INFO by `run`); False with
    # --insecure-local means the anonymous local user (no sign-in).
    auth_required: bool = True
    session_idle_s: float = 8 * 3600.0
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.insecure_local and not self.auth_required

    @property
    def secure_cookies(self) -> bool:
        # Secure unless --insecure-local over plain http on loopback (the browser would drop it)
        return not (self.insecure_local and not self.tls_cert)


def page_modules() -> list[Any]:
    """The page modules present (strategies/backtest are added by their own commits)."""
    found = []
    for name in PAGE_MODULES:
        try:
            found.append(importlib.import_module(f"node.web.pages.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"node.web.pages.{name}":
                raise
    return found


def _static_mounts() -> list[BaseRoute]:
    import plotly

    bundle = os.path.join(os.path.dirname(plotly.__file__), "package_data", "plotly.min.js")

    async def plotly_js(request: Request) -> Response:
        return FileResponse(bundle, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"})

    return [
        # plotly.js from the installed plotly wheel (no CDN); the rest from node/web/static/
        Route("/static/vendor/plotly.min.js", plotly_js, methods=["GET"]),
        Mount("/static", app=StaticFiles(packages=[("node.web", "static")]), name="static"),
    ]


class SecurityHeaders:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
            await send(message)

        await self.app(scope, receive, wrapped)


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith(("/api/", "/events/")) or request.method != "GET":
        return JSONResponse({"error": "not signed in"}, status_code=401)
    return RedirectResponse("/signin", status_code=303)


def create_app(settings: WebSettings) -> Starlette:
    routes: list[BaseRoute] = list(auth.routes)
    for module in page_modules():
        routes.extend(module.routes)
    routes.extend(_static_mounts())
    sessions = auth.Sessions(settings.session_idle_s)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await sessions.close_all()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders), Middleware(auth.SessionGate, sessions=sessions, settings=settings)],
        exception_handlers={auth.NotSignedIn: _not_signed_in},
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    return app


def check_bind(settings: WebSettings) -> None:
    if settings.insecure_local:
        try:
            loopback = ipaddress.ip_address(settings.bind).is_loopback
        except ValueError:
            loopback = settings.bind == "localhost"
        if not loopback:
            raise StartRefused(f"--insecure-local serves 127.0.0.1 only; --bind {settings.bind} is not loopback")


async def prepare(settings: WebSettings) -> None:
    """Read the NATS server's INFO: refuse a server without auth unless --insecure-local."""
    check_bind(settings)
    try:
        settings.auth_required = await natsconn.server_requires_auth(settings.nats_url)
    except natsconn.SignInRefused as exc:
        raise StartRefused(f"{exc}; start a node with `strategy-node run` or point --nats-url at one") from None
    if not settings.auth_required and not settings.insecure_local:
        raise StartRefused(
            f"the NATS server at {natsconn.safe_url(settings.nats_url)} has no credentials configured, so the "
            "dashboard could not tell people apart; configure NATS users (deploy/nats/permissions.conf), "
            "or run with --insecure-local to serve it on 127.0.0.1 only")


async def serve(settings: WebSettings, started: asyncio.Event | None = None) -> None:
    import uvicorn

    await prepare(settings)
    config = uvicorn.Config(create_app(settings), host=settings.bind, port=settings.port, log_level="warning",
                            ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key, lifespan="on",
                            proxy_headers=False, server_header=False,
                            timeout_graceful_shutdown=SHUTDOWN_S)  # open event streams end then
    server = uvicorn.Server(config)
    scheme = "https" if settings.tls_cert else "http"
    print(f"dashboard on {scheme}://{settings.bind}:{settings.port}/ (NATS {natsconn.safe_url(settings.nats_url)}"
          f"{', anonymous local user' if settings.anonymous else ', sign in with your NATS user'})", flush=True)
    await server.serve()
