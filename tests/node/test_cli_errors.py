"""CLI commands fail fast with one line that names the URL and the fix; tracebacks only with --debug."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

from node.embedded import EmbeddedServer, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATEGY = os.path.join(ROOT, "examples", "sma_crossover.py")
BARS = os.path.join(ROOT, "examples", "bars.csv")


# What `python -m node` runs (node/__main__.py), timed by the command itself from the moment its
# code is loaded to its exit, written to the file named by the first argument. Starting the
# interpreter and importing the CLI (numpy, nats-py, ...: ~0.4 s of CPU, the same for every
# command and no part of reaching a server) took over 2 s of wall time on a loaded 2-core host.
LAUNCH = """\
import sys, time
from node.cli import main
timing = sys.argv.pop(1)
started = time.monotonic()
try:
    main()
finally:
    with open(timing, "w") as fh:
        fh.write(repr(time.monotonic() - started))
"""


def strategy_node(*argv: str, timeout: float = 30) -> tuple[subprocess.CompletedProcess, float]:
    """The command's result, and the seconds it took from its entry point to its exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    with tempfile.TemporaryDirectory() as tmp:
        timing = os.path.join(tmp, "seconds")
        proc = subprocess.run([sys.executable, "-c", LAUNCH, timing, *argv], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT, env=env)
        with open(timing) as fh:
            return proc, float(fh.read())


@pytest.fixture(scope="module")
def closed_url() -> str:
    return f"nats://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def no_jetstream_url():
    with EmbeddedServer(jetstream=False) as server:
        yield server.url


@pytest.mark.parametrize("argv", [
    ["validate", STRATEGY],
    ["exec", STRATEGY, "--bars", BARS],
    ["bars", "ls"],
    ["submit", STRATEGY, "--bars", BARS],
    ["result", "some-job"],
    ["health"],
], ids=lambda a: a[0] if a[0] != "bars" else "bars-ls")
def test_a_command_against_a_closed_port_ends_within_two_seconds_with_one_line(closed_url, argv):
    proc, seconds = strategy_node(*argv, "--url", closed_url)
    assert seconds < 2.0, f"took {seconds:.2f}s"
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert closed_url in lines[0] and "strategy-node run" in lines[0]


def test_a_closed_port_given_by_nats_url_is_the_one_named(closed_url):
    env = {**os.environ, "NATS_URL": closed_url}
    proc = subprocess.run([sys.executable, "-m", "node", "validate", STRATEGY], capture_output=True,
                          text=True, timeout=30, cwd=ROOT, env=env)
    assert proc.returncode == 2 and closed_url in proc.stderr


@pytest.mark.parametrize("argv", [
    ["bars", "ls"],
    ["bars", "load", BARS, "--symbol", "X", "--timeframe", "1d"],
    ["submit", STRATEGY, "--bars", BARS],
    ["result", "some-job"],
], ids=["bars-ls", "bars-load", "submit", "result"])
def test_a_jetstream_command_on_a_server_without_jetstream_says_how_to_turn_it_on(no_jetstream_url, argv):
    proc, _ = strategy_node(*argv, "--url", no_jetstream_url)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "needs JetStream" in lines[0] and "nats-server -js" in lines[0] and no_jetstream_url in lines[0]
    assert "Traceback" not in proc.stderr


def test_a_request_with_no_node_serving_says_to_start_one(no_jetstream_url):
    proc, seconds = strategy_node("validate", STRATEGY, "--url", no_jetstream_url)
    assert proc.returncode == 2 and seconds < 2.0
    assert proc.stderr.strip() == (f"error: no node is serving at {no_jetstream_url}; start a node with "
                                   "`strategy-node run` (it embeds a nats-server), or point --url / NATS_URL at one")


def test_debug_shows_the_traceback(closed_url):
    proc, _ = strategy_node("validate", STRATEGY, "--url", closed_url, "--debug")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr and "CliError" in proc.stderr


def test_a_bad_bars_file_is_one_line_without_the_exception_type(tmp_path, nats_url):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close\n2024-01-01,1,2,0.5,abc\n")
    proc, _ = strategy_node("exec", STRATEGY, "--bars", str(bad), "--url", nats_url)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {bad}: row 0 (line 2): close is 'abc', not a finite number"]
