"""Node processes for memory and burst tests: a real `strategy-node run` subprocess on its own
nats-server, and its resident memory read from /proc (VmRSS now, VmHWM the peak)."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import nats

from contracts import subjects
from node.embedded import EmbeddedServer, free_port
from tests.node.test_faults import NodeProc

MB = 1024 * 1024


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


class NodeOnServer:
    """A nats-server (with a monitoring port, extra config lines) and one node subprocess."""

    def __init__(self, tmp: Path, node_id: str, server_conf: str = "", **env: str) -> None:
        self.monitor = free_port()
        conf = tmp / f"{node_id}-server.conf"
        conf.write_text(f"http_port: {self.monitor}\n{server_conf}\n")
        self.server = EmbeddedServer(config_file=str(conf), store_dir=str(tmp / f"{node_id}-js")).start()
        self.node = NodeProc(tmp, node_id, self.server.url, **env)
        self.node_id = node_id

    async def ready(self, nc: nats.NATS, timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                msg = await nc.request(subjects.node_health(self.node_id), b"{}", timeout=1)
                if json.loads(msg.data).get("status") == "ok":
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            if loop.time() > deadline:
                raise TimeoutError(f"node {self.node_id} not ready: {self.node.output()[-2000:]}")
            await asyncio.sleep(0.2)

    def connections(self) -> list[dict]:
        """The server's view (/connz, open and closed) of this node's connections."""
        url = f"http://127.0.0.1:{self.monitor}/connz?state=all&limit=1024"
        with urllib.request.urlopen(url, timeout=5) as resp:
            conns = json.load(resp)["connections"]
        return [c for c in conns if c.get("name") == f"strategy-node {self.node_id}"]

    def memory_kb(self) -> dict[str, int]:
        return memory_kb(self.node.pid)

    def close(self) -> None:
        self.node.stop()
        self.server.close()
