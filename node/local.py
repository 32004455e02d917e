"""What nodes started by hand on one machine share and what each keeps to itself.

- The embedded nats-server keeps its JetStream store in a data directory that survives restarts
  (`EMBEDDED_NATS_STORE`, default `$XDG_DATA_HOME/strategy-node/nats`, i.e.
  `~/.local/share/strategy-node/nats`), so durable jobs, results and loaded bars outlive the node.
- A second `strategy-node run` finding a nats-server already on `EMBEDDED_NATS_PORT` joins it as
  another member of the `strategy-exec` queue group; something else on that port is refused.
- Each node's heartbeat file is its own: a node holds a lock beside its heartbeat file while it
  runs, and a node finding the file held by a live node uses `<file>.<node_id>` instead.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass, replace
from typing import IO, Mapping

from .config import Settings
from .embedded import EmbeddedServer

HOST = "127.0.0.1"


def default_store_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(base, "strategy-node", "nats")


def store_dir(settings: Settings, env: Mapping[str, str]) -> str:
    return settings.embedded_store or default_store_dir(env)


def probe(port: int, host: str = HOST, timeout: float = 1.0) -> str:
    """"free" when nothing listens on the port, "nats" when a nats-server greets, else "other"."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return "free"
    with sock:
        try:
            greeting = sock.recv(8)
        except OSError:
            return "other"
    return "nats" if greeting.startswith(b"INFO ") else "other"


class PortTaken(Exception):
    """EMBEDDED_NATS_PORT is held by something that is not a nats-server."""


@dataclass
class Broker:
    url: str
    server: EmbeddedServer | None  # None when this node joined a running server
    message: str


def broker(settings: Settings, env: Mapping[str, str]) -> Broker:
    """The embedded server this node starts, or the one on EMBEDDED_NATS_PORT it joins."""
    port = settings.embedded_port
    if port:
        found = probe(port)
        if found == "nats":
            url = f"nats://{HOST}:{port}"
            return Broker(url, None, f"joining the nats-server already listening on {url} as another node "
                                     f"of queue group strategy-exec (its data directory is that server's)")
        if found == "other":
            raise PortTaken(f"port {port} is taken by something that is not a nats-server; set "
                            f"EMBEDDED_NATS_PORT to a free port (0 picks one) or NATS_URL to a NATS server")
    data = store_dir(settings, env)
    os.makedirs(data, exist_ok=True)
    server = EmbeddedServer(port=port or None, host=HOST, store_dir=data).start()
    return Broker(server.url, server, f"embedded nats-server (JetStream) listening: NATS_URL={server.url}\n"
                                      f"data directory {data} (set EMBEDDED_NATS_STORE to move it; jobs, "
                                      f"results and bars stay there across restarts)")


@dataclass
class Heartbeat:
    path: str
    lock: IO[str] | None
    shared_default: bool  # False: a per-node file this node made, removed when it stops

    def release(self) -> None:
        if self.lock is None:
            return
        if not self.shared_default:
            for name in (self.path, self.path + ".lock"):
                try:
                    os.unlink(name)
                except OSError:
                    pass
        self.lock.close()
        self.lock = None


def claim_heartbeat(settings: Settings) -> tuple[Settings, Heartbeat]:
    """This node's own heartbeat file: the configured one unless a live node holds it."""
    configured = settings.heartbeat_file
    for path in (configured, f"{configured}.{settings.node_id}"):
        try:
            lock = open(path + ".lock", "a+", encoding="utf-8")
        except OSError:  # an unwritable directory: the node logs its heartbeat failures itself
            return settings, Heartbeat(configured, None, True)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()} {settings.node_id}\n")
        lock.flush()
        return replace(settings, heartbeat_file=path), Heartbeat(path, lock, path == configured)
    raise RuntimeError(f"cannot lock a heartbeat file beside {settings.heartbeat_file}")
