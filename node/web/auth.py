"""Who you are: sign-in with NATS credentials, sessions, the session gate and CSRF.

* Sign-in takes a NATS user + password (or a token); the web process connects to NATS as that
  person (node/web/natsconn.py). Wrong credentials are refused by NATS, not by us.
* Sessions (node/web/sessions.py) live in this process's memory. The cookie is HttpOnly,
  SameSite=Strict and Secure, except with --insecure-local on http loopback, where browsers
  would drop a Secure cookie.
* The session gate (middleware) lets nothing but /signin and /static through without a session:
  pages answer 303 to /signin, APIs (paths under /api/ and event streams) 401.
  With --insecure-local on a server without auth, a visitor gets a session of the anonymous
  local user on first contact (still a cookie, so CSRF still binds every POST to this origin).
* CSRF: every request that is not GET/HEAD/OPTIONS must carry the session's token in header
  `X-CSRF-Token` or form field `csrf_token` (403 otherwise). Before sign-in the token is the
  value of a signed pre-session cookie (double submit), so the sign-in form is covered too.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from . import natsconn
from .sessions import Session, Sessions, User

__all__ = ["NotSignedIn", "Session", "SessionGate", "Sessions", "User", "csrf_token", "require_user", "routes"]

SESSION_COOKIE = "sn_session"
PRE_COOKIE = "sn_pre"  # the CSRF token of the sign-in form, before there is a session
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PREFIXES = ("/static/",)
PUBLIC_PATHS = frozenset({"/signin"})
MAX_BODY = 1 << 20  # request bodies above 1 MiB are refused before any handler runs
MAX_FIELD = 1024  # a sign-in field


class NotSignedIn(Exception):
    """No session: pages redirect to /signin, APIs answer 401."""


def _cookie_kwargs(settings: Any) -> dict[str, Any]:
    return dict(httponly=True, samesite="strict", secure=settings.secure_cookies, path="/")


def _is_api(path: str) -> bool:
    return path.startswith(("/api/", "/events/")) or path.endswith("/events")


class SessionGate:
    """ASGI middleware: the session gate, body limit and CSRF check (see the module docstring)."""

    def __init__(self, app: Any, sessions: Sessions, settings: Any) -> None:
        self.app = app
        self.sessions = sessions
        self.settings = settings
        self._anon: User | None = None
        self._anon_lock = asyncio.Lock()

    async def _anonymous(self) -> User:
        """The one anonymous local user of --insecure-local: one NATS connection for all its
        sessions (a visitor without a cookie must not open a connection per request)."""
        async with self._anon_lock:
            if self._anon is None or self._anon.nc.is_closed:
                self._anon = await anonymous_user(self.settings)
                self.sessions.shared.append(self._anon)
            return self._anon

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        method = scope["method"]
        cookies = Request(scope).cookies
        session = self.sessions.find(cookies.get(SESSION_COOKIE))
        public = path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)
        set_cookie: str | None = None
        if session is None and not public and self.settings.anonymous:
            session = await self.sessions.start(await self._anonymous())
            set_cookie = self.sessions.cookie_of(session)
        if session is None and not public:
            response: Response
            if _is_api(path) or method not in SAFE_METHODS:
                response = JSONResponse({"error": "not signed in"}, status_code=401)
            else:
                target = path + (f"?{scope['query_string'].decode()}" if scope.get("query_string") else "")
                response = RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
            await response(scope, receive, send)
            return
        scope["session"] = session
        if method not in SAFE_METHODS:
            body, too_big = await _read_body(receive)
            if too_big:
                await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
                return
            expected = session.csrf if session else self.sessions.pre_token(cookies.get(PRE_COOKIE))
            given = Headers(scope=scope).get(CSRF_HEADER) or _form_token(scope, body)
            if not expected or not given or not hmac.compare_digest(expected, given):
                await JSONResponse({"error": "CSRF token missing or wrong"}, status_code=403)(scope, receive, send)
                return
            receive = _replay(body)
        if set_cookie is not None:
            send = _with_cookie(send, SESSION_COOKIE, set_cookie, self.settings)
        await self.app(scope, receive, send)


async def _read_body(receive: Any) -> tuple[bytes, bool]:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", True
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks), False


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


def _form_token(scope: dict, body: bytes) -> str | None:
    content_type = Headers(scope=scope).get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        values = parse_qs(body.decode("latin-1"), keep_blank_values=True).get(CSRF_FIELD)
        return values[0] if values else None
    if content_type.startswith("multipart/form-data"):
        import re

        found = re.search(rb'name="csrf_token"\r\n\r\n([A-Za-z0-9_\-]{1,128})\r\n', body)
        return found.group(1).decode() if found else None
    return None


def _with_cookie(send: Any, name: str, value: str, settings: Any) -> Any:
    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start":
            response = Response()
            response.set_cookie(name, value, **_cookie_kwargs(settings))
            message.setdefault("headers", [])
            message["headers"] = list(message["headers"]) + [
                (k, v) for k, v in response.raw_headers if k == b"set-cookie"]
        await send(message)

    return wrapped


async def anonymous_user(settings: Any) -> User:
    """--insecure-local on a server without auth: the one local user, no credentials."""
    nc = await natsconn.connect_as(settings.nats_url, natsconn.Credentials())
    return User(name="local", tenant="local", account=None, nc=nc, anonymous=True)


async def require_user(request: Request) -> User:
    """The signed-in user of this request; NotSignedIn when there is no session."""
    session = request.scope.get("session")
    if session is None:
        raise NotSignedIn()
    return session.user


def csrf_token(request: Request) -> str:
    """The session's CSRF token (or the sign-in form's pre-session token)."""
    session = request.scope.get("session")
    if session is not None:
        return session.csrf
    return request.scope.get("pre_csrf", "")


def current_session(request: Request) -> Session | None:
    return request.scope.get("session")


# -- routes -----------------------------------------------------------------------------------
async def signin_form(request: Request, error: str | None = None, status: int = 200, next_: Any = None) -> Response:
    from .templates import render

    settings = request.app.state.settings
    if current_session(request) is not None and error is None:
        return RedirectResponse(_next_of(request), status_code=303)
    sessions: Sessions = request.app.state.sessions
    # the same visitor keeps one token (a second form load, e.g. another tab, must not void the first)
    token = sessions.pre_token(request.cookies.get(PRE_COOKIE)) or secrets.token_urlsafe(32)
    request.scope["pre_csrf"] = token
    response = render(request, "signin.html", error=error, next=_next_of(request, next_),
                      nats_url=natsconn.safe_url(settings.nats_url), status_code=status)
    response.set_cookie(PRE_COOKIE, sessions.pre_cookie(token), max_age=3600,
                        **_cookie_kwargs(settings))
    return response


async def signin(request: Request) -> Response:
    settings = request.app.state.settings
    sessions: Sessions = request.app.state.sessions
    form = await request.form()
    creds = natsconn.Credentials(user=str(form.get("user", "")).strip(), password=str(form.get("password", "")),
                                 token=str(form.get("token", "")).strip(),
                                 inbox_prefix=str(form.get("inbox_prefix", "")).strip())
    if not creds.user and not creds.token:
        return await signin_form(request, "give a NATS user and password, or a token", status=400,
                                 next_=form.get("next"))
    too_long = [name for name in ("user", "password", "token", "inbox_prefix") if len(getattr(creds, name)) > MAX_FIELD]
    if too_long:  # NATS reads its CONNECT line up to 4 KiB: a longer one is dropped, not refused
        return await signin_form(request, f"{', '.join(too_long)}: at most {MAX_FIELD} characters", status=400,
                                 next_=form.get("next"))
    try:
        nc = await natsconn.connect_as(settings.nats_url, creds)
    except natsconn.SignInRefused as exc:
        return await signin_form(request, str(exc), status=401, next_=form.get("next"))
    tenant, account = await natsconn.tenant_of(nc)
    old = current_session(request)
    if old is not None:
        await sessions.end(old)
    session = await sessions.start(User(name=creds.user or "token user", tenant=tenant, account=account, nc=nc))
    response = RedirectResponse(_next_of(request, form.get("next")), status_code=303)
    response.set_cookie(SESSION_COOKIE, sessions.cookie_of(session), **_cookie_kwargs(settings))
    response.delete_cookie(PRE_COOKIE, path="/")
    return response


async def signout(request: Request) -> Response:
    session = current_session(request)
    if session is not None:
        await request.app.state.sessions.end(session)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _next_of(request: Request, value: Any = None) -> str:
    target = str(value or request.query_params.get("next") or "/")
    # only a path of this site: never //other.host or a scheme
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def signin_get(request: Request) -> Response:
    return await signin_form(request)


routes = [
    Route("/signin", signin_get, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", signout, methods=["POST"]),
]
