"""A durable-jobs node under the deployed `node` user (deploy/nats/permissions.conf): it declares
every stream it needs, including STRATEGY_LEASES, holds a lease while a tenant's job runs and
stores the result, with no permission violation. Without the lease permissions the node could
not tell a forged MAX_DELIVERIES advisory about a running job from a genuine one.

Its own server (same configuration), so the node's stream declarations meet no stream that
other permission tests declared with other settings.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from contracts import ExecuteResult
from node import jobs_client
from node.admission import Admission
from node.config import Settings
from node.durable import LEASES_STREAM, RESULTS_STREAM, JobConsumer, results_subject
from node.embedded import EmbeddedServer

from .support import PERMISSIONS_CONF, Connections, password_env


@pytest.fixture
async def own_conns():
    server = EmbeddedServer(config_file=str(PERMISSIONS_CONF), jetstream=True)
    with password_env():
        server.start()
    conns = Connections(server.url)
    try:
        yield conns
    finally:
        await conns.close()
        server.close()


async def test_a_jobs_node_holds_leases_and_stores_results_under_the_node_user(own_conns):
    node = await own_conns.connect("node")
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(data: bytes, kind: str, received: float):
        started.set()
        await release.wait()
        return ExecuteResult(success=True, result="done")

    settings = Settings.from_env({"NODE_ID": "perm-jobs", "JOBS_ACK_WAIT_SECONDS": "0.6"})
    consumer = JobConsumer(node, settings, Admission(1, 4), lambda kind: handler)
    consumer.start()
    try:
        deadline = time.monotonic() + 15
        while consumer.state != "consuming":
            assert time.monotonic() < deadline, consumer.last_error
            await asyncio.sleep(0.05)
        assert consumer._leases, "the node could not declare STRATEGY_LEASES"

        client = await own_conns.connect("client")
        job_id = uuid.uuid4().hex
        await client.jetstream(timeout=5).publish(
            "strategy.jobs.execute", json.dumps({"code": "x"}).encode(), headers={"Nats-Msg-Id": job_id})
        await asyncio.wait_for(started.wait(), 10)
        js = node.jetstream(timeout=5)
        for _ in range(100):  # the running job's lease
            if (await js.stream_info(LEASES_STREAM)).state.messages >= 1:
                break
            await asyncio.sleep(0.02)
        assert (await js.stream_info(LEASES_STREAM)).state.messages >= 1
        release.set()
        stored = None
        for _ in range(200):
            try:  # a tenant's result is kept under its account (node.durable.stored_key)
                stored = await js.get_last_msg(RESULTS_STREAM, results_subject(f"TENANT_A.{job_id}"))
                break
            except Exception:  # noqa: BLE001 - not stored yet
                await asyncio.sleep(0.05)
        assert stored is not None and json.loads(stored.data)["result"] == "done"
        assert (await jobs_client.result(client, job_id)).result == "done"  # read as the tenant reads it
    finally:
        release.set()
        await consumer.close()
        await consumer.admission.drain(5)
    assert own_conns.errors_of(node) == []
