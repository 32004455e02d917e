"""The node as a process: SIGTERM drains without dropping work; embedded nats-server mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import nats
import pytest

from contracts import subjects
from node.embedded import free_port
from tests.support import columnar_bars, request_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLOW = "def strategy(data):\n    n = 0\n    while n < params['n']:\n        n += 1\n    return 'BUY'\n"


def start_node(env: dict[str, str]) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k not in ("NATS_URL",)}
    full.update(env)
    return subprocess.Popen([sys.executable, "-m", "node", "run"], env=full, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def wait_healthy(nc, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return await request_json(nc, subjects.HEALTH, {}, timeout=1.0)
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.2)
    raise TimeoutError("node did not become healthy")


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


async def test_sigterm_answers_every_request_in_flight_then_exits_zero():
    from node.embedded import EmbeddedServer

    with EmbeddedServer(jetstream=False) as server:
        proc = start_node({"NATS_URL": server.url, "MAX_WORKERS": "2", "NODE_ID": "drainer"})
        try:
            nc = await nats.connect(server.url)
            await wait_healthy(nc)
            bars = columnar_bars(10)
            pending = [asyncio.ensure_future(request_json(
                nc, subjects.EXECUTE, {"code": SLOW, "bars": bars, "parameters": {"n": 400_000}}, timeout=30))
                for _ in range(6)]
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            replies = await asyncio.gather(*pending)
            assert [r["success"] for r in replies] == [True] * 6, replies
            assert proc.wait(timeout=30) == 0
            await nc.close()
        finally:
            output = stop(proc)
        assert "draining" in output


async def test_without_nats_url_the_node_embeds_a_nats_server_and_prints_its_url(tmp_path):
    port = free_port()
    proc = start_node({"EMBEDDED_NATS_PORT": str(port), "NODE_ID": "embedded",
                       "EMBEDDED_NATS_STORE": str(tmp_path / "store")})
    try:
        url = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and url is None:
            line = await asyncio.get_running_loop().run_in_executor(None, proc.stdout.readline)
            if "NATS_URL=" in line:
                url = line.strip().split("NATS_URL=")[1]
        assert url == f"nats://127.0.0.1:{port}"
        nc = await nats.connect(url)
        await wait_healthy(nc)
        reply = await request_json(nc, subjects.EXECUTE, {"code": "def strategy(d): return 'BUY'", "bars": columnar_bars(5)})
        assert reply["success"] is True
        jsm = nc.jetstream()
        assert (await jsm.account_info()) is not None  # JetStream is on
        await nc.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        stop(proc)
    with pytest.raises(OSError):
        import socket

        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
