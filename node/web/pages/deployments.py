"""The Deployments page: one row per deployment with its live status, next fire, last run, last
signal and error count; Pause, Resume, Stop and Run now (the same control subjects as the CLI);
below them the tenant's quotas of hosted objects (`strategy.v1.quotas`, also `GET /api/quotas`).

Live: `/events/deployments` streams the tenant's status changes (a watch of its keys in KV
DEPLOYMENT_STATUS, `$KV.DEPLOYMENT_STATUS.<tenant>.*`) and its signals
(`signals.<tenant>.>`) as they are published.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contracts import Signal
from contracts.hosting import DeploymentStatus
from node.hosting import streams

from .. import live, views
from ..auth import require_user
from ..natsconn import hosting
from ..templates import render
from .common import PageError, checked_name, control, no_options

ACTIONS = {"pause", "resume", "stop", "run"}
SIGNAL_LOOKBACK_RUNS = 50
MAX_SIGNAL_LOOKUPS = 100
_status = msgspec.json.Decoder(DeploymentStatus)
_signal = msgspec.json.Decoder(Signal)


async def rows(request: Request) -> list[dict[str, Any]]:
    client = await hosting(request)
    reply = await control(client.list_deployments())

    async def last_signal(view: Any) -> dict[str, Any] | None:
        """The newest signal of its recent runs, when its last run had none (a HOLD)."""
        st = view.status
        if st is None or not st.signals or (st.last_run is not None and st.last_run.signal is not None):
            return None
        try:
            runs = (await client.runs(view.deployment.id, SIGNAL_LOOKBACK_RUNS)).runs
        except Exception:  # noqa: BLE001 - the row is still worth showing without it
            return None
        for run in reversed(runs):  # newest last
            if run.signal is not None:
                return {"symbol": run.symbol, **views.builtins(run.signal)}
        return None

    signals = await asyncio.gather(*(last_signal(v) for v in reply.deployments[:MAX_SIGNAL_LOOKUPS]))
    signals += [None] * (len(reply.deployments) - len(signals))
    return [views.row(v.deployment, v.status, s) for v, s in zip(reply.deployments, signals)]


AT_LIMIT = {"refused": "a new one is refused",
            "oldest_unused_dropped": "the oldest versions no deployment runs are dropped"}
QUOTA_LABELS = {"strategies": "Strategies", "versions_per_strategy": "Versions of one strategy",
                "deployments": "Deployments", "secrets": "Secrets"}


async def quotas(request: Request) -> list[dict[str, Any]]:
    """The signed-in tenant's quotas (the node counts them for the connection's NATS identity)."""
    reply = await control((await hosting(request)).quotas())
    return [{**msgspec.structs.asdict(q), "label": QUOTA_LABELS.get(q.name, q.name),
             "at_limit_text": AT_LIMIT.get(q.at_limit, q.at_limit), "full": q.used >= q.limit}
            for q in reply.quotas]


async def page(request: Request) -> Response:
    try:
        data, limits = await asyncio.gather(rows(request), quotas(request))
        error = None
    except PageError as exc:
        data, limits, error = [], [], exc.message
    return render(request, "deployments.html", rows=data, quotas=limits, error=error)


async def api_quotas(request: Request) -> Response:
    try:
        await no_options(request)
        return JSONResponse({"quotas": await quotas(request)})
    except PageError as exc:
        return exc.response()


async def api_list(request: Request) -> Response:
    try:
        await no_options(request)
        return JSONResponse({"deployments": await rows(request)})
    except PageError as exc:
        return exc.response()


async def api_one(request: Request) -> Response:
    try:
        dep_id = checked_name(request.path_params["id"])
        await no_options(request)
        client = await hosting(request)
        reply = await control(client.get_deployment(dep_id))
        return JSONResponse({"row": views.row(reply.deployment, reply.status),
                             "deployment": views.deployment(reply.deployment), "status": views.status(reply.status)})
    except PageError as exc:
        return exc.response()


async def api_action(request: Request) -> Response:
    """POST /api/deployments/{id}/{action}: pause, resume, stop or run (run now)."""
    try:
        dep_id = checked_name(request.path_params["id"])
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise PageError(404, "INVALID_REQUEST", f"unknown action {action!r}: one of {', '.join(sorted(ACTIONS))}")
        await no_options(request)
        client = await hosting(request)
        reply = await control(client.deployment(action, dep_id))
        out: dict[str, Any] = {"ok": True, "status": views.status(reply.status)}
        if reply.run_id:
            out["run_id"] = reply.run_id
        if reply.deployment is not None:
            out["row"] = views.row(reply.deployment, reply.status)
        return JSONResponse(out)
    except PageError as exc:
        return exc.response()


def status_event(key: str, value: bytes | None) -> live.Event | None:
    dep_id = key.split(".", 1)[1] if "." in key else key
    if value is None:
        return live.Event({"id": dep_id, "deleted": True}, "status")
    try:
        return live.Event(views.status(_status.decode(value)), "status")
    except msgspec.DecodeError:
        return None


def signal_event(tenant: str, msg: Any) -> live.Event | None:
    rest = msg.subject[len(f"signals.{tenant}."):]
    dep_id, _, symbol = rest.partition(".")
    try:
        signal = views.builtins(_signal.decode(msg.data))
    except msgspec.DecodeError:
        return None
    return live.Event({"id": dep_id, "symbol": symbol, **signal}, "signal")


async def events(request: Request) -> Response:
    user = await require_user(request)
    tenant = user.tenant
    statuses = live.mapped(await live.kv_changes(user.nc, streams.STATUS, f"{tenant}.*"), status_event)
    signals = live.mapped(await live.subject_events(user.nc, f"signals.{tenant}.>"),
                          lambda msg: signal_event(tenant, msg))
    return live.sse(request, live.ready(user.nc, live.merged(statuses, signals)))


routes = [
    Route("/", page, methods=["GET"]),
    Route("/deployments", page, methods=["GET"]),
    Route("/events/deployments", events, methods=["GET"]),  # not under /deployments/: any id is a page
    Route("/api/deployments", api_list, methods=["GET"]),
    Route("/api/quotas", api_quotas, methods=["GET"]),
    Route("/api/deployments/{id}", api_one, methods=["GET"]),
    Route("/api/deployments/{id}/{action}", api_action, methods=["POST"]),
]
