"""One deployment: its run history and logs followed live, its signals on a price chart, its
`state`, env and secret names (never values), and its strategy's versions with a diff.

Live (`/deployments/{id}/events`): status and run records are watches of the tenant's keys in
KV DEPLOYMENT_STATUS / DEPLOYMENT_RUNS, state of DEPLOYMENT_STATE, logs and signals the
imported streams `strategy.logs.<tenant>.<id>` and `signals.<tenant>.<id>.>`, and its symbols'
new bar chunks on `bars.<timeframe>.<symbol>` (exported read-only to every tenant) extend the
price lines: each arrives as it is published, nothing is polled.

What the first paint reads, as the signed-in user: the deployment, status, newest runs, current
`state` (`deployments.state`) and last log lines (`deployments.logs`) by control request, which
the node answers for the verified NATS account only (the same as the CLI), and the price bars
from BARS (tenant accounts read it by direct get, exported read-only).
"""

from __future__ import annotations

import asyncio
import difflib
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from backtest.store import BarChunk, BarStore
from contracts.hosting import RunLogs, RunRecord
from node.hosting import streams

from .. import live, views
from ..auth import User, require_user
from ..natsconn import hosting
from ..templates import render
from .common import PageError, checked_name, control, no_options
from .deployments import signal_event, status_event

RUNS_SHOWN = 200
LOG_LINES = 500  # the last lines shown at first paint (deployments.logs)
CHART_BARS = 2000
CHART_SYMBOLS = 5
JETSTREAM_READ_S = 2.0
_run = msgspec.json.Decoder(RunRecord)
_logs = msgspec.json.Decoder(RunLogs)


class _StateEntry(msgspec.Struct):
    state: dict[str, Any] = {}


_state = msgspec.json.Decoder(_StateEntry)


_chunk = msgspec.msgpack.Decoder(BarChunk)


async def page(request: Request) -> Response:
    try:
        data = await snapshot(request)
    except PageError as exc:
        if exc.status == 404:
            return render(request, "not_found.html", what=f"deployment {request.path_params['id']!r}",
                          status_code=404)
        return render(request, "deployment.html", data=None, error=exc.message, dep_id=request.path_params["id"])
    return render(request, "deployment.html", data=data, error=None, dep_id=data["deployment"]["id"])


async def snapshot(request: Request) -> dict[str, Any]:
    dep_id = checked_name(request.path_params["id"])
    user = await require_user(request)
    client = await hosting(request)
    got = await control(client.get_deployment(dep_id))
    dep = got.deployment
    runs_reply, versions_reply, (state_reply, state_error), (logs_reply, logs_error), bars = await asyncio.gather(
        control(client.runs(dep_id, RUNS_SHOWN)), control(client.strategy_versions(dep.strategy)),
        _shown(client.state(dep_id)), _shown(client.logs(dep_id, LOG_LINES)), read_bars(user, dep))
    return {
        "deployment": views.deployment(dep),
        "status": views.status(got.status),
        "runs": [views.run(r) for r in runs_reply.runs],
        "versions": [{"version": v.version, "created_at": v.created_at, "style": v.style,
                      "description": v.description} for v in versions_reply.versions],
        "state": state_reply.states if state_reply else None,
        "state_omitted": state_reply.states_omitted if state_reply else [],
        "state_error": state_error,
        "bars": bars,
        "logs": [msgspec.to_builtins(logs) for logs in logs_reply.logs] if logs_reply else [],
        "logs_truncated": logs_reply.logs_truncated if logs_reply else False,
        "logs_error": logs_error,
    }


async def _shown(call: Any) -> tuple[Any, str | None]:
    """(reply, None), or (None, why) when the state or logs could not be read (e.g. a node of an
    older version answers no `deployments.state`): the page shows the rest, and says so."""
    try:
        return await control(call), None
    except PageError as exc:
        return None, exc.message


async def read_bars(user: User, dep: Any) -> dict[str, Any]:
    """The newest CHART_BARS closes of each symbol (where the user may read BARS), else {}."""
    out: dict[str, Any] = {}
    try:
        store = BarStore(user.nc.jetstream(), user.nc)
        for symbol in dep.symbols[:CHART_SYMBOLS]:
            info = await asyncio.wait_for(store.info(symbol, dep.timeframe), JETSTREAM_READ_S)
            span = (info.last_ns - info.first_ns) * min(1.0, CHART_BARS / max(info.bars, 1))
            arrays = await asyncio.wait_for(store.replay(symbol, dep.timeframe, int(info.last_ns - span)),
                                            JETSTREAM_READ_S * 2)
            ts = arrays.column("timestamp")[-CHART_BARS:]
            close = arrays.column("close")[-CHART_BARS:]
            out[symbol] = {"t": [int(x) // 1_000_000 for x in ts], "close": [float(x) for x in close]}
    except Exception:  # noqa: BLE001 - no bars, or no access to BARS for this user
        pass
    return out


async def api_diff(request: Request) -> Response:
    """GET /api/deployments/{id}/diff?a=1&b=2: a unified diff of two versions of its strategy."""
    try:
        dep_id = checked_name(request.path_params["id"])
        await no_options(request, ("a", "b"))
        try:
            a, b = int(request.query_params.get("a", "")), int(request.query_params.get("b", ""))
        except ValueError:
            raise PageError(400, "INVALID_REQUEST", "give two version numbers: ?a=1&b=2") from None
        if a < 1 or b < 1:
            raise PageError(400, "INVALID_REQUEST", "versions start at 1")
        client = await hosting(request)
        dep = (await control(client.get_deployment(dep_id))).deployment
        old, new = await asyncio.gather(control(client.get_strategy(dep.strategy, a)),
                                        control(client.get_strategy(dep.strategy, b)))
        diff = list(difflib.unified_diff(old.strategy.code.splitlines(), new.strategy.code.splitlines(),
                                         f"{dep.strategy} v{a}", f"{dep.strategy} v{b}", lineterm=""))
        return JSONResponse({"a": a, "b": b, "diff": diff})
    except PageError as exc:
        return exc.response()


def run_event(key: str, value: bytes | None) -> live.Event | None:
    if value is None:
        return None
    try:
        return live.Event(views.run(_run.decode(value)), "run")
    except msgspec.DecodeError:
        return None


def logs_event(msg: Any) -> live.Event | None:
    try:
        return live.Event(msgspec.to_builtins(_logs.decode(msg.data)), "logs")
    except msgspec.DecodeError:
        return None


def state_event(key: str, value: bytes | None) -> live.Event | None:
    symbol = key.split(".", 2)[2] if key.count(".") >= 2 else ""
    try:
        state = _state.decode(value).state if value else {}
    except msgspec.DecodeError:
        return None
    return live.Event({"symbol": symbol, "state": state}, "state")


def bars_event(msg: Any) -> live.Event | None:
    """A bar chunk of BARS (bars.<timeframe>.<symbol>) as the chart's new closes."""
    try:
        chunk = _chunk.decode(msg.data)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    ts, close = chunk.bars.column("timestamp"), chunk.bars.column("close")
    return live.Event({"symbol": chunk.symbol, "t": [int(x) // 1_000_000 for x in ts[-CHART_BARS:]],
                       "close": [float(x) for x in close[-CHART_BARS:]]}, "bars")


async def events(request: Request) -> Response:
    user = await require_user(request)
    dep_id = checked_name(request.path_params["id"])
    tenant, nc = user.tenant, user.nc
    sources = [
        live.mapped(await live.kv_changes(nc, streams.STATUS, f"{tenant}.{dep_id}"), status_event),
        live.mapped(await live.kv_changes(nc, streams.RUNS, f"{tenant}.{dep_id}.*"), run_event),
        live.mapped(await live.kv_changes(nc, streams.STATE, f"{tenant}.{dep_id}.>"), state_event),
        live.mapped(await live.subject_events(nc, f"strategy.logs.{tenant}.{dep_id}"), logs_event),
        live.mapped(await live.subject_events(nc, f"signals.{tenant}.{dep_id}.>"),
                    lambda msg: signal_event(tenant, msg)),
    ]
    # new bar chunks extend the chart's price lines (bars.> is exported read-only to tenants)
    dep = (await control((await hosting(request)).get_deployment(dep_id))).deployment
    for symbol in dep.symbols[:CHART_SYMBOLS]:
        sources.append(live.mapped(await live.subject_events(nc, f"bars.{dep.timeframe}.{symbol}"), bars_event))
    return live.sse(request, live.ready(nc, live.merged(*sources)))


async def _checked_events(request: Request) -> Response:
    try:
        return await events(request)
    except PageError as exc:
        return exc.response()


routes = [
    Route("/deployments/{id}", page, methods=["GET"]),
    Route("/deployments/{id}/events", _checked_events, methods=["GET"]),
    Route("/api/deployments/{id}/diff", api_diff, methods=["GET"]),
]
