"""The README is executed: its commands, sample outputs, JSON request/reply and Python snippet.

Every `.venv/bin/strategy-node ...` line of the README's `sh` blocks runs (as `python -m node`)
against the session's live node, in a temporary directory (so files such as `report.html` land
there), and the outputs the README shows are compared with what the commands print; only
durations and node ids, which vary, are masked.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
import sys

import msgspec
import pytest

from contracts import subjects
from tests.support import request_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = ".venv/bin/strategy-node"

pytestmark = pytest.mark.usefixtures("node")


def readme_blocks() -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.S | re.M)]


def commands(body: str) -> list[list[str]]:
    joined = body.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        if not line.startswith(PROGRAM):
            continue
        argv = shlex.split(line, comments=True)
        if argv[:1] == [PROGRAM]:
            out.append(argv[1:])
    return out


def readme_commands() -> list[list[str]]:
    """The CLI commands of the README (not `run`, which the session's node stands in for)."""
    return [argv for lang, body in readme_blocks() if lang == "sh" for argv in commands(body) if argv[0] != "run"]


def output_after(predicate) -> str:
    """The `text` block that follows the first code block satisfying `predicate`."""
    blocks = readme_blocks()
    for i, (lang, body) in enumerate(blocks):
        if predicate(lang, body):
            for later_lang, later_body in blocks[i + 1:]:
                if later_lang == "text":
                    return later_body
                if later_lang in ("sh", "python"):
                    break
    raise AssertionError("the README shows no output there")


def masked(text: str) -> str:
    text = re.sub(r"\(\d+\.\d+ ms on [^)\s]+\)", "(<ms> on <node>)", text)
    return re.sub(r"in \d+\.\d+ ms on \S+:", "in <ms> on <node>:", text)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A temporary directory that sees the README's `examples/`: outputs go here, not into the tree."""
    path = tmp_path_factory.mktemp("readme")
    os.symlink(os.path.join(ROOT, "examples"), path / "examples")
    return path


async def run(argv: list[str], cwd, env: dict[str, str]) -> subprocess.CompletedProcess:
    """A subprocess while the session's node keeps serving on this event loop."""
    proc = await asyncio.create_subprocess_exec(*argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(), err.decode())


async def strategy_node(argv: list[str], url: str, cwd) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = url
    return await run([sys.executable, "-m", "node", *argv], cwd, env)


def test_the_readme_shows_the_commands_this_test_runs():
    names = [" ".join(argv[:2]) for argv in readme_commands()]
    for expected in ("health", "validate examples/sma_crossover.py", "exec examples/sma_crossover.py",
                     "bars load", "bars ls", "backtest examples/sma_crossover.py",
                     "screen examples/classify_trend.py"):
        assert any(n.startswith(expected) for n in names), (expected, names)


async def test_every_readme_command_runs_against_a_live_node(nats_url, workdir):
    for argv in readme_commands():
        proc = await strategy_node(argv, nats_url, workdir)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr
    assert (workdir / "report.html").exists()  # the README's report went to the temporary directory


async def test_the_tour_exec_prints_what_the_readme_shows(nats_url, workdir):
    argv = next(a for a in readme_commands() if a[:2] == ["exec", "examples/sma_crossover.py"])
    shown = output_after(lambda lang, body: lang == "sh" and "exec examples/sma_crossover.py" in body)
    proc = await strategy_node(argv, nats_url, workdir)
    assert masked(proc.stdout) == masked(shown)


async def test_the_screen_example_prints_what_the_readme_shows(nats_url, workdir):
    load = next(a for a in readme_commands() if a[:2] == ["bars", "load"])
    assert (await strategy_node(load, nats_url, workdir)).returncode == 0
    argv = next(a for a in readme_commands() if a[0] == "screen")
    shown = output_after(lambda lang, body: lang == "sh" and "strategy-node screen" in body)
    proc = await strategy_node(argv, nats_url, workdir)
    assert masked(proc.stdout) == masked(shown)


def json_example() -> tuple[dict, dict]:
    blocks = readme_blocks()
    i = next(i for i, (lang, body) in enumerate(blocks) if lang == "sh" and "nats req strategy.v1.execute" in body)
    request_text = shlex.split(blocks[i][1])[3]
    reply_text = next(body for lang, body in blocks[i + 1:] if lang == "json")
    return json.loads(request_text), json.loads(reply_text)


async def test_the_json_request_gets_the_reply_the_readme_shows(nc):
    request, shown = json_example()
    reply = await request_json(nc, subjects.EXECUTE, request)
    for varying in ("execution_time_ms", "node_id"):
        assert type(reply.pop(varying)) is type(shown.pop(varying))
    # `performance` is shown abridged (the README says so): every metric shown must be the real one
    shown_performance, performance = shown.pop("performance"), reply.pop("performance")
    assert len(shown_performance) >= 10
    assert {k: performance.get(k, "<absent>") for k in shown_performance} == shown_performance
    assert reply == shown, "README.md's sample reply no longer matches the node's: paste the real one"


async def test_the_python_snippet_prints_what_the_readme_shows_and_matches_the_cli(nats_url, workdir):
    snippet = next(body for lang, body in readme_blocks() if lang == "python" and "from node import connect" in body)
    assert '"nats://127.0.0.1:4222"' in snippet
    code = snippet.replace('"nats://127.0.0.1:4222"', repr(nats_url))
    code += "\nimport msgspec\nprint(msgspec.json.encode(result).decode())\n"
    proc = await run([sys.executable, "-c", code], workdir, {**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    *printed, as_json = proc.stdout.splitlines()
    shown = output_after(lambda lang, body: lang == "python" and "from node import connect" in body)
    assert "\n".join(printed) + "\n" == shown

    client_result = msgspec.json.decode(as_json)
    argv = next(a for a in readme_commands() if a[:2] == ["exec", "examples/sma_crossover.py"])
    cli_result = json.loads((await strategy_node([*argv, "--json"], nats_url, workdir)).stdout)
    assert client_result["signals"] == cli_result["signals"]
    assert client_result["performance"] == cli_result["performance"]
    assert client_result["indicators"] == cli_result["indicators"]


def test_files_the_readme_makes_are_git_ignored():
    ignored = open(os.path.join(ROOT, ".gitignore"), encoding="utf-8").read().splitlines()
    made = {a[a.index("--report") + 1] for a in readme_commands() if "--report" in a}
    assert made and made <= set(ignored)
