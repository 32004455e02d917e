"""A deployment's change history (strategy.v1.deployments.history, `HostingClient.history`,
`strategy-node deployments history ID`): every revision of its desired state kept in KV
DEPLOYMENTS, with who made it, when, how, and which fields changed."""

from __future__ import annotations

import os
import sys

import pytest

from contracts import ErrorCode
from node.hosting import streams
from node.hosting.client import HostingClient, HostingError
from tests.test_readme import run

pytestmark = pytest.mark.asyncio(loop_scope="module")
NODE_NAMES = ("host-a",)  # control requests and runs: one node serves them all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
CODE = "def strategy(data):\n    return 'HOLD'\n"


async def _lived(hosting: HostingClient, dep_id: str) -> None:
    await hosting.put_strategy("hist", CODE)
    await hosting.put_strategy("hist", CODE.replace("HOLD", "BUY"))
    await hosting.create_deployment(dep_id, strategy="hist", version=1, symbols=["H1"], timeframe="1d",
                                    desired="paused")
    await hosting.update_deployment(dep_id, version=2)
    await hosting.resume(dep_id)
    await hosting.update_deployment(dep_id, schedule="0 0 10 * * MON-FRI", tz="Europe/Berlin")
    await hosting.stop(dep_id)


async def test_history_lists_every_change_with_who_when_how_and_what(nc, nodes):
    hosting = HostingClient(nc)
    await _lived(hosting, "hist-a")
    changes = (await hosting.history("hist-a")).history
    assert [c.change for c in changes] == ["create", "update", "resume", "update", "stop"]
    assert [c.changed for c in changes[1:]] == [["version"], ["desired"], ["schedule", "tz"], ["desired"]]
    assert "version" in changes[0].changed and "desired" in changes[0].changed
    assert [c.deployment.version for c in changes] == [1, 2, 2, 2, 2]
    assert [c.deployment.desired for c in changes] == ["paused", "paused", "running", "running", "stopped"]
    assert changes[3].deployment.schedule == "0 0 10 * * MON-FRI" and changes[3].deployment.tz == "Europe/Berlin"
    assert all(c.by == "local" for c in changes)  # a server without accounts: the operator's tenant
    assert [c.at for c in changes] == sorted(c.at for c in changes) and all(c.at.endswith("Z") for c in changes)
    revisions = [c.revision for c in changes]
    assert revisions == sorted(revisions) and len(set(revisions)) == 5
    await hosting.delete_deployment("hist-a")


async def test_history_limit_gives_the_newest_changes(nc, nodes):
    hosting = HostingClient(nc)
    await _lived(hosting, "hist-b")
    newest = (await hosting.history("hist-b", limit=2)).history
    assert [c.change for c in newest] == ["update", "stop"]
    await hosting.delete_deployment("hist-b")


async def test_history_keeps_more_revisions_than_the_old_five(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("hist", CODE)
    await hosting.create_deployment("hist-long", strategy="hist", symbols=["H1"], timeframe="1d", desired="paused")
    for lookback in range(10, 30):
        await hosting.update_deployment("hist-long", lookback=lookback)
    changes = (await hosting.history("hist-long")).history
    assert len(changes) == 21 and changes[0].change == "create" and changes[-1].deployment.lookback == 29
    info = await nc.jetstream().stream_info(f"KV_{streams.DEPLOYMENTS}")
    assert info.config.max_msgs_per_subject == 64
    await hosting.delete_deployment("hist-long")


async def test_a_deleted_deployment_has_no_history_and_a_new_one_starts_afresh(nc, nodes):
    hosting = HostingClient(nc)
    await _lived(hosting, "hist-c")
    await hosting.delete_deployment("hist-c")
    with pytest.raises(HostingError) as gone:
        await hosting.history("hist-c")
    assert gone.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in gone.value.error.message
    await hosting.create_deployment("hist-c", strategy="hist", symbols=["H1"], timeframe="1d", desired="paused")
    assert [c.change for c in (await hosting.history("hist-c")).history] == ["create"]
    await hosting.delete_deployment("hist-c")


async def test_history_of_an_unknown_deployment_is_not_found(nc, nodes):
    with pytest.raises(HostingError) as refused:
        await HostingClient(nc).history("never-made")
    assert refused.value.error.code == ErrorCode.INVALID_REQUEST and "not found" in refused.value.error.message


async def test_the_cli_prints_the_history(server, nc, nodes):
    hosting = HostingClient(nc)
    await _lived(hosting, "hist-cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env["NATS_URL"] = server.url
    proc = await run([sys.executable, "-m", "node", "deployments", "history", "hist-cli"], ROOT, env)
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["REV", "AT", "BY", "CHANGE", "WHAT"]
    assert len(rows) == 5
    assert "create" in rows[0] and "version=v1" in rows[0] and "desired=paused" in rows[0]
    assert "update" in rows[1] and "version=v2" in rows[1]
    assert "resume" in rows[2] and "desired=running" in rows[2]
    assert "schedule='0 0 10 * * MON-FRI' Europe/Berlin, tz" in rows[3]
    assert "stop" in rows[4] and "desired=stopped" in rows[4]
    await hosting.delete_deployment("hist-cli")


async def test_a_history_too_large_for_one_message_keeps_the_newest_changes_and_says_so(nc, nodes):
    hosting = HostingClient(nc)
    await hosting.put_strategy("hist", CODE)
    big = {f"K{i}": "v" * 4000 for i in range(64)}  # ~260 KB a revision: five do not fit in 1 MB
    await hosting.create_deployment("hist-big", strategy="hist", symbols=["H1"], timeframe="1d", desired="paused",
                                    env=big)
    for lookback in (11, 12, 13, 14):
        await hosting.update_deployment("hist-big", lookback=lookback)
    reply = await hosting.history("hist-big")
    assert reply.history_truncated and 1 <= len(reply.history) < 5
    assert reply.history[-1].deployment.lookback == 14 and reply.history[-1].changed == ["lookback"]
    lookbacks = [c.deployment.lookback for c in reply.history]
    assert lookbacks == list(range(15 - len(lookbacks), 15))  # the newest, in order
    assert not (await hosting.history("hist-big", limit=1)).history_truncated
    await hosting.delete_deployment("hist-big")
