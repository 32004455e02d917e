"""The README's node (`strategy-node run`, no NATS_URL): a persistent store, joining, own heartbeat."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.config import Settings
from node.embedded import free_port
from node.local import default_store_dir, store_dir

ROOT = Path(__file__).resolve().parents[2]
STRATEGY = str(ROOT / "examples" / "sma_crossover.py")
BARS = str(ROOT / "examples" / "bars.csv")


class RunningNode:
    """`python -m node run` as a user starts it, output in a file."""

    def __init__(self, tmp: Path, name: str, env: dict[str, str]) -> None:
        full = {k: v for k, v in os.environ.items()
                if not k.startswith(("NATS_", "EMBEDDED_", "HEARTBEAT_", "NODE_", "XDG_"))}
        full.update({"MAX_WORKERS": "2", "NODE_ID": name, **env})
        self.log = tmp / f"{name}.log"
        self._out = open(self.log, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "node", "run"], env=full, cwd=ROOT,
                                     stdout=self._out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            if " ready on " in text:
                return text
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited {self.proc.returncode}:\n{text}")
            time.sleep(0.1)
        raise TimeoutError(self.output())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def cli(url: str, *argv: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    return subprocess.run([sys.executable, "-m", "node", *argv, "--url", url], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


@pytest.fixture
def nodes():
    started: list[RunningNode] = []
    yield started
    for node in reversed(started):
        node.stop()


def test_durable_jobs_and_bars_survive_a_restart_of_the_readme_node(tmp_path, nodes):
    port = free_port()
    env = {"EMBEDDED_NATS_PORT": str(port), "XDG_DATA_HOME": str(tmp_path / "data"),
           "HEARTBEAT_FILE": str(tmp_path / "hb")}
    url = f"nats://127.0.0.1:{port}"
    first = RunningNode(tmp_path, "first", env)
    nodes.append(first)
    started = first.wait_ready()
    data = tmp_path / "data" / "strategy-node" / "nats"
    assert f"data directory {data}" in started
    loaded = cli(url, "bars", "load", BARS, "--symbol", "DEMO", "--timeframe", "1d", "--quiet")
    assert loaded.returncode == 0, loaded.stderr
    submitted = cli(url, "submit", STRATEGY, "--bars", BARS, "--job-id", "survivor")
    assert submitted.returncode == 0, submitted.stderr
    assert cli(url, "result", "survivor", "--wait", "30").returncode == 0
    assert first.stop() == 0

    second = RunningNode(tmp_path, "second", env)
    nodes.append(second)
    second.wait_ready()
    result = cli(url, "result", "survivor", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["success"] is True
    series = json.loads(cli(url, "bars", "ls", "--json").stdout)
    assert [(s["symbol"], s["timeframe"], s["bars"]) for s in series] == [("DEMO", "1d", 500)]


def test_a_second_run_joins_the_first_ones_server_with_its_own_heartbeat(tmp_path, nodes):
    port = free_port()
    env = {"EMBEDDED_NATS_PORT": str(port), "EMBEDDED_NATS_STORE": str(tmp_path / "store"),
           "HEARTBEAT_FILE": str(tmp_path / "hb")}
    first = RunningNode(tmp_path, "first", env)
    nodes.append(first)
    first.wait_ready()
    second = RunningNode(tmp_path, "second", env)
    nodes.append(second)
    out = second.wait_ready()
    url = f"nats://127.0.0.1:{port}"
    assert f"joining the nats-server already listening on {url} as another node of queue group strategy-exec" in out
    assert f"heartbeat file {tmp_path / 'hb'}.second" in out
    for name in ("first", "second"):
        health = cli(url, "health", "--node", name, "--json")
        assert health.returncode == 0 and json.loads(health.stdout)["node_id"] == name
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (Path(f"{tmp_path / 'hb'}.second").exists()
                                               and (tmp_path / "hb").exists()):
        time.sleep(0.1)
    assert (tmp_path / "hb").exists() and Path(f"{tmp_path / 'hb'}.second").exists()
    assert second.stop() == 0
    assert not Path(f"{tmp_path / 'hb'}.second").exists()  # a per-node file goes with its node
    assert first.proc.poll() is None  # the server it joined is still the first node's


def test_a_run_refuses_a_port_held_by_something_that_is_not_nats(tmp_path, nodes):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        node = RunningNode(tmp_path, "refused", {"EMBEDDED_NATS_PORT": str(port),
                                                 "EMBEDDED_NATS_STORE": str(tmp_path / "store")})
        nodes.append(node)
        assert node.proc.wait(30) == 2
    assert (f"error: port {port} is taken by something that is not a nats-server; set EMBEDDED_NATS_PORT"
            in node.output())


def test_the_data_directory_defaults_under_xdg_data_home_and_is_settable():
    env = {"XDG_DATA_HOME": "/srv/data", "HOME": "/home/u"}
    assert default_store_dir(env) == "/srv/data/strategy-node/nats"
    assert store_dir(Settings.from_env(env), env) == "/srv/data/strategy-node/nats"
    moved = {**env, "EMBEDDED_NATS_STORE": "/var/lib/nats"}
    assert store_dir(Settings.from_env(moved), moved) == "/var/lib/nats"


def test_a_node_starts_without_warnings(tmp_path, nodes):
    node = RunningNode(tmp_path, "quiet", {"EMBEDDED_NATS_PORT": str(free_port()),
                                           "EMBEDDED_NATS_STORE": str(tmp_path / "store")})
    nodes.append(node)
    out = node.wait_ready()
    time.sleep(1.0)  # the zygote's children are forked by now
    assert "Warning" not in node.output(), out


def test_an_unusable_data_directory_is_one_line_naming_it(tmp_path, nodes):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    node = RunningNode(tmp_path, "nostore", {"EMBEDDED_NATS_PORT": str(free_port()),
                                             "EMBEDDED_NATS_STORE": str(blocker / "nats")})
    nodes.append(node)
    assert node.proc.wait(30) == 2
    out = node.output()
    assert "Traceback" not in out
    assert "error: cannot start the embedded nats-server" in out and str(blocker / "nats") in out


def test_a_joined_node_exits_when_the_server_it_joined_goes_away(tmp_path, nodes):
    port = free_port()
    env = {"EMBEDDED_NATS_PORT": str(port), "EMBEDDED_NATS_STORE": str(tmp_path / "store"),
           "HEARTBEAT_FILE": str(tmp_path / "hb"), "NATS_DISCONNECTED_EXIT_SECONDS": "2"}
    first = RunningNode(tmp_path, "first", env)
    nodes.append(first)
    first.wait_ready()
    second = RunningNode(tmp_path, "second", env)
    nodes.append(second)
    assert "joining the nats-server" in second.wait_ready()
    assert first.stop() == 0
    assert second.proc.wait(30) == 1  # off NATS: it exits so that it can be replaced
