"""The README's scheduled deployment with an env value and a secret, run as written against live
nodes (holding a key-encryption key) on a fresh server: it fires, the run sees both, and the
secret's value is nowhere in NATS."""

from __future__ import annotations

import asyncio
import base64
import os
import sys

import nats
import pytest
import pytest_asyncio

from backtest.store import BarStore
from node.config import Settings
from node.embedded import EmbeddedServer
from node.hosting.client import HostingClient
from node.service import Node
from tests.test_readme import commands, readme_blocks, run

from .support import arrays, stream_msgs, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
KEY = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
BROKER_KEY = "brk-9f8e7d6c5b4a-secret"


@pytest.fixture(scope="module")
def server():
    srv = EmbeddedServer().start()
    yield srv
    srv.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(server):
    node = Node(Settings.from_env({"MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10", "NODE_ID": "readme-sched",
                                   "SECRETS_KEY": KEY}), server.url)
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conn = await nats.connect(server.url)
    yield conn
    await conn.drain()
    await node.stop()


def scheduled_block() -> list[list[str]]:
    # a `console` block: the README-wide command test runs `sh` blocks on a node without a key
    (body,) = [body for lang, body in readme_blocks() if lang == "console" and "--schedule" in body]
    return commands(body)


async def test_the_readme_scheduled_deployment_with_env_and_secret_runs_end_to_end(server, nc):
    argvs = scheduled_block()
    assert [a[:2] for a in argvs] == [["secrets", "set"], ["strategies", "put"], ["deployments", "create"],
                                      ["deployments", "get"], ["secrets", "ls"]]
    await BarStore(nc.jetstream(), nc).load("LIVE", "1d", arrays(80, seed=2))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(NATS_URL=server.url, BROKER_KEY=BROKER_KEY)
    outputs = []
    for argv in argvs:
        proc = await run([sys.executable, "-m", "node", *argv], ROOT, env)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (argv, proc.stdout, proc.stderr)
        outputs.append(proc.stdout)
    assert "BROKER_KEY" in outputs[-1] and BROKER_KEY not in outputs[-1]  # secrets ls: the name only
    hosting = HostingClient(nc)

    async def ran_twice():
        runs = (await hosting.runs("keyed")).runs
        return runs if len([r for r in runs if r.status == "ok"]) >= 2 else None

    runs = await wait_for(ran_twice, timeout=20)
    assert all(r.signal is not None for r in runs if r.status == "ok")
    logs = await stream_msgs(nc.jetstream(), "STRATEGY_LOGS", "strategy.logs.local.keyed")
    assert logs and b"mode paper key set: True" in logs[0].data
    status = (await hosting.get_deployment("keyed")).status
    assert status.next_fire is not None and status.next_fire.endswith("+05:30")
    for info in await nc.jetstream().streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await nc.jetstream().get_msg(info.config.name, seq)
            except Exception:  # noqa: BLE001 - deleted
                continue
            assert BROKER_KEY.encode() not in (msg.data or b"")
