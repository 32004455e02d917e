"""Tenants proven by NATS accounts, attacked through a real nats-server running
deploy/nats/permissions.conf: `client` is account TENANT_A, `client2` is account TENANT_B, the
node is account STRATEGY. A real node with warm workers on (one per tenant) serves them.

Which process served a request is read from the node's pool (the pid each run was sent to), so
"A never runs in B's worker" is checked on the process itself, not on what a strategy manages
to leak: whatever B leaves in its worker, A cannot read it from a process it never runs in.
"""

from __future__ import annotations

import asyncio
import json
import subprocess

import nats.errors
import pytest
import pytest_asyncio

from contracts import subjects
from node import jobs_client
from node.config import Settings
from node.embedded import server_binary
from node.identity import Tenant
from node.service import Node
from tests.support import columnar_bars

from .support import PASSWORDS, PERMISSIONS_CONF, Connections, password_env

ECHO = "def strategy(data):\n    return {'signal': 'HOLD', 'who': params['who']}\n"


@pytest_asyncio.fixture(scope="module")
async def tenant_node(permissions_server, tmp_path_factory):
    settings = Settings.from_env({
        "NODE_ID": "tenant-node", "MAX_WORKERS": "4", "SANDBOX_READY": "2",
        "TENANT_WARM_RUNS": "50", "TENANT_WARM_WORKERS": "1", "TENANT_WARM_MAX": "8",
        "JOBS_ACK_WAIT_SECONDS": "5",
        # each tenant's job id runs once within this window (node/jobqueue/claims.py)
        "JOBS_DUPLICATE_WINDOW_SECONDS": "1",
        "JOB_REPLY_PREFIXES": "TENANT_A=_INBOX_client,TENANT_B=_INBOX_client2",  # as permissions.conf
        "HEARTBEAT_FILE": str(tmp_path_factory.mktemp("hb") / "heartbeat"),
    })
    node = Node(settings, permissions_server.url,
                connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    served: list[int] = []  # pid of the process each run was sent to, in order
    exchange = node.pool.exchange

    async def recording_exchange(child, job, payload):
        served.append(child.pid)
        return await exchange(child, job, payload)

    node.pool.exchange = recording_exchange
    await node.start()
    warm_exchange = node.pool.warm._exchange  # a warm worker's runs go over its own channel

    async def recording_warm_exchange(worker, job, body):
        served.append(worker.child.pid)
        return await warm_exchange(worker, job, body)

    node.pool.warm._exchange = recording_warm_exchange
    job_subjects: list[str] = []  # subjects of the durable jobs the node identified
    identify_job = node.verifier.job

    def recording_job(subject):
        job_subjects.append(subject)
        return identify_job(subject)

    node.verifier.job = recording_job
    node.job_subjects = job_subjects
    conns = Connections(permissions_server.url)
    yield node, served, conns
    await conns.close()
    await node.stop()


def execute(who: str, user_id: str | None = None) -> bytes:
    body = {"code": ECHO, "bars": columnar_bars(30), "parameters": {"who": who}}
    if user_id is not None:
        body["user_id"] = user_id
    return json.dumps(body).encode()


async def run_as(nc, who: str, user_id: str | None = None, headers: dict | None = None,
                 served: list[int] | None = None) -> tuple[dict, int | None]:
    """Execute through NATS; the reply and the pid of the process that ran it."""
    before = len(served) if served is not None else 0
    msg = await nc.request(subjects.EXECUTE, execute(who, user_id), timeout=15, headers=headers)
    reply = json.loads(msg.data)
    assert reply["success"] and reply["result"]["who"] == who, reply
    pid = served[-1] if served is not None and len(served) > before else None
    return reply, pid


async def test_a_tenants_runs_share_the_warm_worker_of_its_account_and_user(tenant_node):
    node, served, conns = tenant_node
    a = await conns.connect("client")
    _, first = await run_as(a, "a1", "u1", served=served)
    _, second = await run_as(a, "a2", "u1", served=served)
    assert first == second
    assert node.pool.warm_children()[Tenant("TENANT_A", "client", "u1")] == [first]


async def test_tenant_a_never_runs_in_tenant_bs_worker_whatever_user_id_it_sends(tenant_node):
    node, served, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    _, b_pid = await run_as(b, "b-plants", "bob", served=served)  # B's worker, where B could plant state
    assert node.pool.warm_children()[Tenant("TENANT_B", "client2", "bob")] == [b_pid]
    # B's user id, B's account and user names, the key's parts, and none at all.
    for user_id in ("bob", "bob", "TENANT_B", "client2", "TENANT_B.client2.bob", "", None):
        _, a_pid = await run_as(a, f"a-as-{user_id}", user_id, served=served)
        assert a_pid != b_pid, user_id
    assert [t for t, pids in node.pool.warm_children().items() if b_pid in pids] == [
        Tenant("TENANT_B", "client2", "bob")]
    _, again = await run_as(b, "b-reads", "bob", served=served)
    assert again == b_pid  # B's worker is still B's alone


@pytest.mark.parametrize("forged", [
    {"acc": "TENANT_B", "user": "client2"},
    {"acc": "TENANT_B"},
    {"acc": "STRATEGY", "user": "node"},
])
async def test_a_forged_request_info_header_is_replaced_by_the_server(tenant_node, forged):
    node, served, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    _, b_pid = await run_as(b, "b-plants", "carol", served=served)
    tenants_before = set(node.pool.warm_children())
    _, a_pid = await run_as(a, "a-forges", "carol", served=served,
                            headers={subjects.REQUEST_INFO_HEADER: json.dumps(forged)})
    assert a_pid != b_pid
    new = set(node.pool.warm_children()) - tenants_before
    assert all(t.account == "TENANT_A" for t in new)
    assert node.pool.warm_children()[Tenant("TENANT_A", "client", "carol")] == [a_pid]


async def test_the_node_receives_the_servers_header_not_the_clients(permissions_server):
    # What arrives at a responder in STRATEGY when TENANT_A forges the header: the server's.
    conns = Connections(permissions_server.url)
    try:
        node = await conns.connect("node")
        seen = []

        async def answer(msg):
            seen.append((msg.reply, dict(msg.headers or {})))
            await msg.respond(b"{}")

        await node.subscribe(subjects.VALIDATE, queue=subjects.QUEUE_GROUP, cb=answer)
        await node.flush()
        a = await conns.connect("client")
        for _ in range(50):  # a real node of this module may share the queue group
            await a.request(subjects.VALIDATE, b"{}", timeout=5,
                            headers={subjects.REQUEST_INFO_HEADER: '{"acc":"TENANT_B","user":"client2"}'})
            if seen:
                break
        reply, headers = seen[0]
        info = json.loads(headers[subjects.REQUEST_INFO_HEADER])
        assert reply.startswith("_R_.")
        assert info["acc"] == "TENANT_A" and info["user"] == "client"
    finally:
        await conns.close()


async def test_users_of_the_nodes_own_account_cannot_publish_requests_to_forge_with(tenant_node):
    # Inside STRATEGY the server would pass a forged header untouched, so no one there but the
    # node may publish request subjects; the node itself never sets the header.
    _, _, conns = tenant_node
    for user in ("node", "ingest"):
        nc = await conns.connect(user)
        await nc.publish(subjects.EXECUTE, execute("forged", "bob"),
                         headers={subjects.REQUEST_INFO_HEADER: '{"acc":"TENANT_B"}'})
        await conns.wait_for_error(nc, f'publish to "{subjects.EXECUTE}"')


@pytest.mark.parametrize("user, subject", [("node", subjects.HEALTH), ("client", subjects.EXECUTE)])
async def test_no_client_can_forge_the_import_reply_subject_that_proves_a_header(tenant_node, user, subject):
    # The node trusts the header only on a `_R_.` reply; the server refuses that reply prefix
    # from every client connection, in the node's account and in a tenant's.
    node, _, conns = tenant_node
    nc = await conns.connect(user)
    before = set(node.pool.warm_children())
    await nc.publish(subject, execute("forged", "bob"), reply="_R_.forged.reply",
                     headers={subjects.REQUEST_INFO_HEADER: '{"acc":"TENANT_B","user":"client2"}'})
    await conns.wait_for_error(nc, "permissions violation for publish with reply")
    assert set(node.pool.warm_children()) == before


def test_a_same_account_inbox_request_is_not_verified(tenant_node):
    node, _, _ = tenant_node
    caller = node.verifier.request({subjects.REQUEST_INFO_HEADER: '{"acc":"TENANT_B"}'}, "_INBOX.abc.def")
    assert not caller.verified and caller.tenant("bob") is None


async def test_health_reports_the_nodes_account_and_that_body_user_ids_are_not_trusted(tenant_node):
    _, _, conns = tenant_node
    probe = await conns.connect("node")
    msg = await probe.request(subjects.node_health("tenant-node"), b"{}", timeout=5)
    health = json.loads(msg.data)
    assert health["nats_account"] == "STRATEGY"
    assert health["trust_body_user_id"] is False


# -- durable jobs: the tenant is the subject token the server wrote ------------------------------

async def test_a_tenants_job_is_stored_under_its_account_and_runs_as_it(tenant_node):
    node, served, conns = tenant_node
    a = await conns.connect("client")
    forged = {subjects.REQUEST_INFO_HEADER: '{"acc":"TENANT_B","user":"client2"}'}
    job_id = jobs_client.new_job_id()
    await a.jetstream(timeout=5).publish(f"{subjects.JOBS}.execute", execute("job-a", "dora"), timeout=5,
                                         headers={"Nats-Msg-Id": job_id, "Content-Type": "application/json",
                                                  **forged})
    result = await jobs_client.result(a, job_id, wait=20)
    assert result is not None and result.success and result.result["who"] == "job-a"
    assert subjects.tenant_jobs("TENANT_A", "execute") in node.job_subjects
    assert Tenant("TENANT_A", "", "dora") in node.pool.warm_children()
    assert not any(t.account == "TENANT_B" and t.user_id == "dora" for t in node.pool.warm_children())


async def submit_as(nc, who: str, job_id: str) -> None:
    await jobs_client.submit(nc, "execute", execute(who, "jobs"), job_id=job_id)


async def test_a_tenants_result_is_stored_under_its_account(tenant_node):
    node, _, conns = tenant_node
    a = await conns.connect("client")
    job_id = jobs_client.new_job_id()
    await submit_as(a, "a-stored", job_id)
    assert (await jobs_client.result(a, job_id, wait=20)).result["who"] == "a-stored"
    stored = await node.nc.jetstream().get_last_msg("STRATEGY_RESULTS", f"strategy.results.TENANT_A.{job_id}")
    assert json.loads(stored.data)["result"]["who"] == "a-stored"


async def test_a_tenant_cannot_read_another_tenants_result_by_its_job_id(tenant_node):
    _, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    job_id = "nightly-report-2026-12-01"  # a guessable id, as clients choose them
    await submit_as(a, "a-private", job_id)
    assert (await jobs_client.result(a, job_id, wait=20)).result["who"] == "a-private"
    assert await jobs_client.result(b, job_id) is None


@pytest.mark.parametrize("api", ["$JS.API.DIRECT.GET.STRATEGY_RESULTS", "$JS.API.STREAM.MSG.GET.STRATEGY_RESULTS"])
async def test_no_tenant_can_walk_the_stored_results_by_sequence(tenant_node, api):
    node, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    job_id = jobs_client.new_job_id()
    await submit_as(a, "a-walked", job_id)
    await jobs_client.result(a, job_id, wait=20)
    info = await node.nc.jetstream().stream_info("STRATEGY_RESULTS")
    with pytest.raises((nats.errors.NoRespondersError, nats.errors.TimeoutError)):
        await b.request(api, json.dumps({"seq": info.state.last_seq}).encode(), timeout=1)
    await conns.wait_for_error(b, "permissions violation for publish")


async def test_a_tenant_that_takes_another_tenants_job_id_first_never_becomes_its_result(tenant_node):
    _, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    job_id = "rebalance-2026-12-02"
    await submit_as(b, "b-poison", job_id)  # B guessed A's next id and ran first
    assert (await jobs_client.result(b, job_id, wait=20)).result["who"] == "b-poison"
    await submit_as(a, "a-own", job_id)  # at once: the id is claimed per tenant
    result = await jobs_client.result(a, job_id, wait=20)
    assert result is not None and result.result["who"] == "a-own"
    assert (await jobs_client.result(b, job_id)).result["who"] == "b-poison"  # B still sees only its own


async def test_two_tenants_submitting_one_job_id_at_the_same_moment_both_run(tenant_node):
    _, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    job_id = "daily-close-2026-12-02"  # a name both tenants' schedulers use
    await asyncio.gather(submit_as(a, "a-daily", job_id), submit_as(b, "b-daily", job_id))
    assert (await jobs_client.result(a, job_id, wait=20)).result["who"] == "a-daily"
    assert (await jobs_client.result(b, job_id, wait=20)).result["who"] == "b-daily"


async def test_another_tenants_nats_msg_id_shadows_a_job_for_at_most_the_streams_100_ms(tenant_node):
    _, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    job_id = "msg-id-" + jobs_client.new_job_id()
    await b.jetstream().publish("strategy.jobs.execute", execute("b-first", "jobs"), headers={"Nats-Msg-Id": job_id})
    await asyncio.sleep(0.3)
    ack = await a.jetstream().publish("strategy.jobs.execute", execute("a-after", "jobs"),
                                      headers={"Nats-Msg-Id": job_id})
    assert not ack.duplicate
    assert (await jobs_client.result(a, job_id, wait=20)).result["who"] == "a-after"
    assert (await jobs_client.result(b, job_id, wait=20)).result["who"] == "b-first"


async def test_a_tenants_retried_submit_of_one_job_id_runs_once(tenant_node):
    node, _, conns = tenant_node
    a = await conns.connect("client")
    job_id = jobs_client.new_job_id()
    skipped = node.jobs.skipped_duplicates
    await submit_as(a, "a-once", job_id)
    await submit_as(a, "a-retried", job_id)
    assert (await jobs_client.result(a, job_id, wait=20)).result["who"] == "a-once"
    deadline = asyncio.get_running_loop().time() + 10
    while node.jobs.skipped_duplicates == skipped and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert node.jobs.skipped_duplicates == skipped + 1
    stored = await node.nc.jetstream().stream_info("STRATEGY_RESULTS",
                                                   subjects_filter=f"strategy.results.TENANT_A.{job_id}")
    assert sum(stored.state.subjects.values()) == 1


async def test_a_tenants_job_is_pushed_to_an_inbox_of_its_own_account(tenant_node):
    _, _, conns = tenant_node
    a = await conns.connect("client")
    replies = await a.subscribe("_INBOX_client.jobs")  # a fixed inbox for every job's push reply
    job_id = jobs_client.new_job_id()
    await jobs_client.submit(a, "execute", execute("a-pushed", "jobs"), job_id=job_id, reply_to="_INBOX_client.jobs")
    msg = await replies.next_msg(timeout=20)
    assert msg.headers["Strategy-Job-Id"] == job_id and json.loads(msg.data)["result"]["who"] == "a-pushed"


async def test_a_tenants_job_cannot_push_its_result_into_another_tenants_inbox(tenant_node):
    _, _, conns = tenant_node
    a, b = await conns.connect("client"), await conns.connect("client2")
    b_inbox = await b.subscribe("_INBOX_client2.jobs")  # B's fixed inbox for its jobs' replies
    job_id = "b-expects-this-id"  # A also knows the id B matches replies by
    await jobs_client.submit(a, "execute", execute("forged-for-b", "jobs"), job_id=job_id,
                             reply_to="_INBOX_client2.jobs")
    stored = await jobs_client.result(a, job_id, wait=20)
    assert stored.error.code == "INVALID_REQUEST"
    assert "Strategy-Reply-To '_INBOX_client2.jobs' is not an inbox of account TENANT_A" in stored.error.message
    assert "_INBOX_client.>" in stored.error.message
    with pytest.raises(nats.errors.TimeoutError):
        await b_inbox.next_msg(timeout=1)


@pytest.mark.parametrize("reply_to", ["_INBOX.node-inbox.1", "_R_.abc.def"])
async def test_a_tenants_job_cannot_reply_into_the_nodes_account(tenant_node, reply_to):
    # Node inboxes (sweep fan-out, health) and the server's import replies of other requests.
    _, _, conns = tenant_node
    a = await conns.connect("client")
    job_id = jobs_client.new_job_id()
    await jobs_client.submit(a, "execute", execute("x", "jobs"), job_id=job_id, reply_to=reply_to)
    stored = await jobs_client.result(a, job_id, wait=20)
    assert stored.error.code == "INVALID_REQUEST" and "not an inbox of account TENANT_A" in stored.error.message


async def test_a_tenant_cannot_publish_a_job_under_another_accounts_token(tenant_node):
    _, _, conns = tenant_node
    a = await conns.connect("client")
    await a.publish(subjects.tenant_jobs("TENANT_B", "execute"), execute("x", "bob"))
    await conns.wait_for_error(a, "permissions violation for publish")


def test_the_server_refuses_an_import_of_another_accounts_job_token(tmp_path):
    # Even an operator's typo cannot give TENANT_A the subject of TENANT_B: the export's
    # account_token_position makes the server refuse the import when the config loads.
    conf = PERMISSIONS_CONF.read_text()
    bad = conf.replace('subject: "strategy.jobs.TENANT_A.*"', 'subject: "strategy.jobs.TENANT_B.*"')
    assert bad != conf
    path = tmp_path / "bad.conf"
    path.write_text(bad)
    with password_env():
        proc = subprocess.run([server_binary(), "-c", str(path), "-t"], capture_output=True, text=True,
                              timeout=20)
    assert proc.returncode != 0
    assert "service import not authorized" in (proc.stdout + proc.stderr)
