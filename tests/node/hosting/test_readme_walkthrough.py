"""The README's three-command walkthrough, run as written against live nodes on a fresh server."""

from __future__ import annotations

import os
import sys

import pytest

from node.hosting.client import HostingClient
from tests.test_readme import commands, readme_blocks, run

from .support import stored_signals, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def walkthrough() -> tuple[list[list[str]], list[list[str]]]:
    blocks = [body for lang, body in readme_blocks() if lang == "sh"]
    i = next(i for i, body in enumerate(blocks) if "deployments create" in body)
    return commands(blocks[i]), commands(blocks[i + 1])


async def cli(argv: list[str], url: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = url
    return await run([sys.executable, "-m", "node", *argv], ROOT, env)


async def test_the_three_commands_deploy_a_strategy_that_signals_on_the_replayed_bars(server, nodes, nc):
    deploy, look = walkthrough()
    assert [argv[:2] for argv in deploy] == [["strategies", "put"], ["deployments", "create"], ["bars", "replay-live"]]
    for argv in deploy:
        proc = await cli(argv, server.url)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (argv, proc.stdout, proc.stderr)
    hosting = HostingClient(nc)

    async def every_bar_recorded():
        runs = (await hosting.runs("sma-live", limit=1000)).runs
        return runs if len(runs) == 500 else None

    runs = await wait_for(every_bar_recorded, timeout=60)
    ok = [r for r in runs if r.status == "ok"]
    assert ok and {r.status for r in runs} <= {"ok", "skipped"}
    _stored, got = await stored_signals(nc.jetstream(), "sma-live")
    assert got["LIVE"] == {(r.signal.timestamp, r.signal.type) for r in ok if r.signal is not None}
    assert got["LIVE"]
    for argv in look:
        proc = await cli(argv, server.url)
        assert proc.returncode == 0, (argv, proc.stderr)
        assert "sma-live" in proc.stdout or "LIVE" in proc.stdout
