"""The Fleet page: the nodes (NATS micro discovery `$SRV.INFO` / `$SRV.STATS` of the
`strategy-exec` service, answered by every node), each node's isolation layers and sandbox pool
(`strategy.v1.health.<node>`, or the one `strategy.v1.health` reply where the user may not ask a
node by name), and the job and trigger backlogs (JetStream consumer info of the shared durable
consumers, where the user's NATS permissions allow reading it).

Discovery is a request with many replies: every reply that arrives within GATHER_S is kept.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from contracts import Health, decode, subjects

from ..auth import require_user
from ..templates import render
from .common import PageError, no_options

GATHER_S = 0.6
HEALTH_S = 1.0
CONSUMERS = [  # (what, stream, durable consumer)
    ("durable jobs", "STRATEGY_JOBS", "strategy-workers"),
    ("hosted-run triggers", "STRATEGY_TRIGGERS", "strategy-triggers"),
    ("bar fan-out to deployments", "BARS", "strategy-fanout"),
    ("schedule fires", "STRATEGY_SCHEDULES", "strategy-fires"),
]


async def gather_replies(nc: Any, subject: str, wait_s: float = GATHER_S) -> list[dict[str, Any]]:
    """Every JSON reply to one request on `subject` that arrives within `wait_s`."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    replies: list[dict[str, Any]] = []
    try:
        await nc.publish(subject, b"", reply=inbox)
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub.next_msg(timeout=left)
            except Exception:  # noqa: BLE001 - the time is up
                break
            try:
                replies.append(json.loads(msg.data))
            except ValueError:
                continue
    finally:
        await sub.unsubscribe()
    return replies


async def health_of(nc: Any, node_id: str | None) -> dict[str, Any] | None:
    subject = subjects.node_health(node_id) if node_id else subjects.HEALTH
    try:
        msg = await nc.request(subject, b"{}", timeout=HEALTH_S)
        return msgspec.to_builtins(decode(msg.data, Health))
    except Exception:  # noqa: BLE001 - not permitted by name, or no answer
        return None


async def backlog(nc: Any) -> list[dict[str, Any]]:
    js = nc.jetstream(timeout=HEALTH_S)

    async def one(what: str, stream: str, consumer: str) -> dict[str, Any]:
        row: dict[str, Any] = {"what": what, "stream": stream, "consumer": consumer}
        try:
            info = await js.consumer_info(stream, consumer)
            row.update(pending=info.num_pending, ack_pending=info.num_ack_pending,
                       redelivered=info.num_redelivered, waiting=info.num_waiting)
        except Exception as exc:  # noqa: BLE001 - no such consumer, or not visible to this user
            missing = "not found" in str(exc).lower() or type(exc).__name__ == "NotFoundError"
            row["unavailable"] = "no such consumer (yet)" if missing else "not visible to your NATS user"
        return row

    return list(await asyncio.gather(*(one(*c) for c in CONSUMERS)))


async def fleet(nc: Any) -> dict[str, Any]:
    # all at once: discovery, the queue group's health answer and the backlogs (whose requests
    # a tenant may not make: they time out, so they must not wait behind the rest)
    infos, stats, any_health, backlogs = await asyncio.gather(
        gather_replies(nc, f"$SRV.INFO.{subjects.SERVICE_NAME}"),
        gather_replies(nc, f"$SRV.STATS.{subjects.SERVICE_NAME}"),
        health_of(nc, None), backlog(nc))
    stats_by_id = {s.get("id"): s for s in stats}
    nodes = []
    for info in sorted(infos, key=lambda i: (i.get("metadata") or {}).get("node_id", "")):
        meta = info.get("metadata") or {}
        st = stats_by_id.get(info.get("id"), {})
        endpoints = [{"name": e.get("name"), "subject": e.get("subject"), "requests": e.get("num_requests", 0),
                      "errors": e.get("num_errors", 0),
                      "average_ms": round((e.get("average_processing_time") or 0) / 1e6, 3)}
                     for e in st.get("endpoints") or []]
        nodes.append({"id": info.get("id"), "node_id": meta.get("node_id", ""), "version": info.get("version"),
                      "environment": meta.get("environment", ""), "started": st.get("started"),
                      "endpoints": [e for e in endpoints if e["requests"] or e["errors"]],
                      "requests": sum(e["requests"] for e in endpoints), "errors": sum(e["errors"] for e in endpoints)})
    # a node that answered health but whose discovery reply missed the window (a busy node):
    # shown from its health, never left off the page
    answered = any_health["node_id"] if any_health else None
    if answered and answered not in {n["node_id"] for n in nodes}:
        nodes.append({"id": None, "node_id": answered, "version": any_health.get("version"),
                      "environment": "", "started": None, "endpoints": [], "requests": 0, "errors": 0,
                      "discovery": "no $SRV.INFO reply within the page's wait"})
    # each other node by its own health subject (where the user may ask a node by name)
    healths = await asyncio.gather(*(health_of(nc, n["node_id"]) if n["node_id"] != answered else _same(any_health)
                                     for n in nodes))
    for node, health in zip(nodes, healths):
        node["health"] = health
    return {"nodes": nodes, "backlog": backlogs, "at": time.time()}


async def _same(value: Any) -> Any:
    return value


async def page(request: Request) -> Response:
    user = await require_user(request)
    return render(request, "fleet.html", data=await fleet(user.nc))


async def api_fleet(request: Request) -> Response:
    user = await require_user(request)
    try:
        await no_options(request)
    except PageError as exc:
        return exc.response()
    return JSONResponse(await fleet(user.nc))


routes = [
    Route("/fleet", page, methods=["GET"]),
    Route("/api/fleet", api_fleet, methods=["GET"]),
]
