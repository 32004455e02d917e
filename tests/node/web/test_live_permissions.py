"""The live sources the dashboard follows for a tenant are that tenant's only (deploy/nats/
permissions.conf on a real server): each tenant account imports the changes of its own keys in
DEPLOYMENT_STATUS / DEPLOYMENT_RUNS / DEPLOYMENT_STATE, read-only; another tenant's keys, the
whole bucket, and writing are refused by the server."""

from __future__ import annotations

import asyncio

import nats

from tests.deploy.support import PASSWORDS

BUCKETS = ("DEPLOYMENT_STATUS", "DEPLOYMENT_RUNS", "DEPLOYMENT_STATE")


async def _as(web_env, user: str, inbox: str):
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(web_env.nats_url, user=user, password=PASSWORDS[user], inbox_prefix=inbox,
                            error_cb=error_cb, allow_reconnect=False)
    return nc, errors


def test_a_tenant_follows_its_own_deployment_status_and_nobody_elses(web_env):
    alice = web_env.hosting("alice")
    web_env.run(alice.put_strategy("perm-s", "def strategy(data):\n    return 'HOLD'\n"))
    web_env.run(alice.create_deployment("perm-dep", strategy="perm-s", symbols=["PERM1"], timeframe="1d"))

    async def go():
        a, a_errors = await _as(web_env, "client", "_INBOX_client")
        b, b_errors = await _as(web_env, "client2", "_INBOX_client2")
        try:
            mine = await a.subscribe("$KV.DEPLOYMENT_STATUS.TENANT_A.>")
            theirs = [await b.subscribe(f"$KV.{bucket}.TENANT_A.>") for bucket in BUCKETS]
            whole = await b.subscribe("$KV.DEPLOYMENT_STATUS.>")
            await a.flush()
            await b.flush()
            await alice.pause("perm-dep")
            change = await mine.next_msg(timeout=5)
            assert change.subject == "$KV.DEPLOYMENT_STATUS.TENANT_A.perm-dep" and b'"paused"' in change.data
            await asyncio.sleep(0.3)
            for sub in [*theirs, whole]:
                assert sub.pending_msgs == 0
            assert sum("permissions violation for subscription" in e for e in b_errors) == 4
            # the import is read-only: a tenant cannot write a status, not even its own
            await a.publish("$KV.DEPLOYMENT_STATUS.TENANT_A.perm-dep", b'{"id": "perm-dep", "state": "running"}')
            await a.flush()
            await asyncio.sleep(0.2)
            assert any("permissions violation for publish" in e for e in a_errors)
            assert (await alice.get_deployment("perm-dep")).status.state == "paused"
        finally:
            await a.close()
            await b.close()

    web_env.run(go())
