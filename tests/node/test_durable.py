"""Durable jobs (node/durable.py) against real nats-servers: protocol, exactly-once results,
retries, dead letters, capacity-bound pulling, drain, health and the CLI.

The node under test runs in-process with NODE_ROLE=jobs on its own nats-server (the session
server's node also consumes jobs). Tests of retry/dead-letter paths drive a `JobConsumer` with
a stand-in handler on a fresh server each, so they can fail on purpose.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid

import msgspec
import nats
import pytest
import pytest_asyncio

from contracts import ErrorCode, ErrorInfo, ExecuteResult, encode, subjects
from node import jobs_client
from node.admission import Admission
from node.config import Settings
from node.durable import (
    CONSUMER,
    DEAD_STREAM,
    ERROR,
    JOBS_STREAM,
    RESULTS_STREAM,
    JobConsumer,
    ResultStore,
    dead_subject,
    results_subject,
)
from node.embedded import EmbeddedServer
from tests.support import columnar_bars, stall

TOKEN_CODE = "def strategy(data):\n    print('token', params['token'])\n    return 'BUY'\n"
SPIN_CODE = ("def strategy(data):\n    n = 0\n    while n < params['n']:\n        n += 1\n"
             "    print('token', params['token'])\n    return 'BUY'\n")


def held_admission() -> tuple[Admission, asyncio.Event]:
    """An Admission whose one worker is busy until the event is set: a consumer given it does not pull."""
    admission = Admission(1, 0)
    hold = asyncio.Event()

    async def busy() -> None:
        await hold.wait()
    admission.submit(busy)
    return admission, hold


def job(code: str = TOKEN_CODE, **params) -> dict:
    params.setdefault("token", uuid.uuid4().hex)
    return {"code": code, "bars": columnar_bars(20), "parameters": params, "timeout_ms": 8000}


async def wait_for(predicate, timeout: float = 10.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(every)


class Replies:
    """Every message on one wildcard inbox, grouped by the job id header."""

    def __init__(self) -> None:
        self.by_job: dict[str, list] = {}

    async def add(self, msg) -> None:
        self.by_job.setdefault((msg.headers or {}).get("Strategy-Job-Id", "?"), []).append(msg)

    @classmethod
    async def on(cls, nc, subject: str) -> "Replies":
        replies = cls()
        await nc.subscribe(subject, cb=replies.add)
        return replies


# -- an in-process jobs node on its own server ------------------------------------------------
@pytest.fixture(scope="module")
def jobs_server():
    server = EmbeddedServer().start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module")
async def jobs_node(jobs_server, tmp_path_factory):
    from node.service import Node

    settings = Settings.from_env({"MAX_WORKERS": "2", "NODE_ID": "jobs-node", "NODE_ROLE": "jobs",
                                  "JOBS_ACK_WAIT_SECONDS": "0.4", "MAX_TIMEOUT_SECONDS": "10",
                                  "HEARTBEAT_FILE": str(tmp_path_factory.mktemp("jobs") / "heartbeat")})
    running = Node(settings, jobs_server.url)
    await running.start()
    try:
        async def consuming():
            return running.jobs.state == "consuming"
        await wait_for(consuming)
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(scope="module")
async def jnc(jobs_server, jobs_node):
    conn = await nats.connect(jobs_server.url)
    yield conn
    await conn.close()


async def result_count(nc, job_id: str) -> int:
    info = await nc.jetstream().stream_info(RESULTS_STREAM, subjects_filter=results_subject(job_id))
    return sum((info.state.subjects or {}).values())


# -- the happy path --------------------------------------------------------------------------
async def test_job_result_is_stored_under_its_id_and_sent_to_the_reply_subject(jnc):
    inbox = jnc.new_inbox()
    replies = await Replies.on(jnc, inbox)
    request = job()
    job_id = await jobs_client.submit(jnc, "execute", request, reply_to=inbox)
    stored = await jobs_client.result(jnc, job_id, wait=10)
    assert stored.success is True, stored.error
    assert stored.logs == [f"token {request['parameters']['token']}"]
    assert stored.node_id == "jobs-node"
    await wait_for(lambda: asyncio.sleep(0, bool(replies.by_job.get(job_id))))
    (reply,) = replies.by_job[job_id]
    assert msgspec.json.decode(reply.data, type=ExecuteResult) == stored


async def test_result_of_an_unknown_job_is_none(jnc):
    assert await jobs_client.result(jnc, "no-such-job") is None
    assert await jobs_client.result(jnc, "no-such-job", wait=0.2) is None


async def test_a_job_id_resubmitted_while_its_job_runs_is_dropped_without_running(jnc, jobs_node):
    job_id = uuid.uuid4().hex
    skipped, completed = jobs_node.jobs.skipped_duplicates, jobs_node.jobs.completed
    await jobs_client.submit(jnc, "execute", job(SPIN_CODE, n=3_000_000, token="first"), job_id=job_id)
    await jobs_client.submit(jnc, "execute", job(token="second"), job_id=job_id)  # a retried submit

    async def dropped():
        return jobs_node.jobs.skipped_duplicates > skipped
    await wait_for(dropped)
    assert await jobs_client.result(jnc, job_id) is None  # dropped by its claim, not by a stored result
    stored = await jobs_client.result(jnc, job_id, wait=20)
    assert stored.success and stored.logs[-1].endswith("token first")
    await asyncio.sleep(0.3)
    assert await result_count(jnc, job_id) == 1
    assert jobs_node.jobs.completed == completed + 1


async def test_a_job_id_resubmitted_after_its_result_is_stored_is_not_run_again(jnc, jobs_node):
    job_id = uuid.uuid4().hex
    await jobs_client.submit(jnc, "execute", job(token="first"), job_id=job_id)
    assert (await jobs_client.result(jnc, job_id, wait=10)).success
    skipped = jobs_node.jobs.skipped_duplicates
    await jobs_client.submit(jnc, "execute", job(token="second"), job_id=job_id)

    async def dropped():
        return jobs_node.jobs.skipped_duplicates > skipped
    await wait_for(dropped)
    assert (await jobs_client.result(jnc, job_id)).logs[-1].endswith("token first")
    assert await result_count(jnc, job_id) == 1


async def test_a_job_named_only_by_nats_msg_id_runs_under_that_id(jnc):
    job_id = uuid.uuid4().hex
    await jnc.jetstream().publish("strategy.jobs.execute", encode(job(token="by-msg-id")),
                                  headers={"Nats-Msg-Id": job_id})
    stored = await jobs_client.result(jnc, job_id, wait=10)
    assert stored.success and stored.logs[-1].endswith("token by-msg-id")


async def test_a_job_whose_two_id_headers_disagree_is_refused_naming_both(jnc):
    inbox = jnc.new_inbox()
    replies = await Replies.on(jnc, inbox)
    await jnc.jetstream().publish("strategy.jobs.execute", encode(job()), headers={
        "Strategy-Job-Id": "one-id", "Nats-Msg-Id": "another-id", subjects.JOB_REPLY_HEADER: inbox})

    async def answered():
        return replies.by_job
    await wait_for(answered)
    (reply,), = replies.by_job.values()
    result = msgspec.json.decode(reply.data, type=ExecuteResult)
    assert result.error.code == ErrorCode.INVALID_REQUEST
    assert result.error.message == ("invalid job id: Strategy-Job-Id 'one-id' and Nats-Msg-Id 'another-id' name "
                                    "different jobs: send one of them, or the same id in both")
    assert await jobs_client.result(jnc, "one-id") is None and await jobs_client.result(jnc, "another-id") is None


async def test_the_jobs_stream_drops_a_repeated_nats_msg_id_only_within_the_servers_smallest_window(jnc, jobs_node):
    # the stream reads Nats-Msg-Id whoever sent it: job ids are de-duplicated per tenant by the nodes
    assert (await jnc.jetstream().stream_info(JOBS_STREAM)).config.duplicate_window == 0.1


async def test_a_redelivered_job_whose_result_is_stored_is_acked_without_running(jnc, jobs_node):
    job_id = uuid.uuid4().hex
    earlier = ExecuteResult(success=True, result="from the first delivery", node_id="elsewhere")
    await jnc.jetstream().publish(results_subject(job_id), encode(earlier),
                                  headers={"Strategy-Job-Kind": "execute"})
    skipped = jobs_node.jobs.skipped_duplicates
    inbox = jnc.new_inbox()
    replies = await Replies.on(jnc, inbox)
    await jobs_client.submit(jnc, "execute", job(), job_id=job_id, reply_to=inbox)

    async def skipped_it():
        return jobs_node.jobs.skipped_duplicates > skipped
    await wait_for(skipped_it)
    assert (await jobs_client.result(jnc, job_id)).result == "from the first delivery"
    assert await result_count(jnc, job_id) == 1
    await asyncio.sleep(0.1)
    assert replies.by_job == {}


async def test_a_failing_strategy_is_a_completed_job_not_a_retry(jnc):
    code = "def strategy(data):\n    return 1 / 0\n"
    job_id = await jobs_client.submit(jnc, "execute", job(code))
    stored = await jobs_client.result(jnc, job_id, wait=10)
    assert stored.success is False and stored.error.code == ErrorCode.RUNTIME_ERROR
    info = await jnc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)
    assert info.num_redelivered == 0


async def test_backtest_job_runs_the_backtest_engine(jnc):
    code = ("import numpy as np\n"
            "def strategy(data):\n"
            "    return np.where(data['close'] > data['close'].shift(1), 'BUY', 'SELL')\n")
    job_id = await jobs_client.submit(jnc, "backtest", {"code": code, "bars": columnar_bars(120)})
    stored = await jobs_client.result(jnc, job_id, wait=15)
    assert type(stored).__name__ == "BacktestResult"
    assert stored.success is True, stored.error
    assert stored.bars == 120 and stored.performance is not None


async def test_unknown_job_kind_completes_with_invalid_request(jnc):
    job_id = uuid.uuid4().hex
    await jnc.jetstream().publish("strategy.jobs.transmogrify", b"{}", headers={"Nats-Msg-Id": job_id})
    stored = await jobs_client.result(jnc, job_id, wait=10)
    assert stored.error.code == ErrorCode.INVALID_REQUEST
    assert "not supported by this node" in stored.error.message


async def test_a_job_id_that_is_not_valid_is_refused_on_its_reply_subject(jnc):
    inbox = jnc.new_inbox()
    sub = await jnc.subscribe(inbox)
    await jnc.jetstream().publish("strategy.jobs.execute", json.dumps(job()).encode(), headers={
        "Nats-Msg-Id": f"not a.valid>id {uuid.uuid4().hex}", "Strategy-Reply-To": inbox,
        "Content-Type": "application/json"})
    reply = json.loads((await sub.next_msg(timeout=10)).data)
    assert reply["error"]["code"] == "INVALID_REQUEST" and "invalid job id" in reply["error"]["message"]


async def test_a_reply_header_that_is_not_an_inbox_is_refused_naming_it_and_the_job_not_run(jnc):
    # The node never publishes where a client points it; an option it cannot honour is refused.
    seen = await Replies.on(jnc, "victim.>")
    job_id = await jobs_client.submit(jnc, "execute", job(SPIN_CODE, n=10), reply_to="victim.subject")
    stored = await jobs_client.result(jnc, job_id, wait=10)
    assert stored.error.code == ErrorCode.INVALID_REQUEST
    assert "Strategy-Reply-To 'victim.subject' is not an inbox subject" in stored.error.message
    assert not stored.logs and not stored.signals  # it did not run (a run prints its token)
    await asyncio.sleep(0.1)
    assert seen.by_job == {}


async def test_a_job_longer_than_the_ack_wait_sends_in_progress_and_is_delivered_once(jnc, jobs_node):
    before = (await jnc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)).num_redelivered
    started = time.monotonic()
    job_id = await jobs_client.submit(jnc, "execute", job(SPIN_CODE, n=6_000_000))
    stored = await jobs_client.result(jnc, job_id, wait=20)
    took = time.monotonic() - started
    assert stored.success is True, stored.error
    assert took > 2 * jobs_node.settings.jobs_ack_wait_seconds  # long enough to need heartbeats
    assert (await jnc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)).num_redelivered == before
    assert await result_count(jnc, job_id) == 1


async def test_health_reports_the_job_consumer(jnc):
    await jobs_client.result(jnc, await jobs_client.submit(jnc, "execute", job()), wait=10)
    msg = await jnc.request(subjects.node_health("jobs-node"), b"{}", timeout=5)
    health = json.loads(msg.data)
    assert health["status"] == "ok"
    assert health["jobs"]["state"] == "consuming"
    assert health["jobs"]["consumer"] == CONSUMER
    assert health["jobs"]["completed"] >= 1


async def test_no_stream_captures_the_request_subjects(jnc):
    streams = await jnc.jetstream().streams_info()
    patterns = [s for info in streams for s in info.config.subjects or []]
    assert {"strategy.jobs.>", "strategy.results.>", "strategy.dead.>"} <= set(patterns)
    for pattern in patterns:
        for subject in (subjects.EXECUTE, subjects.VALIDATE, subjects.BACKTEST, subjects.HEALTH):
            assert not _matches(pattern, subject), (pattern, subject)


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, token in enumerate(p):
        if token == ">":
            return len(s) > i
        if i >= len(s) or (token != "*" and token != s[i]):
            return False
    return len(p) == len(s)


async def test_cli_submit_prints_a_job_id_and_result_prints_the_stored_result(jnc, jobs_server, tmp_path, capsys):
    from node.cli import build_parser

    strategy = tmp_path / "s.py"
    strategy.write_text(TOKEN_CODE)
    bars = columnar_bars(10)
    csv = tmp_path / "bars.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"{bars['timestamp'][i]},{bars['open'][i]},{bars['high'][i]},{bars['low'][i]},{bars['close'][i]},"
        f"{bars['volume'][i]}\n" for i in range(10)))
    args = build_parser().parse_args(["submit", str(strategy), "--bars", str(csv), "--param", "token=cli-token",
                                      "--url", jobs_server.url])
    assert await args.func(args) == 0
    job_id = capsys.readouterr().out.strip()
    assert len(job_id) == 32

    args = build_parser().parse_args(["result", job_id, "--wait", "10", "--json", "--url", jobs_server.url])
    assert await args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["success"] is True and printed["logs"] == ["token cli-token"]


async def test_cli_result_exits_3_when_the_job_has_no_result(jobs_server, jobs_node):
    from node.cli import build_parser

    args = build_parser().parse_args(["result", "unknown-job", "--wait", "0.2", "--url", jobs_server.url])
    assert await args.func(args) == 3


# -- exactly one stored result ---------------------------------------------------------------
async def test_only_the_first_of_two_racing_results_is_stored(jnc):
    store = ResultStore(jnc.jetstream())
    job_id = uuid.uuid4().hex
    deadline = time.monotonic() + 5
    first = await store.put(job_id, b'{"success":true}', {}, "run-1", deadline)
    second = await store.put(job_id, b'{"success":false}', {}, "run-2", deadline)
    assert (first, second) == (True, False)
    stored = await store.get(job_id)
    assert stored.data == b'{"success":true}' and stored.headers["Strategy-Run-Id"] == "run-1"


# -- retries and dead letters, with a stand-in handler ---------------------------------------
@pytest_asyncio.fixture
async def bare(bare_server):
    """A fresh server (`bare_server`) and a client connection; consumers made by `consumer_with`
    are closed."""
    nc = await nats.connect(bare_server.url)
    made: list[JobConsumer] = []

    async def consumer_with(handler, admission: Admission | None = None, **env) -> JobConsumer:
        settings = Settings.from_env({"NODE_ID": "stand-in", "MAX_WORKERS": "2", **env})
        consumer = JobConsumer(nc, settings, admission or Admission(2, 10), lambda kind: handler)
        made.append(consumer)
        consumer.start()

        async def up():
            return consumer.state == "consuming"
        await wait_for(up)
        return consumer

    try:
        yield nc, consumer_with
    finally:
        for consumer in made:
            await consumer.close()
            await consumer.admission.drain(5)
        await nc.close()


async def jobs_left(nc, count: int) -> bool:
    return (await nc.jetstream().stream_info(JOBS_STREAM)).state.messages == count


def failing(code: ErrorCode, calls: list):
    async def handler(data: bytes, kind: str, received: float):
        calls.append(time.monotonic())
        return ExecuteResult(success=False, error=ErrorInfo(code=code, message=f"node broke #{len(calls)}"))
    return handler


async def test_a_node_side_failure_is_retried_then_dead_lettered_with_its_last_error(bare):
    nc, consumer_with = bare
    calls: list[float] = []
    consumer = await consumer_with(failing(ErrorCode.INTERNAL, calls),
                                   JOBS_MAX_DELIVER="3", JOBS_BACKOFF_SECONDS="0.2,0.2")
    inbox = nc.new_inbox()
    replies = await Replies.on(nc, inbox)
    request = job()
    job_id = await jobs_client.submit(nc, "execute", request, reply_to=inbox)
    stored = await jobs_client.result(nc, job_id, wait=10)
    assert len(calls) == 3
    assert stored.error.code == ErrorCode.INTERNAL
    assert "all 3 deliveries" in stored.error.message and "node broke #3" in stored.error.message
    dead = await nc.jetstream().get_last_msg(DEAD_STREAM, dead_subject(job_id))
    assert dead.headers[ERROR] == "INTERNAL: node broke #3"
    assert json.loads(dead.data) == request and dead.headers["Strategy-Reply-To"] == inbox
    # The result is readable as soon as it is stored; the node replies, counts and acks after
    # its PubAck, and the server applies the ack after that.
    await wait_for(lambda: jobs_left(nc, 0), 5)
    assert consumer.dead_lettered == 1 and consumer.retried == 2
    await wait_for(lambda: asyncio.sleep(0, job_id in replies.by_job), 5)
    await asyncio.sleep(0.1)
    assert len(replies.by_job[job_id]) == 1


async def test_a_job_whose_node_died_on_its_last_delivery_is_dead_lettered_from_the_advisory(bare):
    nc, consumer_with = bare
    admission, hold = held_admission()  # no free worker: this consumer only listens for advisories
    calls: list[float] = []
    consumer = await consumer_with(failing(ErrorCode.INTERNAL, calls), admission,
                                   JOBS_MAX_DELIVER="2", JOBS_BACKOFF_SECONDS="0.3")
    js = nc.jetstream()
    dying = await js.pull_subscribe_bind(durable=CONSUMER, stream=JOBS_STREAM)  # takes jobs, never acks
    job_id = await jobs_client.submit(nc, "execute", job())
    for _ in range(2):
        (msg,) = await dying.fetch(1, timeout=5)
        assert msg.headers["Strategy-Job-Id"] == job_id
    with pytest.raises(nats.errors.TimeoutError):  # the server checks max deliveries on a pull
        await dying.fetch(1, timeout=1)
    stored = await jobs_client.result(nc, job_id, wait=10)
    hold.set()
    assert stored.error.code == ErrorCode.INTERNAL and "2 deliveries" in stored.error.message
    dead = await js.get_last_msg(DEAD_STREAM, dead_subject(job_id))
    assert "crashed" in dead.headers[ERROR]
    await wait_for(lambda: jobs_left(nc, 0), 5)  # deleted from the work queue after its result is stored
    assert calls == []
    assert consumer.ignored_advisories == 0  # the server's own advisory is confirmed by its state


async def test_the_consumer_pulls_only_when_a_worker_is_free(bare):
    nc, consumer_with = bare
    admission = Admission(1, 5)
    hold = asyncio.Event()

    async def busy() -> None:
        await hold.wait()
    admission.submit(busy)
    ran: list[float] = []

    async def handler(data: bytes, kind: str, received: float):
        ran.append(received)
        return ExecuteResult(success=True)
    await consumer_with(handler, admission)
    job_id = await jobs_client.submit(nc, "execute", job())
    await asyncio.sleep(0.5)
    info = await nc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)
    assert (info.num_pending, info.num_ack_pending, ran) == (1, 0, [])  # queue room, but no idle worker
    hold.set()
    assert (await jobs_client.result(nc, job_id, wait=5)).success
    assert len(ran) == 1


async def consumer_state(nc) -> tuple[int, int]:
    """(jobs delivered and not yet acked, jobs never delivered) of the shared consumer."""
    info = await nc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)
    return info.num_ack_pending, info.num_pending


async def test_stop_fetching_lets_the_running_job_finish_and_ack(bare):
    nc, consumer_with = bare
    started = asyncio.Event()

    async def slow(data: bytes, kind: str, received: float):
        started.set()
        await asyncio.sleep(0.5)
        return ExecuteResult(success=True, result="finished")
    consumer = await consumer_with(slow)
    job_id = await jobs_client.submit(nc, "execute", job())
    await asyncio.wait_for(started.wait(), 5)
    await consumer.stop_fetching()
    later = await jobs_client.submit(nc, "execute", job())
    assert await consumer.admission.drain(5)
    await consumer.close()
    assert (await jobs_client.result(nc, job_id)).result == "finished"

    async def settled():  # the server applies an ack or a nak some time after it was sent
        return await consumer_state(nc) == (0, 1)
    await wait_for(settled, 5)  # the later job waits for another node, not for the 30 s ack wait
    assert await jobs_client.result(nc, later) is None


async def test_a_pull_request_the_server_received_late_is_over_before_stop_fetching_returns(bare, bare_server):
    # The server times a pull request's expiry from when it receives it, the node from when it
    # sent it. A server that stalls (here: stopped for 1.5 s) receives the node's next pull request
    # late and keeps it open after the node's own wait ended. A job published then went to the
    # stopped node and sat unacked for a whole ack wait (30 s here), nobody running it.
    nc, consumer_with = bare
    ran: list[float] = []

    async def handler(data: bytes, kind: str, received: float):
        ran.append(received)
        return ExecuteResult(success=True)
    consumer = await consumer_with(handler)  # pulling: a request is open, the next one follows it
    await stall(bare_server, 1.5)  # longer than a pull request lasts: one is sent during the stall
    await consumer.stop_fetching()
    info = await nc.jetstream().consumer_info(JOBS_STREAM, CONSUMER)
    assert info.num_waiting == 0  # no pull request of the stopped node is left open on the server
    job_id = await jobs_client.submit(nc, "execute", job())
    await consumer.close()

    async def waits_for_another_node():
        return await consumer_state(nc) == (0, 1)
    await wait_for(waits_for_another_node, 5)  # well inside the 30 s ack wait
    assert ran == [] and await jobs_client.result(nc, job_id) is None


async def test_a_job_that_reaches_a_stopping_node_is_handed_back_to_the_next_pull_at_once(bare, bare_server):
    # A job the server delivers to a node that has just begun to stop is handed back with a nak:
    # the server then counts it in num_ack_pending (not num_pending) until it is delivered
    # again, yet the next pull gets it at once, with no ack wait.
    nc, consumer_with = bare
    admission, hold = held_admission()  # no free worker: the consumer does not pull yet
    ran: list[float] = []

    async def handler(data: bytes, kind: str, received: float):
        ran.append(received)
        return ExecuteResult(success=True)
    consumer = await consumer_with(handler, admission)
    job_id = await jobs_client.submit(nc, "execute", job())
    bare_server.proc.send_signal(signal.SIGSTOP)
    try:
        hold.set()  # a worker frees: the consumer sends a pull request the stopped server holds
        await wait_for(lambda: asyncio.sleep(0, consumer._fetching), 5)
        stopping = asyncio.ensure_future(consumer.stop_fetching())
        await asyncio.sleep(0)  # stopping from here on; the server delivers the job only now
    finally:
        bare_server.proc.send_signal(signal.SIGCONT)
    await stopping
    await consumer.close()
    assert ran == []

    async def handed_back():
        return await consumer_state(nc) == (1, 0)  # delivered once, not acked, not pending
    await wait_for(handed_back, 5)
    probe = await nc.jetstream().pull_subscribe_bind(durable=CONSUMER, stream=JOBS_STREAM)
    started = time.monotonic()
    (msg,) = await probe.fetch(1, timeout=5)
    assert time.monotonic() - started < 2.0  # at once, not after the 30 s ack wait
    assert msg.headers["Strategy-Job-Id"] == job_id and msg.metadata.num_delivered == 2
    await msg.ack()


# -- health / readiness ----------------------------------------------------------------------
async def run_cli(*argv: str) -> int:
    from node.cli import build_parser

    args = build_parser().parse_args(list(argv))
    return await args.func(args)


async def test_health_ready_exits_0_for_a_consuming_jobs_node(jobs_server, jobs_node, monkeypatch):
    monkeypatch.setenv("NODE_ID", "jobs-node")
    assert await run_cli("health", "--ready", "--url", jobs_server.url) == 0


async def test_health_ready_exits_2_when_no_node_answers(monkeypatch):
    monkeypatch.delenv("NODE_ID", raising=False)
    with EmbeddedServer(jetstream=False) as server:
        assert await run_cli("health", "--ready", "--timeout", "0.3", "--url", server.url) == 2


async def test_health_ready_exits_1_while_the_node_drains(jobs_server, monkeypatch, tmp_path):
    from node.service import Node

    settings = Settings.from_env({"MAX_WORKERS": "1", "NODE_ID": "drainer", "NODE_ROLE": "requests",
                                  "HEARTBEAT_FILE": str(tmp_path / "heartbeat")})
    node = Node(settings, jobs_server.url)
    await node.start()
    nc = await nats.connect(jobs_server.url)
    try:
        pending = asyncio.ensure_future(nc.request(subjects.EXECUTE, encode(job(SPIN_CODE, n=3_000_000)),
                                                   timeout=20))
        await wait_for(lambda: asyncio.sleep(0, node.admission.in_flight > 0))
        stopping = asyncio.ensure_future(node.stop())
        await wait_for(lambda: asyncio.sleep(0, node.endpoints.draining))
        monkeypatch.setenv("NODE_ID", "drainer")
        assert await run_cli("health", "--ready", "--url", jobs_server.url) == 1
        assert json.loads((await pending).data)["success"] is True
        await stopping
    finally:
        await node.stop()
        await nc.close()


async def test_a_jobs_only_node_without_jetstream_is_degraded_and_not_ready(monkeypatch, tmp_path):
    from node.service import Node

    with EmbeddedServer(jetstream=False) as server:
        settings = Settings.from_env({"MAX_WORKERS": "1", "NODE_ID": "no-js", "NODE_ROLE": "jobs",
                                      "HEARTBEAT_FILE": str(tmp_path / "heartbeat")})
        node = Node(settings, server.url)
        await node.start()
        try:
            await wait_for(lambda: asyncio.sleep(0, node.jobs.state == "unavailable"))
            monkeypatch.setenv("NODE_ID", "no-js")
            assert await run_cli("health", "--ready", "--url", server.url) == 1
            assert await run_cli("health", "--url", server.url) == 1  # degraded
        finally:
            await node.stop()


async def test_a_deleted_consumer_is_declared_again_and_jobs_keep_flowing(bare):
    nc, consumer_with = bare

    async def handler(data: bytes, kind: str, received: float):
        return ExecuteResult(success=True, result="ran")
    await consumer_with(handler)
    await nc.jetstream().delete_consumer(JOBS_STREAM, CONSUMER)
    job_id = await jobs_client.submit(nc, "execute", job())
    assert (await jobs_client.result(nc, job_id, wait=15)).result == "ran"


async def test_an_idle_consumer_stays_consuming(bare):
    nc, consumer_with = bare

    async def handler(data: bytes, kind: str, received: float):
        return ExecuteResult(success=True)
    consumer = await consumer_with(handler)
    states = set()
    for _ in range(60):  # several empty pull waits
        states.add((consumer.state, consumer.last_error))
        await asyncio.sleep(0.05)
    assert states == {("consuming", None)}


# -- advisories are checked against the server's state ----------------------------------------
def forged_advisory(seq: int, deliveries: int = 5, **fields) -> bytes:
    """What nats-server publishes on MAX_DELIVERIES, as a client could fake it."""
    event = {"type": "io.nats.jetstream.advisory.v1.max_deliver", "id": uuid.uuid4().hex,
             "timestamp": "2026-01-01T00:00:00Z", "stream": JOBS_STREAM, "consumer": CONSUMER,
             "stream_seq": seq, "deliveries": deliveries, **fields}
    return json.dumps(event).encode()


async def job_seq(nc, job_id: str) -> int:
    msg = await nc.jetstream().get_last_msg(JOBS_STREAM, "strategy.jobs.execute")
    assert msg.headers["Strategy-Job-Id"] == job_id
    return msg.seq


async def test_a_forged_advisory_about_a_running_job_does_nothing(bare):
    nc, consumer_with = bare
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(data: bytes, kind: str, received: float):
        started.set()
        await release.wait()
        return ExecuteResult(success=True, result="finished")
    consumer = await consumer_with(slow, JOBS_ACK_WAIT_SECONDS="0.6")
    job_id = await jobs_client.submit(nc, "execute", job())
    seq = await job_seq(nc, job_id)
    await asyncio.wait_for(started.wait(), 5)
    # Everything a client can fake is right: the type, stream, consumer, sequence, and a count
    # at max_deliver; only the server's state (the job's lease) says the job is running.
    await nc.publish(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{CONSUMER}", forged_advisory(seq))
    await wait_for(lambda: asyncio.sleep(0, consumer.ignored_advisories == 1))
    release.set()
    assert (await jobs_client.result(nc, job_id, wait=10)).result == "finished"
    assert consumer.dead_lettered == 0
    assert (await nc.jetstream().stream_info(DEAD_STREAM)).state.messages == 0


@pytest.mark.parametrize("fields", [
    {}, {"consumer": "someone-else"}, {"stream": "OTHER"}, {"type": "io.nats.jetstream.advisory.v1.nak"},
    {"deliveries": 1}, {"stream_seq": "1"},
], ids=["undelivered", "other-consumer", "other-stream", "other-type", "below-max-deliver", "seq-not-int"])
async def test_a_forged_advisory_about_a_queued_job_does_nothing(bare, fields):
    nc, consumer_with = bare
    admission, hold = held_admission()  # no free worker: the job waits in the queue, undelivered
    calls: list[float] = []
    consumer = await consumer_with(failing(ErrorCode.INTERNAL, calls), admission)
    job_id = await jobs_client.submit(nc, "execute", job())
    seq = await job_seq(nc, job_id)
    await nc.publish(f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{CONSUMER}",
                     forged_advisory(seq, **fields))
    await wait_for(lambda: asyncio.sleep(0, consumer.ignored_advisories == 1))
    hold.set()
    js = nc.jetstream()
    assert (await js.stream_info(JOBS_STREAM)).state.messages == 1  # still queued, not removed
    assert (await js.stream_info(DEAD_STREAM)).state.messages == 0
    assert await jobs_client.result(nc, job_id) is None and consumer.dead_lettered == 0


# -- the pre-run result lookup ------------------------------------------------------------------
async def test_a_job_whose_result_store_is_unreachable_is_handed_back_not_run_then_runs_once(bare):
    from node.durable import stream_configs

    nc, consumer_with = bare
    calls: list[float] = []

    async def handler(data: bytes, kind: str, received: float):
        calls.append(time.monotonic())
        return ExecuteResult(success=True, result="ran")
    consumer = await consumer_with(handler, JOBS_MAX_DELIVER="4", JOBS_BACKOFF_SECONDS="0.5,0.5,0.5")
    js = nc.jetstream()
    await js.delete_stream(RESULTS_STREAM)  # the store is gone: the lookup cannot tell
    job_id = await jobs_client.submit(nc, "execute", job())
    await wait_for(lambda: asyncio.sleep(0, consumer.retried >= 1), timeout=20)
    assert calls == []  # never run while the lookup could not be made
    assert "result store unreachable" in consumer.last_error
    await js.add_stream(stream_configs(consumer.settings)[1])  # the store is back
    stored = await jobs_client.result(nc, job_id, wait=20)
    assert stored.result == "ran" and len(calls) == 1
    assert consumer.dead_lettered == 0
