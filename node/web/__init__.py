"""The web dashboard (`strategy-node web`): an optional process that serves hosted strategies and
backtests to a browser. It talks to the fleet only over NATS, as the signed-in person.

Stack: Starlette + uvicorn (a small, well-kept asyncio ASGI stack: the node is asyncio and
nats-py is asyncio, so one event loop serves HTTP, SSE and every user's NATS connection);
Jinja2 templates; plotly.js served from the installed plotly wheel (no CDN, no build step).

Public names other page modules build on
----------------------------------------

node.web.app
    ``WebSettings`` (nats_url, bind, port, insecure_local, ...) and
    ``create_app(settings: WebSettings) -> Starlette``: mounts the routes of every page module
    (``from node.web.pages import deployments, fleet, strategies, backtest``; each exposes
    ``routes: list[starlette.routing.BaseRoute]``), the sign-in routes and ``/static``.
    ``run(settings) -> int``: the uvicorn runner behind ``strategy-node web``.

node.web.auth
    ``async def require_user(request) -> User``: the signed-in user of the request; raises
    ``NotSignedIn`` (answered as a redirect to /signin for pages, 401 for APIs) when there is
    no session. The session gate middleware already refuses every route except /signin and
    /static without a session, so a page handler calls ``require_user`` to get the ``User``
    (``.name``, ``.tenant``, ``.account``).
    ``def csrf_token(request) -> str``: the session's CSRF token (templates get it as
    ``csrf_token`` and in ``<meta name="csrf-token">``).
    CSRF is checked by middleware on every request that is not GET/HEAD/OPTIONS: header
    ``X-CSRF-Token`` or form field ``csrf_token`` must equal the session's token, else 403.
    Sessions (node.web.sessions: User, Session, Sessions) live in the web process's memory (the
    NATS connection is there anyway): a restart of the web process only means signing in again.

node.web.natsconn
    ``async def user_nats(request) -> nats.aio.client.Client``: the signed-in user's own NATS
    connection, made with THEIR credentials at sign-in (tenant and permissions are NATS's).
    ``hosting(request) -> HostingClient`` over that connection, with the user's tenant.

node.web.templates
    ``render(request, name, **context) -> HTMLResponse``: renders ``templates/<name>`` (extend
    ``base.html``; blocks ``title``, ``content``, ``scripts``) with ``user``, ``csrf_token``
    and ``nav`` in the context.

node.web.live
    ``sse(request, events) -> Response``: Server-Sent Events from an async iterator of
    ``Event(data, event=None)`` (or plain dicts, sent as JSON); stops when the browser leaves.
    ``subject_events(nc, subject)``: messages of a NATS subject as they are published (a core
    subscription: imported streams such as signals/logs, and Key-Value changes on
    ``$KV.<bucket>.<key>``); ``kv_changes(nc, bucket, keys)``: a Key-Value watch of the keys'
    changes (every put/delete as it happens). Never polling loops.

Browser side: ``/static/app.js`` exposes ``window.sn = {csrf(), post(url, body), events(url, on)}``.

Tests: tests/node/web/conftest.py has ``web_env`` (a real nats-server with accounts for two
users, a running node, the web app served by uvicorn on a free port, both users' credentials),
``browser`` (Playwright chromium from /usr/bin/chromium) and ``signed_in_page(user)``.
"""
