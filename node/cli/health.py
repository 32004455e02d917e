"""`strategy-node health`: ask a node for its health, or check this pod's node locally (--local)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .connect import strategy_client, client_parser
from .output import _emit_json


def register(sub: Any) -> None:
    p = client_parser(sub, "health", "ask a node for its health")
    p.add_argument("--ready", action="store_true",
                   help="exit 0 only when status is ok; asks this pod's node ($NODE_ID) when set (readiness probe)")
    p.add_argument("--node", help="ask this node id only (strategy.v1.health.<id>)")
    p.add_argument("--local", action="store_true",
                   help="liveness without asking NATS: this node's heartbeat file is fresh and says it is "
                        "connected (or disconnected for less than NATS_DISCONNECTED_EXIT_SECONDS)")
    p.add_argument("--max-age", type=float, default=20.0, help="with --local: seconds (default 20)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply (default 3)")
    p.set_defaults(func=cmd_health)


def local_liveness(path: str, max_age: float) -> int:
    """0 when this pod's node is alive: its heartbeat is fresh and it is on NATS (or has been
    off it for less than NATS_DISCONNECTED_EXIT_SECONDS). Reads only the file; never NATS."""
    from ..connectivity import check_heartbeat

    alive, why = check_heartbeat(path, max_age)
    print(why, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


async def cmd_health(args: argparse.Namespace) -> int:
    if args.local:
        from ..config import Settings

        return local_liveness(Settings.from_env().heartbeat_file, args.max_age)
    try:
        client = await strategy_client(args)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)  # CliError: one line naming the URL and the fix
        return 2
    try:
        node_id = args.node or (os.environ.get("NODE_ID") if args.ready else None)
        health = await client.health(timeout=args.timeout, node_id=node_id)
    except Exception as exc:  # noqa: BLE001
        print(f"no node answered on strategy.v1.health: {type(exc).__name__}", file=sys.stderr)
        return 2
    finally:
        await client.close()
    if args.json:
        _emit_json(health)
    else:
        print(f"{health.status}  node {health.node_id}  v{health.version}  up {health.uptime_s:.0f}s  "
              f"in flight {health.in_flight}, queued {health.queued}")
        print(f"pool: ready {health.pool.ready}, busy {health.pool.busy}, started {health.pool.started}")
        for layer in health.isolation:
            print(f"  [{'x' if layer.active else ' '}] {layer.name:<18} {layer.detail}")
    if args.ready:
        return 0 if health.status == "ok" else 1
    return 0 if health.status != "degraded" else 1
