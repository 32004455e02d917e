"""deploy/nats/permissions.conf enforced by a real nats-server: who may do what.

Each test connects as the configured users (`node`, `client`, `client2`; clients with their
own inbox prefixes) and checks one permission. A denied subscribe or publish does not close
the connection: the server sends -ERR 'Permissions Violation …', which nats-py hands to
error_cb — the tests capture those and also check the observable effect (nothing delivered,
nothing consumed, stream intact).
"""

from __future__ import annotations

import asyncio
import json
import logging

import nats
import nats.js.errors
import pytest
from nats.errors import NoRespondersError, TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, StreamConfig
from nats.js.errors import NotFoundError

from contracts import subjects
from node.config import Settings
from node.durable import consumer_config, stream_configs

JOBS_STREAM = "STRATEGY_JOBS"
RESULTS_STREAM = "STRATEGY_RESULTS"
JOBS_CONSUMER = "strategy-workers"


@pytest.fixture
async def job_streams(conns):
    """STRATEGY_JOBS with its shared durable consumer, and STRATEGY_RESULTS — declared by the
    node user, as the node does at start-up (idempotent)."""
    node = await conns.connect("node")
    js = node.jetstream(timeout=5)
    jobs, results, _dead = stream_configs(Settings.from_env({}))
    await js.add_stream(jobs)
    await js.add_stream(results)
    try:
        await js.add_consumer(JOBS_STREAM, consumer_config(Settings.from_env({})))
    except nats.js.errors.BadRequestError:  # a node of another test declared it with its settings
        await js.consumer_info(JOBS_STREAM, JOBS_CONSUMER)
    return js


async def _pending_jobs(node_js) -> int:
    info = await node_js.consumer_info(JOBS_STREAM, JOBS_CONSUMER)
    return info.num_pending + info.num_ack_pending


async def test_anonymous_connection_is_rejected(permissions_server):
    with pytest.raises(Exception) as caught:
        await nats.connect(
            permissions_server.url, allow_reconnect=False, max_reconnect_attempts=0,
            connect_timeout=2,
        )
    assert "authorization" in str(caught.value).lower()


async def test_client_cannot_subscribe_to_request_subjects(conns):
    client = await conns.connect("client")
    await client.subscribe(subjects.EXECUTE, queue=subjects.QUEUE_GROUP)
    err = await conns.wait_for_error(client, "permissions violation for subscription")
    assert '"strategy.v1.execute"' in err


async def test_client_cannot_impersonate_a_node(conns):
    impostor = await conns.connect("client")
    await impostor.subscribe("strategy.v1.>", queue=subjects.QUEUE_GROUP)
    await conns.wait_for_error(impostor, "permissions violation for subscription")
    # The server never registered the impostor's interest: a request finds no responder.
    victim = await conns.connect("client2")
    with pytest.raises(NoRespondersError):
        await victim.request(subjects.EXECUTE, b"{}", timeout=2)


async def test_client_cannot_subscribe_to_another_clients_inbox(conns):
    snoop = await conns.connect("client")
    await snoop.subscribe("_INBOX_client2.>")
    err = await conns.wait_for_error(snoop, "permissions violation for subscription")
    assert "_inbox_client2" in err.lower()


async def test_client_without_its_inbox_prefix_cannot_receive_replies(conns):
    # The default _INBOX prefix is outside every client's subscribe permission, so a client
    # must connect with its own prefix (deploy/README.md, "Client inbox prefixes").
    client = await conns.connect("client", inbox_prefix=None)
    node = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b"pong")

    await node.subscribe(subjects.HEALTH, queue=subjects.QUEUE_GROUP, cb=answer)
    await node.flush()
    with pytest.raises(NatsTimeoutError):
        await client.request(subjects.HEALTH, b"", timeout=1)
    assert any("_inbox." in e.lower() for e in conns.errors_of(client))


async def test_client_cannot_create_consumer_on_job_stream(conns, job_streams):
    client = await conns.connect("client")
    js = client.jetstream(timeout=1)
    with pytest.raises(NatsTimeoutError):
        await js.add_consumer(JOBS_STREAM, ConsumerConfig(durable_name="thief"))
    err = await conns.wait_for_error(client, "permissions violation for publish")
    assert "$js.api.consumer" in err.lower()
    # Only the shared durable consumer exists.
    assert (await job_streams.stream_info(JOBS_STREAM)).state.consumer_count == 1


async def test_client_cannot_pull_from_shared_job_consumer(conns, job_streams):
    client = await conns.connect("client")
    await client.jetstream(timeout=5).publish("strategy.jobs.pull-test", b'{"job_id":"j-1"}')
    before = await _pending_jobs(job_streams)
    assert before >= 1

    # The raw pull request a worker sends; denied, so nothing is delivered or consumed.
    inbox = client.new_inbox()
    sub = await client.subscribe(inbox)
    await client.publish(
        f"$JS.API.CONSUMER.MSG.NEXT.{JOBS_STREAM}.{JOBS_CONSUMER}",
        json.dumps({"batch": 1, "expires": 500_000_000}).encode(),
        reply=inbox,
    )
    err = await conns.wait_for_error(client, "permissions violation for publish")
    assert "msg.next" in err.lower()
    with pytest.raises(NatsTimeoutError):
        await sub.next_msg(timeout=0.7)
    assert await _pending_jobs(job_streams) == before


async def test_client_can_publish_job_to_job_stream(conns, job_streams):
    client = await conns.connect("client")
    ack = await client.jetstream(timeout=5).publish("strategy.jobs.x", b'{"job_id":"j-2"}')
    assert ack.stream == JOBS_STREAM
    assert conns.errors_of(client) == []


async def test_client_cannot_publish_results(conns, job_streams):
    client = await conns.connect("client")
    await client.publish("strategy.results.forged", b'{"success": true}')
    await conns.wait_for_error(client, "permissions violation for publish")
    with pytest.raises(NotFoundError):
        await job_streams.get_last_msg(RESULTS_STREAM, "strategy.results.forged", direct=True)


async def test_client_reads_its_accounts_result_by_job_id(conns, job_streams):
    # The node stores a tenant's result under strategy.results.<account>.<job id>; the tenant
    # asks for strategy.results.<job id> and its import maps the read into its own account's.
    await job_streams.publish("strategy.results.TENANT_A.job-123", b'{"success": true}')
    client = await conns.connect("client")
    msg = await client.jetstream(timeout=5).get_last_msg(
        RESULTS_STREAM, "strategy.results.job-123", direct=True
    )
    assert msg.data == b'{"success": true}'


async def test_client_cannot_read_another_accounts_result_by_job_id(conns, job_streams):
    await job_streams.publish("strategy.results.TENANT_A.job-124", b'{"who": "a"}')
    await job_streams.publish("strategy.results.job-124", b'{"who": "node account"}')
    other = await conns.connect("client2")
    js = other.jetstream(timeout=5)
    for subject in ("strategy.results.job-124", "strategy.results.TENANT_A.job-124"):
        with pytest.raises(NotFoundError):  # looked up in TENANT_B's own results only
            await js.get_last_msg(RESULTS_STREAM, subject, direct=True)


@pytest.mark.parametrize("api", ["$JS.API.DIRECT.GET.STRATEGY_RESULTS", "$JS.API.STREAM.MSG.GET.STRATEGY_RESULTS"])
async def test_client_cannot_read_results_by_sequence(conns, job_streams, api):
    # Both forms take a sequence in the body, which would walk every tenant's results.
    ack = await job_streams.publish("strategy.results.TENANT_A.job-125", b'{"who": "a"}')
    other = await conns.connect("client2")
    with pytest.raises((NoRespondersError, NatsTimeoutError)):
        await other.request(api, json.dumps({"seq": ack.seq}).encode(), timeout=1)
    await conns.wait_for_error(other, "permissions violation for publish")


async def test_node_answers_client_request_in_queue_group(conns):
    node = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b'{"success": true}')

    await node.subscribe(subjects.EXECUTE, queue=subjects.QUEUE_GROUP, cb=answer)
    await node.flush()
    client = await conns.connect("client")  # inbox prefix _INBOX_client
    reply = await client.request(subjects.EXECUTE, b'{"code": "x"}', timeout=2)
    assert reply.data == b'{"success": true}'
    assert reply.subject.startswith("_INBOX_client.")
    assert conns.errors_of(node) == [] and conns.errors_of(client) == []


async def test_node_cannot_subscribe_outside_its_queue_group(conns):
    # A plain subscription would hand one node a copy of every request.
    node = await conns.connect("node")
    await node.subscribe(subjects.EXECUTE)
    await conns.wait_for_error(node, "permissions violation for subscription")


async def test_a_tenants_reply_subject_never_reaches_the_node_account(conns, job_streams):
    # A tenant names a JetStream API call as its reply subject. The request crosses accounts
    # through the service import, so the server hands the node a `_R_.` reply subject of its
    # own and keeps the tenant's subject on the tenant's side: the node cannot be steered.
    node = await conns.connect("node")
    seen: list[str] = []

    async def answer(msg):
        seen.append(msg.reply)
        await msg.respond(b"{}")

    await node.subscribe(subjects.EXECUTE, queue=subjects.QUEUE_GROUP, cb=answer)
    await node.flush()
    client = await conns.connect("client")
    await client.publish(subjects.EXECUTE, b"{}", reply=f"$JS.API.STREAM.DELETE.{JOBS_STREAM}")
    await client.flush()
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    assert seen and seen[0].startswith("_R_.")
    assert conns.errors_of(node) == []
    info = await job_streams.stream_info(JOBS_STREAM)
    assert info.config.name == JOBS_STREAM


async def test_request_reply_subject_cannot_steer_node_into_jetstream_api(conns, job_streams):
    # Inside the node's own account (here a probe's health request) a requester's reply
    # subject arrives as it was sent: with
    # allow_responses the node's ordinary answer would delete the work queue. Its publish
    # allow-list stops that (and node.nats_auth.is_inbox_subject refuses such replies).
    node = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b"{}")

    await node.subscribe(subjects.HEALTH, queue=subjects.QUEUE_GROUP, cb=answer)
    await node.flush()
    requester = await conns.connect("node")
    await requester.publish(subjects.HEALTH, b"{}", reply=f"$JS.API.STREAM.DELETE.{JOBS_STREAM}")
    await requester.flush()
    err = await conns.wait_for_error(node, "permissions violation for publish")
    assert "stream.delete" in err.lower()
    info = await job_streams.stream_info(JOBS_STREAM)
    assert info.config.name == JOBS_STREAM


async def test_node_can_discover_itself_via_srv_subjects(conns):
    # $SRV.> is how `nats micro` and clients find the service; the node may serve it and a
    # client may ask.
    node = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b'{"name": "strategy-exec"}')

    await node.subscribe("$SRV.PING.strategy-exec", cb=answer)
    await node.flush()
    client = await conns.connect("client")
    reply = await client.request("$SRV.PING.strategy-exec", b"", timeout=2)
    assert json.loads(reply.data)["name"] == subjects.SERVICE_NAME



async def test_node_consumes_a_job_and_delivers_its_result(conns, job_streams):
    # The durable-job round trip with the node's permissions: pull from the shared consumer,
    # store the result under the job id, answer on the reply subject carried in a header
    # (a client inbox), ack.
    client = await conns.connect("client")
    replies = await client.subscribe(client.new_inbox())
    await client.jetstream(timeout=5).publish(
        "strategy.jobs.execute", b'{"job_id": "job-777"}',
        headers={"Reply-To": replies.subject},
    )

    node = await conns.connect("node")
    node_js = node.jetstream(timeout=5)
    sub = await node_js.pull_subscribe("strategy.jobs.>", durable=JOBS_CONSUMER)
    ours = None
    for msg in await sub.fetch(100, timeout=2):  # earlier tests may have queued jobs too
        if json.loads(msg.data).get("job_id") == "job-777":
            ours = msg
        else:
            await msg.ack_sync()
    assert ours is not None
    assert ours.subject == "strategy.jobs.TENANT_A.execute"  # the server wrote the account
    await node_js.publish("strategy.results.TENANT_A.job-777", b'{"success": true}')
    await node.publish(ours.headers["Reply-To"], b'{"success": true}')
    await ours.ack_sync()

    reply = await replies.next_msg(timeout=2)
    assert reply.data == b'{"success": true}'
    stored = await client.jetstream(timeout=5).get_last_msg(
        RESULTS_STREAM, "strategy.results.job-777", direct=True
    )
    assert stored.data == b'{"success": true}'
    assert conns.errors_of(node) == []


async def test_node_can_open_a_replay_consumer_on_bars(conns):
    node = await conns.connect("node")
    js = node.jetstream(timeout=5)
    try:
        await js.add_stream(StreamConfig(name="BARS", subjects=["bars.>"], allow_direct=True))
    except nats.js.errors.BadRequestError:  # a node of another test declared it with its settings
        await js.stream_info("BARS")
    sub = await js.subscribe("bars.1m.AAPL", ordered_consumer=True)
    await node.flush()
    await sub.unsubscribe()
    assert conns.errors_of(node) == []


async def test_node_credentials_can_run_the_health_probe(conns):
    # `strategy-node health [--ready]`, the pods' exec probe, connects with the pod's NATS_*
    # credentials (the node user) and asks strategy.v1.health.
    serving = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b'{"status": "ok"}')

    await serving.subscribe(subjects.HEALTH, queue=subjects.QUEUE_GROUP, cb=answer)
    await serving.flush()
    probe = await conns.connect("node")
    reply = await probe.request(subjects.HEALTH, b"{}", timeout=2)
    assert json.loads(reply.data)["status"] == "ok"
    assert conns.errors_of(serving) == [] and conns.errors_of(probe) == []


# -- per-node health (readiness probes ask their own pod) -------------------------------------

async def test_node_serves_its_own_health_subject_in_its_own_queue_group(conns):
    node = await conns.connect("node")
    subject = subjects.node_health("strategy-node-5f7c9-abcde")

    async def answer(msg):
        await msg.respond(b'{"status": "ok", "node_id": "strategy-node-5f7c9-abcde"}')

    await node.subscribe(subject, queue="health-strategy-node-5f7c9-abcde", cb=answer)
    await node.flush()
    probe = await conns.connect("node")  # `strategy-node health --ready` with NODE_ID set
    reply = await probe.request(subject, b"{}", timeout=2)
    assert json.loads(reply.data)["node_id"] == "strategy-node-5f7c9-abcde"
    assert conns.errors_of(node) == [] and conns.errors_of(probe) == []


async def test_node_cannot_subscribe_to_health_subjects_without_a_queue_group(conns):
    node = await conns.connect("node")
    await node.subscribe("strategy.v1.health.*")
    err = await conns.wait_for_error(node, "permissions violation for subscription")
    assert "strategy.v1.health.*" in err


async def test_node_can_fan_out_sweep_points_to_the_fleet(conns):
    worker = await conns.connect("node")

    async def answer(msg):
        await msg.respond(b'{"success": true}')

    await worker.subscribe(subjects.BACKTEST_POINT, queue=subjects.QUEUE_GROUP, cb=answer)
    await worker.flush()
    sweeper = await conns.connect("node")
    reply = await sweeper.request(subjects.BACKTEST_POINT, b"{}", timeout=2)
    assert reply.data == b'{"success": true}'
    assert conns.errors_of(sweeper) == [] and conns.errors_of(worker) == []


# -- ingest: loads BARS and nothing else ---------------------------------------------------------

def _arrays(n: int, seed: int = 3):
    import msgspec

    from contracts import Bars, from_columns
    from tests.support import columnar_bars

    return from_columns(msgspec.convert(columnar_bars(n, seed=seed), Bars))


@pytest.fixture
async def loaded(conns):
    """Bars of INGEST/1d loaded by the ingest user with the real loader (idempotent)."""
    from backtest.store import BarStore

    ingest = await conns.connect("ingest")
    store = BarStore(ingest.jetstream(timeout=5), ingest)
    report = await store.load("INGEST", "1d", _arrays(2_500))
    again = await store.load("INGEST", "1d", _arrays(2_500))
    return ingest, report, again


async def test_ingest_loads_bars_with_the_real_loader(conns, loaded):
    from backtest.store import BarStore

    ingest, first, again = loaded
    assert first.bars in (0, 2_500)  # 0 when an earlier test in the session loaded them
    assert again.bars == 0 and again.stored_chunks == 0  # the index made the reload a no-op
    assert conns.errors_of(ingest) == []
    # The node replays them through the same index (its own, read-only permissions).
    node = await conns.connect("node")
    replayed = await BarStore(node.jetstream(timeout=5), node).replay("INGEST", "1d")
    assert replayed.count == 2_500
    assert conns.errors_of(node) == []


async def test_ingest_cannot_read_bars_back_or_consume(conns, loaded):
    ingest, *_ = loaded
    for api, body in (
        ("$JS.API.DIRECT.GET.BARS", {"last_by_subj": "bars.1d.INGEST"}),
        ("$JS.API.STREAM.MSG.GET.BARS", {"seq": 1}),
        ("$JS.API.CONSUMER.CREATE.BARS", {"stream_name": "BARS", "config": {}}),
    ):
        with pytest.raises(NatsTimeoutError):
            await ingest.request(api, json.dumps(body).encode(), timeout=0.5)
        await conns.wait_for_error(ingest, api)


async def test_ingest_cannot_delete_purge_or_touch_other_streams(conns, loaded, job_streams):
    ingest, *_ = loaded
    for api in ("$JS.API.STREAM.DELETE.BARS", "$JS.API.STREAM.PURGE.BARS",
                "$JS.API.STREAM.DELETE.KV_BARS_INDEX", f"$JS.API.STREAM.INFO.{JOBS_STREAM}",
                "$JS.API.STREAM.CREATE.OTHER", "$JS.API.STREAM.LIST"):
        with pytest.raises(NatsTimeoutError):
            await ingest.request(api, b"{}", timeout=0.5)
        await conns.wait_for_error(ingest, api)
    info = await job_streams.stream_info("BARS")
    assert info.state.messages >= 3


async def test_ingest_cannot_reach_requests_jobs_or_results(conns):
    ingest = await conns.connect("ingest")
    for subject in (subjects.EXECUTE, "strategy.jobs.x", "strategy.results.x"):
        await ingest.publish(subject, b"{}")
        await conns.wait_for_error(ingest, subject)
    for subject, queue in ((subjects.EXECUTE, subjects.QUEUE_GROUP), ("_INBOX.>", ""), ("bars.>", "")):
        await ingest.subscribe(subject, queue=queue)
        await conns.wait_for_error(ingest, f'subscription to "{subject}"')


# -- the real node under the deployed permissions ------------------------------------------------

async def test_real_node_runs_under_the_node_user(conns, permissions_server, tmp_path, caplog):
    """A request-role node (as the Deployment runs it) starts, serves and probes with no
    permission violation: queue-group endpoints, its own health subject, the bar store."""
    from node.client import StrategyClient
    from node.config import Settings
    from node.service import Node
    from tests.support import columnar_bars

    from .support import PASSWORDS

    settings = Settings.from_env({
        "NODE_ROLE": "requests", "NODE_ID": "strategy-node-perm-1", "MAX_WORKERS": "1",
        "SANDBOX_READY": "1", "HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
    })
    node = Node(settings, permissions_server.url,
                connect_env={"NATS_USER": "node", "NATS_PASSWORD": PASSWORDS["node"]})
    with caplog.at_level(logging.WARNING):
        await node.start()
        try:
            probe = StrategyClient(await conns.connect("node"))
            health = await probe.health(node_id="strategy-node-perm-1", timeout=5)
            assert health.node_id == "strategy-node-perm-1" and health.status == "ok"
            client = StrategyClient(await conns.connect("client"))
            result = await client.execute("def strategy(data):\n    return 'BUY'\n", columnar_bars(5))
            assert result.success and result.node_id == "strategy-node-perm-1"
            backtesting = getattr(node, "backtesting", None)
            assert backtesting is None or backtesting.store is not None, caplog.text
        finally:
            await node.stop()
    assert "permissions violation" not in caplog.text.lower(), caplog.text
