"""`strategy-node secrets set|ls|rm` and the deploy options --schedule/--tz/--env/--secret, as a
user runs them, against a node holding a key-encryption key."""

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
from tests.test_readme import run

from .support import arrays

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VALUE = "cli-secret-value-123456"


@pytest.fixture(scope="module")
def server():
    srv = EmbeddedServer().start()
    yield srv
    srv.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def nc(server):
    key = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    node = Node(Settings.from_env({"MAX_WORKERS": "1", "NODE_ID": "cli-secrets", "SECRETS_KEY": key}), server.url)
    await node.start()
    await asyncio.wait_for(node.hosting.ready.wait(), 20)
    conn = await nats.connect(server.url)
    await BarStore(conn.jetstream(), conn).load("CS", "1d", arrays(30, seed=7))
    yield conn
    await conn.drain()
    await node.stop()


async def cli(server, *argv: str, stdin_env: dict | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = server.url
    env.update(stdin_env or {})
    return await run([sys.executable, "-m", "node", *argv], ROOT, env)


async def test_secrets_set_ls_rm_round_trip_never_prints_the_value(server, nc):
    proc = await cli(server, "secrets", "set", "CLI_KEY", "--from-env", "CLI_VALUE", stdin_env={"CLI_VALUE": VALUE})
    assert proc.returncode == 0 and "CLI_KEY stored" in proc.stdout and VALUE not in proc.stdout
    proc = await cli(server, "secrets", "ls")
    assert proc.returncode == 0 and "CLI_KEY" in proc.stdout and VALUE not in proc.stdout
    proc = await cli(server, "secrets", "ls", "--json")
    assert VALUE not in proc.stdout
    proc = await cli(server, "secrets", "rm", "CLI_KEY")
    assert proc.returncode == 0 and "CLI_KEY deleted" in proc.stdout
    assert "CLI_KEY" not in (await cli(server, "secrets", "ls")).stdout


async def test_secrets_set_from_an_unset_variable_is_refused(server, nc):
    proc = await cli(server, "secrets", "set", "CLI_KEY", "--from-env", "NOT_SET_ANYWHERE_16")
    assert proc.returncode == 2 and "NOT_SET_ANYWHERE_16" in proc.stderr


async def test_deploy_options_reach_the_deployment(server, nc):
    await HostingClient(nc).set_secret("DEPLOY_KEY", VALUE)
    await HostingClient(nc).put_strategy("cli-sched", "def strategy(data):\n    return 'HOLD'\n")
    proc = await cli(server, "deployments", "create", "cli-sched", "--strategy", "cli-sched", "--symbols", "CS",
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
    proc = await cli(server, "deployments", "create", "bad-env", "--strategy", "cli-sched", "--symbols", "CS",
                     "--timeframe", "1d", "--env", "NOEQUALS")
    assert proc.returncode == 2 and "--env 'NOEQUALS'" in proc.stderr
