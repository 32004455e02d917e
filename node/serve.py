"""`strategy-node run`: settings, an embedded nats-server when no NATS_URL, the node, signals."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from .config import Settings
from .embedded import EmbeddedServer, free_port
from .logs import setup
from .service import Node

log = logging.getLogger("node")


async def serve(settings: Settings) -> int:
    embedded: EmbeddedServer | None = None
    url = settings.nats_url
    if url is None:
        port = settings.embedded_port
        if port:
            try:
                import socket

                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    port = free_port()  # something already listens there
            except OSError:
                pass
        embedded = EmbeddedServer(port=port or None, store_dir=settings.embedded_store).start()
        url = embedded.url
        print(f"embedded nats-server (JetStream) listening: NATS_URL={url}", flush=True)
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
        if embedded:
            embedded.close()
        return 1
    node.install_signal_handlers()
    print(f"strategy node {settings.node_id} ready on {url} (subjects strategy.v1.*)", flush=True)
    await node.wait_stopped()
    if embedded:
        embedded.close()
    return 0


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
