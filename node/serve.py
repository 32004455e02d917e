"""`strategy-node run`: settings, an embedded nats-server when no NATS_URL, the node, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .config import Settings
from . import local
from .embedded import EmbeddedServer
from .logs import setup
from .service import Node

log = logging.getLogger("node")


async def serve(settings: Settings) -> int:
    embedded: EmbeddedServer | None = None
    url = settings.nats_url
    if url is None:  # node/local.py: a persistent data directory, or join the server on the port
        try:
            found = local.broker(settings, os.environ)
        except local.PortTaken as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 2
        except (OSError, RuntimeError, TimeoutError) as exc:  # no binary, unwritable data directory ...
            print(f"error: cannot start the embedded nats-server: {exc} (data directory: "
                  f"{local.store_dir(settings, os.environ)}; set EMBEDDED_NATS_STORE, or NATS_URL to use "
                  f"a running server)", file=sys.stderr, flush=True)
            return 2
        embedded, url = found.server, found.url
        print(found.message, flush=True)
    configured = settings.heartbeat_file
    settings, heartbeat = local.claim_heartbeat(settings)  # each node's heartbeat file is its own
    if heartbeat.path != configured:
        print(f"heartbeat file {heartbeat.path} (another node holds the configured one)", flush=True)
    try:  # a heartbeat left by a previous container (/tmp survives restarts in a pod) is not ours
        os.unlink(settings.heartbeat_file)
    except OSError:
        pass
    node = Node(settings, url, connect_env=dict(os.environ))
    try:
        await node.start()
    except Exception as exc:  # noqa: BLE001
        log.error("node failed to start: %s", exc)
        await node.pool.close()
        heartbeat.release()
        if embedded:
            embedded.close()
        return 1
    node.install_signal_handlers()
    print(f"strategy node {settings.node_id} ready on {url} (subjects strategy.v1.*)", flush=True)
    await node.wait_stopped()
    heartbeat.release()
    if embedded:
        embedded.close()
    return node.exit_code  # 1 when the node stopped because it lost NATS: the orchestrator restarts it


def run() -> int:
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    setup(settings.log_level, json_lines=os.environ.get("LOG_FORMAT", "").lower() == "json"
          or settings.environment == "production")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; Windows lacks it
        return asyncio.run(serve(settings))
    return uvloop.run(serve(settings))
