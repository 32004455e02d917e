"""A node is connected and serving, or it exits so the orchestrator replaces it.

Through a real `strategy-node run` process and a real nats-server: a connection nats-py closes
for good (a max-payload violation, forced by lowering the server's max_payload under a
connected node) and a server that stays down both make the node exit with status 1, and the
liveness probe (`strategy-node health --local`) fails before the process is gone; a server
that comes back within NATS_DISCONNECTED_EXIT_SECONDS leaves the node serving.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import nats
import pytest

from contracts import subjects
from node.connectivity import Connectivity, check_heartbeat, write_heartbeat
from node.embedded import EmbeddedServer
from tests.support import columnar_bars, request_json

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPIN = "def strategy(data):\n    n = 0\n    while n < params['n']:\n        n += 1\n    return 'BUY'\n"
BLOB = "def strategy(data):\n    return {'blob': 'x' * params['n']}\n"


# -- the heartbeat record and the probe's verdict -----------------------------------------------
def test_a_fresh_heartbeat_of_a_connected_node_is_alive(tmp_path):
    state = Connectivity(exit_after_s=30)
    state.on_connected()
    write_heartbeat(str(tmp_path / "hb"), state)
    alive, why = check_heartbeat(str(tmp_path / "hb"), max_age=20)
    assert alive and "NATS connected" in why


def test_a_stale_heartbeat_is_dead_even_when_it_says_connected(tmp_path):
    state = Connectivity(exit_after_s=30)
    state.on_connected()
    write_heartbeat(str(tmp_path / "hb"), state, now=time.time() - 60)
    alive, why = check_heartbeat(str(tmp_path / "hb"), max_age=20)
    assert not alive and "old" in why


def test_a_closed_connection_is_dead_at_once(tmp_path):
    state = Connectivity(exit_after_s=300)
    state.on_connected()
    state.on_closed("Error: nats: maximum payload violation")
    write_heartbeat(str(tmp_path / "hb"), state)
    alive, why = check_heartbeat(str(tmp_path / "hb"), max_age=20)
    assert not alive and "maximum payload violation" in why


def test_a_disconnection_is_alive_within_the_limit_and_dead_beyond_it(tmp_path):
    state = Connectivity(exit_after_s=10)
    state.on_connected(now=1000.0)
    state.on_disconnected(now=1001.0)
    state.on_disconnected(now=1005.0)  # a failed reconnect attempt does not restart the clock
    write_heartbeat(str(tmp_path / "hb"), state, now=1010.0)
    assert check_heartbeat(str(tmp_path / "hb"), max_age=20, now=1010.5)[0] is True
    alive, why = check_heartbeat(str(tmp_path / "hb"), max_age=20, now=1011.5)
    assert not alive and "disconnected for 10.5s" in why
    assert "last connected 1970-01-01T00:16:40Z" in why  # when the node last had NATS


def test_a_missing_or_garbled_heartbeat_is_dead(tmp_path):
    assert check_heartbeat(str(tmp_path / "none"), max_age=20)[0] is False
    (tmp_path / "garbled").write_text("1764600000.0\n")  # not a record
    assert check_heartbeat(str(tmp_path / "garbled"), max_age=20)[0] is False


# -- a real node process --------------------------------------------------------------------------
def start_node(url: str, heartbeat: str, **env: str) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    full.update({"NATS_URL": url, "HEARTBEAT_FILE": heartbeat, "MAX_WORKERS": "2", "SANDBOX_READY": "2",
                 "NODE_ROLE": "requests", **env})
    return subprocess.Popen([sys.executable, "-m", "node", "run"], env=full, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def probe(heartbeat: str) -> int:
    """The liveness probe exactly as the Deployment runs it."""
    env = {**os.environ, "HEARTBEAT_FILE": heartbeat}
    return subprocess.run([sys.executable, "-m", "node", "health", "--local"], env=env, cwd=ROOT,
                          capture_output=True, timeout=30).returncode


async def wait_serving(url: str, timeout: float = 60.0) -> None:
    nc = await nats.connect(url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await request_json(nc, subjects.HEALTH, {}, timeout=1.0)
                return
            except Exception:  # noqa: BLE001 - not up yet
                assert time.monotonic() < deadline, "node did not start serving"
                await asyncio.sleep(0.2)
    finally:
        await nc.close()


def finish(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.kill()
    out, _ = proc.communicate(timeout=30)
    return out


async def watch_until_exit(proc: subprocess.Popen, heartbeat: str, timeout: float) -> tuple[float | None, float]:
    """(first time the probe's verdict was dead while the process still ran, exit time)."""
    first_dead = None
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            raise AssertionError("the node did not exit: " + finish(proc)[-3000:])
        if first_dead is None and not check_heartbeat(heartbeat, max_age=20)[0] and proc.poll() is None:
            first_dead = time.monotonic()
        await asyncio.sleep(0.02)
    return first_dead, time.monotonic()


def spin_request(timeout_ms: int) -> dict:
    """A run that takes exactly its budget (it never finishes before the TIMEOUT kill)."""
    return {"code": SPIN, "bars": columnar_bars(10), "parameters": {"n": 10 ** 12}, "timeout_ms": timeout_ms}


async def test_a_max_payload_violation_makes_the_node_exit_1_and_the_probe_fail_first(tmp_path):
    conf = tmp_path / "nats.conf"
    conf.write_text("max_payload: 65536\n")
    server = EmbeddedServer(config_file=str(conf), jetstream=False).start()
    heartbeat = str(tmp_path / "heartbeat")
    proc = start_node(server.url, heartbeat, NATS_DISCONNECTED_EXIT_SECONDS="60")
    try:
        await wait_serving(server.url)
        assert probe(heartbeat) == 0
        # The operator lowers max_payload: connected clients keep the old INFO, so the node's
        # next reply between the two limits is a violation the node could not have seen coming.
        conf.write_text("max_payload: 32768\n")
        server.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        nc = await nats.connect(server.url)
        slow = asyncio.ensure_future(nc.request(subjects.EXECUTE, json.dumps(spin_request(3000)).encode(), timeout=10))
        await asyncio.sleep(0.3)  # the slow run holds the drain open after the connection is gone
        big = {"code": BLOB, "bars": columnar_bars(10), "parameters": {"n": 40_000}}
        inbox = nc.new_inbox()
        replies = await nc.subscribe(inbox)
        await nc.publish(subjects.EXECUTE, json.dumps(big).encode(), reply=inbox)
        started = time.monotonic()
        first_dead, exited = await watch_until_exit(proc, heartbeat, timeout=30)
        with pytest.raises(nats.errors.TimeoutError):  # the server refused that reply
            await replies.next_msg(timeout=0.5)
        assert proc.returncode == 1
        assert first_dead is not None and first_dead < exited  # the probe failed before the exit
        assert exited - started < 10
        slow.cancel()
        await nc.close()
    finally:
        output = finish(proc)
        server.close()
    assert "closed the connection for good" in output and "maximum payload" in output.lower(), output[-3000:]


async def test_a_server_that_stays_down_makes_the_node_exit_1_after_the_limit(tmp_path):
    server = EmbeddedServer(jetstream=False).start()
    heartbeat = str(tmp_path / "heartbeat")
    limit = 2.0
    proc = start_node(server.url, heartbeat, NATS_DISCONNECTED_EXIT_SECONDS=str(limit), DRAIN_TIMEOUT_SECONDS="10")
    try:
        await wait_serving(server.url)
        nc = await nats.connect(server.url, allow_reconnect=False)
        await nc.publish(subjects.EXECUTE, json.dumps(spin_request(6000)).encode(), reply=nc.new_inbox())
        await nc.flush()
        await asyncio.sleep(0.5)  # the run has started; it outlasts the limit
        down = time.monotonic()
        server.kill()
        assert probe(heartbeat) == 0  # disconnected, within the limit: alive
        first_dead, exited = await watch_until_exit(proc, heartbeat, timeout=40)
        assert proc.returncode == 1
        assert first_dead is not None and limit <= first_dead - down < limit + 1.5
        assert first_dead < exited
        assert exited - down < limit + 10 + 5  # the limit, the drain of what it held, the shutdown
    finally:
        output = finish(proc)
        server.close()
    assert "disconnected from NATS for more than 2s" in output, output[-3000:]


async def test_a_server_back_within_the_limit_leaves_the_node_serving(tmp_path):
    store = str(tmp_path / "store")
    server = EmbeddedServer(jetstream=False, store_dir=store).start()
    heartbeat = str(tmp_path / "heartbeat")
    proc = start_node(server.url, heartbeat, NATS_DISCONNECTED_EXIT_SECONDS="6")
    try:
        await wait_serving(server.url)
        server.kill()
        await asyncio.sleep(2.0)
        assert probe(heartbeat) == 0
        server.start()
        await wait_serving(server.url, timeout=10)
        await asyncio.sleep(6.0)  # past the limit counted from the disconnection
        assert proc.poll() is None
        assert probe(heartbeat) == 0
        nc = await nats.connect(server.url)
        reply = await request_json(nc, subjects.EXECUTE, {"code": "def strategy(d): return 'BUY'",
                                                          "bars": columnar_bars(5)})
        assert reply["success"] is True
        await nc.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # an ordinary stop is still status 0
    finally:
        finish(proc)
        server.close()


# -- a connection that says connected while nothing reads it ------------------------------------
async def in_process_node(url: str, tmp_path):
    from node.config import Settings
    from node.service import Node

    node = Node(Settings.from_env({"NODE_ID": "deaf-check", "NODE_ROLE": "requests", "MAX_WORKERS": "1",
                                   "SANDBOX_READY": "1", "HEARTBEAT_FILE": str(tmp_path / "heartbeat")}), url)
    await node.start()
    return node


async def test_a_server_stall_past_a_flush_timeout_leaves_the_node_serving(bare_server, tmp_path):
    from tests.support import stall

    node = await in_process_node(bare_server.url, tmp_path)
    try:
        stalled = asyncio.ensure_future(stall(bare_server, 1.5))
        await asyncio.sleep(0.05)
        with pytest.raises(nats.errors.FlushTimeoutError):
            await node.nc.flush(timeout=0.3)  # its PONG comes a second later
        await stalled
        await asyncio.sleep(2.5)  # two heartbeats: a deaf node would be stopping by now
        nc = await nats.connect(bare_server.url)
        reply = await request_json(nc, subjects.EXECUTE, {"code": "def strategy(d): return 'BUY'",
                                                          "bars": columnar_bars(5)})
        await nc.close()
        assert reply["success"] is True and node.exit_code == 0
    finally:
        await node.stop()


async def test_a_node_whose_read_loop_ended_while_connected_stops_with_exit_1(bare_server, tmp_path):
    node = await in_process_node(bare_server.url, tmp_path)
    try:
        node.nc._reading_task.cancel()  # however it ends: nothing more arrives on this connection
        await asyncio.wait_for(node._stopped.wait(), 10)
        assert node.exit_code == 1
        assert "read loop ended" in json.loads(open(tmp_path / "heartbeat").read())["nats"]["reason"]
    finally:
        await node.stop()
