"""One size rule for every outgoing message (node/sizing.py), against a real nats-server whose
max_payload is 64 KiB: the rule counts headers exactly as the server does, a result too large
for the server is OUTPUT_LIMIT on the request path and the durable path alike (stored, in one
run, never retried), and the node stays connected and answering whatever a strategy returns.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import nats
import pytest
import pytest_asyncio

from contracts import ErrorCode, ExecuteResult, subjects
from node import jobs_client, sizing
from node.admission import Admission
from node.config import Settings
from node.durable import BODY_DROPPED, DEAD_STREAM, ERROR, JobConsumer, dead_subject
from node.embedded import EmbeddedServer
from tests.support import columnar_bars, request_json

MAX_PAYLOAD = 64 * 1024
BLOB_CODE = "def strategy(data):\n    return {'blob': 'x' * params['n']}\n"


@pytest.fixture(scope="module")
def small_server(tmp_path_factory):
    conf = tmp_path_factory.mktemp("small") / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = EmbeddedServer(config_file=str(conf)).start()
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module")
async def small_node(small_server, tmp_path_factory):
    from node.service import Node

    settings = Settings.from_env({"MAX_WORKERS": "2", "NODE_ID": "small-node", "MAX_TIMEOUT_SECONDS": "10",
                                  "HEARTBEAT_FILE": str(tmp_path_factory.mktemp("hb") / "heartbeat")})
    running = Node(settings, small_server.url)
    await running.start()
    try:
        deadline = time.monotonic() + 15
        while running.jobs.state != "consuming":
            assert time.monotonic() < deadline, running.jobs.last_error
            await asyncio.sleep(0.05)
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(scope="module")
async def snc(small_server, small_node):
    conn = await nats.connect(small_server.url)
    yield conn
    await conn.close()


def blob_request(n: int) -> dict:
    return {"code": BLOB_CODE, "bars": columnar_bars(20), "parameters": {"n": n}, "timeout_ms": 8000,
            "request_id": "r"}


# -- the rule is the server's rule ------------------------------------------------------------
def test_the_server_reports_the_configured_max_payload(small_node):
    assert small_node.nc.max_payload == MAX_PAYLOAD
    assert sizing.body_limit(small_node.nc) == MAX_PAYLOAD - sizing.HEADER_ROOM


async def test_headers_are_counted_exactly_as_the_server_counts_them(small_server):
    """A message of exactly max_payload (headers + body) passes; one byte more is a violation
    that closes the connection: the rule's count is the server's, to the byte."""
    headers = {"Content-Type": "application/json", "Strategy-Job-Id": "j" * 40, "X-Spaced": "  padded  "}
    body = b"b" * (MAX_PAYLOAD - sizing.header_bytes(headers))
    assert sizing.wire_size(body, headers) == MAX_PAYLOAD and sizing.fits(MAX_PAYLOAD, body, headers)

    receiver = await nats.connect(small_server.url)
    got = await receiver.subscribe("sizing.exact")
    await receiver.flush()
    ok = await nats.connect(small_server.url)
    await ok.publish("sizing.exact", body, headers=headers)
    await ok.flush()
    msg = await got.next_msg(timeout=5)
    assert len(msg.data) == len(body) and ok.is_connected

    closed = asyncio.Event()

    async def on_closed():
        closed.set()
    over = await nats.connect(small_server.url, closed_cb=on_closed, allow_reconnect=False)
    one_more = body + b"b"
    assert not sizing.fits(MAX_PAYLOAD, one_more, headers)
    await over.publish("sizing.exact", one_more, headers=headers)  # nats-py checks only the body
    await asyncio.wait_for(closed.wait(), 5)
    assert "maximum payload" in str(over.last_error).lower()
    await ok.close()
    await receiver.close()


def test_check_refuses_what_the_server_would_refuse():
    headers = {"Content-Type": "application/json"}
    body = b"x" * (MAX_PAYLOAD - sizing.header_bytes(headers))
    sizing.check(MAX_PAYLOAD, body, headers)
    with pytest.raises(sizing.TooLarge) as caught:
        sizing.check(MAX_PAYLOAD, body + b"x", headers, "the reply")
    assert caught.value.size == MAX_PAYLOAD + 1 and "the reply" in str(caught.value)


def test_an_oversized_result_becomes_an_empty_output_limit_result_of_the_same_kind():
    reply = ExecuteResult(success=True, result="x" * MAX_PAYLOAD, node_id="n", request_id="r",
                          execution_time_ms=1.5)
    fitted, body = sizing.fit_reply(reply, subjects.JSON, MAX_PAYLOAD)
    assert len(body) <= sizing.body_limit(MAX_PAYLOAD)
    assert fitted.success is False and fitted.result is None and fitted.error.code == ErrorCode.OUTPUT_LIMIT
    assert (fitted.node_id, fitted.request_id, fitted.execution_time_ms) == ("n", "r", 1.5)
    assert f"{sizing.body_limit(MAX_PAYLOAD):,} bytes" in fitted.error.message


# -- the request path and the durable path agree at every size -------------------------------
async def reply_size(nc, n: int) -> int:
    msg = await nc.request(subjects.EXECUTE, json.dumps(blob_request(n)).encode(), timeout=15)
    return len(msg.data)


async def overhead(snc) -> int:
    """Encoded size of a blob result less its blob (the execution time's digits vary by a few)."""
    return await reply_size(snc, 1000) - 1000


SIZES = {  # encoded result size, relative to the server's max_payload
    "fits with room": lambda: sizing.body_limit(MAX_PAYLOAD) - 200,
    "just over the header room": lambda: sizing.body_limit(MAX_PAYLOAD) + 200,
    "100 bytes under max_payload": lambda: MAX_PAYLOAD - 100,
    "at max_payload": lambda: MAX_PAYLOAD,
    "100 bytes over max_payload": lambda: MAX_PAYLOAD + 100,
}


@pytest.mark.parametrize("case", list(SIZES))
async def test_request_and_durable_job_give_the_same_answer_in_one_run(case, snc, small_node):
    target = SIZES[case]()
    n = target - await overhead(snc)
    fits = target <= sizing.body_limit(MAX_PAYLOAD) - 20  # margin for the execution time's digits
    jobs = small_node.jobs
    retried, completed = jobs.retried, jobs.completed

    answer = json.loads((await snc.request(subjects.EXECUTE, json.dumps(blob_request(n)).encode(), timeout=15)).data)
    started = time.monotonic()
    job_id = await jobs_client.submit(snc, "execute", blob_request(n))
    stored = await jobs_client.result(snc, job_id, wait=20)
    took = time.monotonic() - started

    assert stored is not None, "the job's result was never stored"
    if fits:
        assert answer["success"] is True and answer["error"] is None
        assert stored.success is True and stored.error is None and len(stored.result["blob"]) == n
    else:
        assert answer["error"]["code"] == "OUTPUT_LIMIT"
        assert stored.error.code == ErrorCode.OUTPUT_LIMIT and stored.result is None
        def wording(text: str) -> str:
            return re.sub(r"[0-9][0-9,]*", "N", text)
        assert wording(stored.error.message) == wording(answer["error"]["message"])  # one rule, one text
        assert "max_payload" in stored.error.message and "crashed" not in stored.error.message
    assert jobs.retried == retried and jobs.completed == completed + 1  # one run, no retry
    assert took < 10
    # Every node stays connected and keeps answering.
    assert small_node.nc.is_connected and small_node.connectivity.connected
    health = await request_json(snc, subjects.HEALTH, {})
    assert health["nats_connected"] is True and health["status"] in ("ok", "degraded")
    again = json.loads((await snc.request(subjects.EXECUTE, json.dumps(blob_request(10)).encode(), timeout=15)).data)
    assert again["success"] is True


async def test_a_job_reply_subject_gets_the_output_limit_result_too(snc, small_node):
    inbox = snc.new_inbox()
    sub = await snc.subscribe(inbox)
    job_id = await jobs_client.submit(snc, "execute", blob_request(MAX_PAYLOAD), reply_to=inbox)
    msg = await sub.next_msg(timeout=20)
    assert msg.headers["Strategy-Job-Id"] == job_id and msg.headers["Nats-Service-Error-Code"] == "413"
    assert json.loads(msg.data)["error"]["code"] == "OUTPUT_LIMIT"
    assert small_node.nc.is_connected


async def test_a_job_too_large_for_the_server_is_refused_before_it_is_sent(snc):
    body = json.dumps({"code": "x" * (MAX_PAYLOAD - 60)}).encode()  # fits alone, not with headers
    assert len(body) <= MAX_PAYLOAD
    with pytest.raises(sizing.TooLarge):
        await jobs_client.submit(snc, "execute", body)
    assert snc.is_connected


# -- dead letters ------------------------------------------------------------------------------
async def test_a_dead_letter_too_large_for_the_server_keeps_its_headers_and_drops_the_body(tmp_path):
    conf = tmp_path / "nats.conf"
    conf.write_text(f"max_payload: {MAX_PAYLOAD}\n")
    server = EmbeddedServer(config_file=str(conf)).start()  # its own: no other node takes the job
    nc = await nats.connect(server.url)
    calls: list[float] = []

    async def broken(data: bytes, kind: str, received: float):
        calls.append(time.monotonic())
        return ExecuteResult(success=False, error=jobs_error())

    settings = Settings.from_env({"NODE_ID": "dead-sizer", "JOBS_MAX_DELIVER": "1"})
    consumer = JobConsumer(nc, settings, Admission(1, 4), lambda kind: broken)
    consumer.start()  # declares the streams
    deadline = time.monotonic() + 15
    while consumer.state != "consuming":
        assert time.monotonic() < deadline, consumer.last_error
        await asyncio.sleep(0.05)
    # A job whose body and headers nearly fill max_payload: with the dead letter's own headers
    # added it would be a max-payload violation.
    job_id = uuid.uuid4().hex
    job_headers = {"Nats-Msg-Id": job_id, "Content-Type": "application/json", "X-Client": "c" * 200}
    room = MAX_PAYLOAD - sizing.header_bytes(job_headers) - 50
    body = json.dumps({"code": "x" * (room - len('{"code": ""}'))}).encode()
    assert sizing.wire_size(body, job_headers) == MAX_PAYLOAD - 50
    await nc.jetstream().publish("strategy.jobs.execute", body, headers=job_headers)
    try:
        stored = await jobs_client.result(nc, job_id, wait=20)
        dead = await nc.jetstream().get_last_msg(DEAD_STREAM, dead_subject(job_id))
    finally:
        await consumer.close()
        await consumer.admission.drain(5)
    assert len(calls) == 1 and stored.error.code == ErrorCode.INTERNAL
    assert dead.data in (b"", None) and dead.headers[BODY_DROPPED] == str(len(body))
    assert dead.headers[ERROR].startswith("INTERNAL: broken")
    assert nc.is_connected
    await nc.close()
    server.close()


def jobs_error():
    from contracts import ErrorInfo

    return ErrorInfo(code=ErrorCode.INTERNAL, message="broken on purpose")
