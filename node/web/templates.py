"""Jinja2 templates of the dashboard (node/web/templates/, shipped as package data).

`render(request, name, **context)` renders a page that extends base.html: the navigation, the
signed-in user, a sign-out form and `<meta name="csrf-token">` (read by /static/app.js for POSTs).
Autoescaping is on for every template.
"""

from __future__ import annotations

from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from .auth import csrf_token

NAV = [("/", "Deployments"), ("/strategies", "Strategies"), ("/backtest", "Backtest"), ("/fleet", "Fleet")]

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("node.web", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    session = request.scope.get("session")
    page = _env.get_template(name).render(
        request=request,
        user=session.user if session else None,
        csrf_token=csrf_token(request),
        nav=NAV,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(page, status_code=status_code)
    response.headers["Cache-Control"] = "no-store"
    return response
