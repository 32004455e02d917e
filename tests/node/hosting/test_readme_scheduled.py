"""The README's scheduled deployment with an env value and a secret, run as written against a live
node (holding a key-encryption key) on a fresh server: it fires, the run sees both, and the
secret's value is nowhere in NATS. Then `secrets set|ls|rm` and the deploy options --schedule,
--tz, --catchup, --env and --secret as a user runs them."""

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
CLI_VALUE_S = "cli-secret-value-123456"


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
                                      ["deploy", "examples/scheduled_with_secret.py"], ["deployments", "get"],
                                      ["secrets", "ls"]]
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
    view = await hosting.get_deployment("keyed")
    status = view.status
    assert status.next_fire is not None and status.next_fire.endswith("+05:30")
    # `deploy FILE --name keyed`: version 2, the schedule, env and secret kept, the catch-up changed
    dep = view.deployment
    assert (dep.version, dep.schedule, dep.env, dep.secrets, dep.catchup_s) == (
        2, "* * * * * *", {"MODE": "paper"}, ["BROKER_KEY"], 60)

    async def ran_version_2():
        return [r for r in (await hosting.runs("keyed")).runs if r.version == 2 and r.status == "ok"] or None

    await wait_for(ran_version_2, timeout=10)  # fires after the deploy run the new version
    assert [c.change for c in (await hosting.history("keyed")).history] == ["create", "deploy"]
    for info in await nc.jetstream().streams_info():
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                msg = await nc.jetstream().get_msg(info.config.name, seq)
            except Exception:  # noqa: BLE001 - deleted
                continue
            assert BROKER_KEY.encode() not in (msg.data or b"")


async def cli(server, *argv: str, stdin_env: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = server.url
    env.update(stdin_env or {})
    return await run([sys.executable, "-m", "node", *argv], ROOT, env)


async def test_secrets_set_ls_rm_round_trip_never_prints_the_value(server, nc):
    proc = await cli(server, "secrets", "set", "CLI_KEY", "--from-env", "CLI_VALUE", stdin_env={"CLI_VALUE": CLI_VALUE_S})
    assert proc.returncode == 0 and "CLI_KEY stored" in proc.stdout and CLI_VALUE_S not in proc.stdout
    proc = await cli(server, "secrets", "ls")
    assert proc.returncode == 0 and "CLI_KEY" in proc.stdout and CLI_VALUE_S not in proc.stdout
    proc = await cli(server, "secrets", "ls", "--json")
    assert CLI_VALUE_S not in proc.stdout
    proc = await cli(server, "secrets", "rm", "CLI_KEY")
    assert proc.returncode == 0 and "CLI_KEY deleted" in proc.stdout
    assert "CLI_KEY" not in (await cli(server, "secrets", "ls")).stdout


async def test_secrets_set_from_an_unset_variable_is_refused(server, nc):
    proc = await cli(server, "secrets", "set", "CLI_KEY", "--from-env", "NOT_SET_ANYWHERE_16")
    assert proc.returncode == 2 and "NOT_SET_ANYWHERE_16" in proc.stderr


async def test_deploy_options_reach_the_deployment(server, nc):
    await HostingClient(nc).set_secret("DEPLOY_KEY", CLI_VALUE_S)
    await HostingClient(nc).put_strategy("cli-sched", "def strategy(data):\n    return 'HOLD'\n")
    proc = await cli(server, "deployments", "create", "cli-sched", "--strategy", "cli-sched", "--symbols", "LIVE",
                     "--timeframe", "1d", "--schedule", "0 */5 9-15 * * MON-FRI", "--tz", "Asia/Kolkata",
                     "--catchup", "60", "--env", "MODE=paper", "--env", "LIMIT=5", "--secret", "DEPLOY_KEY",
                     "--paused")
    assert proc.returncode == 0, proc.stderr
    dep = (await HostingClient(nc).get_deployment("cli-sched")).deployment
    assert (dep.schedule, dep.tz, dep.catchup_s, dep.env, dep.secrets, dep.desired) == (
        "0 */5 9-15 * * MON-FRI", "Asia/Kolkata", 60, {"MODE": "paper", "LIMIT": "5"}, ["DEPLOY_KEY"], "paused")
    proc = await cli(server, "deployments", "get", "cli-sched")
    assert "schedule '0 */5 9-15 * * MON-FRI' (Asia/Kolkata)" in proc.stdout
    # back to every new bar: the schedule message is gone
    proc = await cli(server, "deployments", "update", "cli-sched", "--schedule", "")
    assert proc.returncode == 0, proc.stderr
    assert (await HostingClient(nc).get_deployment("cli-sched")).deployment.schedule is None
    with pytest.raises(Exception):
        await nc.jetstream().get_last_msg("STRATEGY_SCHEDULES", "strategy.schedules.local.cli-sched")


async def test_a_malformed_env_option_is_refused_naming_it(server, nc):
    proc = await cli(server, "deployments", "create", "bad-env", "--strategy", "cli-sched", "--symbols", "LIVE",
                     "--timeframe", "1d", "--env", "NOEQUALS")
    assert proc.returncode == 2 and "--env 'NOEQUALS'" in proc.stderr
