"""`deploy` (strategy.v1.deployments.deploy, `HostingClient.deploy`/`deploy_file`, `strategy-node
deploy FILE`): one step from source to a running deployment, through a real nats-server and nodes.
A new deployment is created on the new version; an existing one moves to it and only the options
given change; a refused option or source stores nothing."""

from __future__ import annotations

import os
import sys

import msgspec
import pytest

from backtest.store import BarStore
from contracts import ErrorCode, subjects
from node.hosting import schedules
from node.hosting.client import HostingClient, HostingError
from tests.test_readme import run

from .support import arrays, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="module")
NODE_NAMES = ("host-a",)  # control requests and runs: one node serves them all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUY = "def strategy(data):\n    return 'BUY'\n"
SELL = "def strategy(data):\n    return 'SELL'\n"


async def _bars(nc) -> HostingClient:
    hosting = HostingClient(nc)
    if not (await hosting.list_strategies()).strategies:
        await BarStore(nc.jetstream(), nc).load("DF", "1d", arrays(30, seed=29))
    return hosting


async def _versions(hosting, name):
    try:
        return len((await hosting.strategy_versions(name)).versions)
    except HostingError:
        return 0


async def test_deploy_creates_then_moves_the_deployment_to_each_new_version(nc, nodes):
    hosting = await _bars(nc)
    first = await hosting.deploy(BUY, strategy="flip", symbols=["DF"], timeframe="1d", lookback=20,
                                 env={"MODE": "paper"})
    assert first.strategy_version == 1 and first.deployment.id == "flip" and first.deployment.version == 1
    second = await hosting.deploy(SELL, strategy="flip", description="sell now")
    dep = second.deployment
    assert second.strategy_version == 2 and dep.version == 2 and second.status.version == 2
    assert (dep.symbols, dep.timeframe, dep.lookback, dep.env) == (["DF"], "1d", 20, {"MODE": "paper"})  # kept
    run_id = (await hosting.run_now("flip")).run_id

    async def ran():
        runs = [r for r in (await hosting.runs("flip")).runs if r.run_id == run_id]
        return runs[0] if runs else None

    record = await wait_for(ran, timeout=15)
    assert record.version == 2 and record.signal.type == "SELL", record  # the new source runs
    await hosting.delete_deployment("flip")


async def test_deploy_changes_only_the_options_given_and_may_add_a_schedule(nc, nodes):
    hosting = await _bars(nc)
    await hosting.deploy(BUY, strategy="sched-df", id="sched-df-live", symbols=["DF"], timeframe="1d",
                         overlap="allow")
    reply = await hosting.deploy(BUY, strategy="sched-df", id="sched-df-live", schedule="open+5m", session="XNYS",
                                 desired="paused")
    dep = reply.deployment
    assert (dep.schedule, dep.session, dep.overlap, dep.desired) == ("open+5m", "XNYS", "allow", "paused")
    assert (await schedules.published(nc.jetstream(), "local", "sched-df-live")).startswith("@at ")
    assert reply.status.state == "paused" and reply.status.next_fire is None
    await hosting.delete_deployment("sched-df-live")


@pytest.mark.parametrize("fields, named", [
    ({"session": "XNSX", "schedule": "* * * * * *"}, "`$.session` 'XNSX'"),
    ({"window": "09:00-10:00"}, "window applies to a schedule only"),
    ({"schedule": "open+5m"}, "give `session`"),
    ({"timeout_ms": 10_000_000}, "timeout_ms"),
    ({"secrets": ["NOT_SET_HERE"]}, "secrets"),  # these nodes hold no key: refused before anything
])
async def test_a_refused_option_stores_no_version_and_changes_nothing(nc, nodes, fields, named):
    hosting = await _bars(nc)
    if not await _versions(hosting, "guarded"):
        await hosting.deploy(BUY, strategy="guarded", symbols=["DF"], timeframe="1d", desired="paused")
    before = await _versions(hosting, "guarded")
    with pytest.raises(HostingError) as refused:
        await hosting.deploy(SELL, strategy="guarded", **fields)
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and named in refused.value.error.message
    assert await _versions(hosting, "guarded") == before
    dep = (await hosting.get_deployment("guarded")).deployment
    assert (dep.version, dep.schedule, dep.session, dep.window) == (before, None, None, None)


async def test_source_that_does_not_compile_stores_nothing(nc, nodes):
    hosting = await _bars(nc)
    with pytest.raises(HostingError) as refused:
        await hosting.deploy("def strategy(data:\n", strategy="broken", symbols=["DF"], timeframe="1d")
    assert refused.value.error.code == ErrorCode.COMPILE_ERROR
    assert await _versions(hosting, "broken") == 0
    assert "broken" not in {v.deployment.id for v in (await hosting.list_deployments()).deployments}


async def test_a_new_deployment_needs_symbols_and_a_timeframe(nc, nodes):
    hosting = await _bars(nc)
    for fields, named in (({"timeframe": "1d"}, "`$.symbols` is required"),
                          ({"symbols": ["DF"]}, "`$.timeframe` is required")):
        with pytest.raises(HostingError) as refused:
            await hosting.deploy(BUY, strategy="needs", **fields)
        assert refused.value.error.code == ErrorCode.INVALID_REQUEST and named in refused.value.error.message
    assert await _versions(hosting, "needs") == 0


async def test_deploying_another_strategy_onto_a_deployment_id_is_refused(nc, nodes):
    hosting = await _bars(nc)
    await hosting.deploy(BUY, strategy="owner", symbols=["DF"], timeframe="1d", desired="paused")
    with pytest.raises(HostingError) as refused:
        await hosting.deploy(SELL, strategy="intruder", id="owner")
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "`$.id` 'owner'" in refused.value.error.message
    assert await _versions(hosting, "intruder") == 0
    assert (await hosting.get_deployment("owner")).deployment.strategy == "owner"
    await hosting.delete_deployment("owner")


async def test_an_unknown_deploy_field_is_refused_naming_it(nc, nodes):
    body = {"strategy": "typo", "code": BUY, "symbols": ["DF"], "timeframe": "1d", "schedul": "@every 1s"}
    reply = msgspec.json.decode((await nc.request(f"{subjects.DEPLOYMENTS}.deploy", msgspec.json.encode(body),
                                                  timeout=10)).data)
    assert not reply["ok"] and reply["error"]["code"] == "INVALID_REQUEST" and "`schedul`" in reply["error"]["message"]


async def test_deploy_file_names_the_strategy_after_the_files_stem(nc, nodes, tmp_path):
    hosting = await _bars(nc)
    path = tmp_path / "stem_named.py"
    path.write_text(BUY)
    reply = await hosting.deploy_file(path, symbols=["DF"], timeframe="1d", desired="paused")
    assert (reply.deployment.strategy, reply.deployment.id, reply.strategy_version) == ("stem_named", "stem_named", 1)
    await hosting.delete_deployment("stem_named")


async def test_the_cli_deploys_a_file_and_redeploys_it_with_a_schedule(server, nc, nodes, tmp_path):
    await _bars(nc)
    path = tmp_path / "cli_orb.py"
    path.write_text(BUY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = server.url
    proc = await run([sys.executable, "-m", "node", "deploy", str(path), "--symbols", "DF", "--timeframe", "1d",
                      "--paused"], ROOT, env)
    assert proc.returncode == 0, proc.stderr
    assert "cli_orb version 1 stored; deployment cli_orb created" in proc.stdout
    path.write_text(SELL)
    proc = await run([sys.executable, "-m", "node", "deploy", str(path), "--schedule", "0 */5 9-15 * * MON-FRI",
                      "--tz", "Asia/Kolkata", "--session", "XNSE", "--window", "09:20-15:10", "--env", "MODE=live"],
                     ROOT, env)
    assert proc.returncode == 0, proc.stderr
    assert "cli_orb version 2 stored; deployment cli_orb updated" in proc.stdout
    dep = (await HostingClient(nc).get_deployment("cli_orb")).deployment
    assert (dep.version, dep.schedule, dep.tz, dep.session, dep.window, dep.env, dep.desired) == (
        2, "0 */5 9-15 * * MON-FRI", "Asia/Kolkata", "XNSE", "09:20-15:10", {"MODE": "live"}, "paused")
    proc = await run([sys.executable, "-m", "node", "deploy", str(path), "--session", "NOPE"], ROOT, env)
    assert proc.returncode == 1 and "INVALID_REQUEST" in proc.stderr and "`$.session` 'NOPE'" in proc.stderr
    await HostingClient(nc).delete_deployment("cli_orb")


@pytest.mark.parametrize("source", [
    "import os\ndef strategy(data):\n    return os.getcwd()\n",
    "def strategy(data):\n    return data.__class__.__subclasses__()\n",
    "import subprocess\ndef strategy(data):\n    return 'BUY'\n",
    "def strategy(data):\n    exec('1')\n    return 'BUY'\n",
])
async def test_deploy_refuses_source_the_policy_refuses_and_stores_nothing(nc, nodes, source):
    hosting = await _bars(nc)
    with pytest.raises(HostingError) as refused:
        await hosting.deploy(source, strategy="hostile", symbols=["DF"], timeframe="1d")
    assert refused.value.error.code == ErrorCode.SECURITY_VIOLATION
    assert await _versions(hosting, "hostile") == 0
    assert "hostile" not in {v.deployment.id for v in (await hosting.list_deployments()).deployments}


async def test_a_deployed_attack_fails_its_run_with_its_code_and_signals_nothing(nc, nodes):
    hosting = await _bars(nc)
    source = ("import operator\ndef strategy(data):\n    leak = operator.attrgetter('__class__')(data)\n"
              "    return 'BUY'\n")
    await hosting.deploy(source, strategy="sneaky", symbols=["DF"], timeframe="1d", desired="paused")
    await hosting.resume("sneaky")
    run_id = (await hosting.run_now("sneaky")).run_id

    async def ran():
        found = [r for r in (await hosting.runs("sneaky")).runs if r.run_id == run_id]
        return found[0] if found else None

    record = await wait_for(ran, timeout=15)
    assert record.status == "error" and record.error.code == ErrorCode.SECURITY_VIOLATION and record.signal is None, record
    await hosting.delete_deployment("sneaky")
