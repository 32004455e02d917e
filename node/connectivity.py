"""Is the node on NATS? Its connection state, the heartbeat file and the local liveness check.

A node is connected and serving, or it exits so the orchestrator replaces it:

* nats-py closes a connection for good after any server error it treats as fatal (a
  max-payload violation, an authorization violation, ...) and calls `closed_cb`: the node has
  no subscriptions left, so it stops at once (exit status 1);
* a connection that stays disconnected longer than `NATS_DISCONNECTED_EXIT_SECONDS` (nats-py
  keeps reconnecting forever) also stops the node with status 1, after it drained what it could;
* so does a connection that says connected while its read loop has ended (two heartbeats in a
  row): nothing would arrive on it again (node/nats_internals.py `read_loop_alive`).

The heartbeat file (HEARTBEAT_FILE, rewritten every second) carries this state as one JSON
object, and `strategy-node health --local` (the liveness probe) fails when the file is stale,
when the connection was closed, or when it has been disconnected longer than the limit: the
probe fails as soon as the node starts stopping for it, before the process exits.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass


@dataclass
class Connectivity:
    """The node's NATS connection as the liveness probe sees it (wall-clock times)."""

    exit_after_s: float
    connected: bool = False
    closed: bool = False
    last_connected: float | None = None
    disconnected_since: float | None = None
    reason: str | None = None

    def on_connected(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.connected, self.last_connected, self.disconnected_since = True, now, None

    def on_disconnected(self, now: float | None = None) -> None:
        if self.connected or self.disconnected_since is None:
            self.disconnected_since = time.time() if now is None else now
        self.connected = False

    def on_closed(self, reason: str, now: float | None = None) -> None:
        """Closed for good; the first reason given stays (the close that follows a stop says less)."""
        self.on_disconnected(now)
        self.closed, self.reason = True, self.reason if self.closed and self.reason else reason

    def disconnected_for(self, now: float | None = None) -> float:
        if self.connected or self.disconnected_since is None:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.disconnected_since)

    def beyond_limit(self, now: float | None = None) -> bool:
        return not self.connected and self.disconnected_for(now) > self.exit_after_s

    def alive(self, now: float | None = None) -> tuple[bool, str]:
        """(alive, why): dead when closed for good or disconnected longer than the limit."""
        if self.closed:
            return False, f"NATS connection closed for good: {self.reason or 'unknown reason'}"
        if self.connected:
            return True, "NATS connected"
        gone = self.disconnected_for(now)
        last = ("never connected" if self.last_connected is None else
                "last connected " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_connected)))
        if gone > self.exit_after_s:
            return False, f"NATS disconnected for {gone:.1f}s, {last} (limit {self.exit_after_s:g}s)"
        return True, f"NATS disconnected for {gone:.1f}s, {last} (reconnecting; limit {self.exit_after_s:g}s)"


def write_heartbeat(path: str, state: Connectivity, now: float | None = None) -> None:
    """Replace the heartbeat file atomically: readers never see half a record."""
    record = {"ts": round(time.time() if now is None else now, 3), "nats": asdict(state)}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(json.dumps(record) + "\n")
    os.replace(tmp, path)


def check_heartbeat(path: str, max_age: float, now: float | None = None) -> tuple[bool, str]:
    """The liveness verdict from the heartbeat file: (alive, one line saying why)."""
    now = time.time() if now is None else now
    try:
        with open(path) as fh:
            record = json.loads(fh.read())
        beat = float(record["ts"])
        state = Connectivity(**record["nats"])
    except FileNotFoundError:
        return False, f"no heartbeat at {path}"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat at {path}: {type(exc).__name__}"
    age = now - beat
    if age > max_age:
        return False, f"heartbeat {age:.1f}s old (limit {max_age:g}s): the event loop is stuck or gone"
    alive, why = state.alive(now)
    return alive, f"heartbeat {age:.1f}s old; {why}"
