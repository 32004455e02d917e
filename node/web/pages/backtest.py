"""The Backtest page: a strategy version over a series from BARS, optionally over a grid.

The form lists the user's strategies (registry, as the user) and what BARS holds (its index,
as `strategy-node bars ls` reads it). Running posts the form; the run is a set of durable jobs
published as the user (backtest_runs.py), followed on an SSE stream fed by the jobs' pushed
replies, and drawn by node/report.py — the same report `strategy-node backtest --report`
writes, with the sweep's heatmap — from the results stored in NATS.

Routes (the session is required everywhere; the POST needs the CSRF token too):

    GET  /backtest                        the page
    POST /backtest/run                    RunForm (JSON)  -> {ok, run, events, report}
    GET  /backtest/runs/{run}/events      SSE: progress {done, total, stage}, then done | failed
    GET  /backtest/runs/{run}/report      the report as an HTML fragment (figures as JSON, drawn
                                          by the page's plotly.js: the CSP runs no inline script)
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import BaseRoute, Route

from contracts import subjects
from contracts.hosting import StrategyRef, StrategyReply

from ...sweep import RANKABLE
from ..auth import csrf_token, require_user
from ..live import Event, sse
from ..natsconn import user_nats
from ..templates import render
from .backtest_runs import RunToken, follow_run, parse_form, report_fragment, start_run, stored_series
from .replies import Refused, failure, nats_request, ok

__all__ = ["routes"]

async def _page(request: Request):
    await require_user(request)
    nc = await user_nats(request)
    strategies, problems = [], []
    series_task = asyncio.ensure_future(stored_series(nc))
    try:
        listing = await nats_request(nc, f"{subjects.STRATEGIES}.list", StrategyRef(), StrategyReply)
        if listing.ok:
            strategies = [{"name": s.name, "latest": s.latest, "versions": list(range(s.latest, 0, -1))}
                          for s in listing.strategies]
        else:
            problems.append(f"strategies: {listing.error.message if listing.error else 'not listed'}")
    except Exception as exc:  # noqa: BLE001 - failure() re-raises anything that is not NATS
        problems.append(f"strategies: {_message(exc)}")
    try:
        series = await series_task
    except Exception:  # noqa: BLE001 - a tenant account may not read BARS' index: type the series
        series = None
    return render(request, "backtest.html", strategies=strategies, series=series, problems=problems,
                  rankable=sorted(RANKABLE), selected=request.query_params.get("strategy", ""))


def _error(exc: BaseException) -> dict[str, Any]:
    """The coded error of a NATS failure (anything else is re-raised)."""
    import json

    return json.loads(failure(exc).body)["error"]


def _message(exc: BaseException) -> str:
    return _error(exc)["message"]


async def _run(request: Request):
    await require_user(request)
    try:
        form = parse_form(await request.body())
        token = await start_run(await user_nats(request), form)
    except Exception as exc:  # noqa: BLE001 - failure() re-raises anything it does not code
        return failure(exc)
    run = token.encode(csrf_token(request))
    return ok(run=run, events=f"/backtest/runs/{run}/events", report=f"/backtest/runs/{run}/report",
              jobs=len(token.jobs), points=sum(j.points for j in token.jobs))


async def _events(request: Request):
    await require_user(request)
    try:
        token = RunToken.decode(request.path_params["run"], csrf_token(request))
    except Refused as exc:
        return failure(exc)
    nc = await user_nats(request)

    async def events() -> AsyncIterator[Event]:
        try:
            async for event in follow_run(nc, token):
                name = event.pop("event")
                yield Event(event, name)
        except Refused as exc:
            yield Event({"error": msgspec.to_builtins(exc.error)}, "failed")
        except Exception as exc:  # noqa: BLE001 - NATS failures become a coded event
            yield Event({"error": _error(exc)}, "failed")

    return sse(request, events())


async def _report(request: Request):
    await require_user(request)
    try:
        token = RunToken.decode(request.path_params["run"], csrf_token(request))
        fragment = await report_fragment(await user_nats(request), token)
    except Exception as exc:  # noqa: BLE001
        return failure(exc)
    return HTMLResponse(fragment, headers={"Cache-Control": "no-store"})


routes: list[BaseRoute] = [
    Route("/backtest", _page, methods=["GET"]),
    Route("/backtest/run", _run, methods=["POST"]),
    Route("/backtest/runs/{run}/events", _events, methods=["GET"]),
    Route("/backtest/runs/{run}/report", _report, methods=["GET"]),
]
