"""The in-process INSECURE BASELINE responder, through a real nats-server as the bench uses it.

It must do the node's work per request (same contracts, same compile path, same runtime) and
answer like the node does, errors included, so that comparing with it measures isolation only.
"""

from __future__ import annotations

import msgspec
import nats
import pytest

from bench import cases, inprocess
from contracts import subjects


@pytest.fixture(scope="module")
def responders(nats_url):
    started = inprocess.start(nats_url)
    yield started
    for proc in started.procs:
        proc.stop()


def _request(code: str, bars: int = 300, **extra) -> dict:
    return {"code": code, "bars": cases.columnar_bars(bars), "symbol": "BENCH", "timeframe": "1d", **extra}


async def _ask(nats_url: str, subject: str, payload: bytes, headers: dict | None = None):
    nc = await nats.connect(nats_url)
    try:
        return await nc.request(subject, payload, timeout=20, headers=headers)
    finally:
        await nc.close()


async def test_sma_request_gets_signals_and_metrics(nats_url, responders):
    msg = await _ask(nats_url, responders.one, msgspec.json.encode(_request(cases.SMA)))
    reply = msgspec.json.decode(msg.data)
    assert reply["success"] is True and reply["error"] is None
    assert reply["signals"] and {s["type"] for s in reply["signals"]} <= {"BUY", "SELL"}
    assert reply["performance"]["total_trades"] >= 1
    assert reply["node_id"] == f"inprocess-{responders.pids[0]}"  # the one-process subject: process A
    assert msg.headers["Content-Type"] == subjects.JSON


async def test_msgpack_request_gets_a_msgpack_reply(nats_url, responders):
    msg = await _ask(nats_url, responders.one, msgspec.msgpack.encode(_request(cases.TRIVIAL)),
                     {subjects.CONTENT_TYPE: subjects.MSGPACK})
    reply = msgspec.msgpack.decode(msg.data)
    assert reply["success"] is True and reply["result"] == "BUY" and len(reply["signals"]) == 1
    assert msg.headers["Content-Type"] == subjects.MSGPACK


@pytest.mark.parametrize("payload, code", [
    (b"{not json", "INVALID_REQUEST"),
    (msgspec.json.encode(_request(cases.TRIVIAL, timout_ms=5)), "INVALID_REQUEST"),  # unknown field
    (msgspec.json.encode(_request("import os\ndef strategy(data):\n    return 'BUY'\n")), "SECURITY_VIOLATION"),
    (msgspec.json.encode(_request("def strategy(data:\n")), "COMPILE_ERROR"),
    (msgspec.json.encode(_request("def strategy(data):\n    return 1 / 0\n")), "RUNTIME_ERROR"),
])
async def test_bad_input_gets_the_same_coded_error_as_the_node(nats_url, responders, payload, code):
    msg = await _ask(nats_url, responders.one, payload)
    reply = msgspec.json.decode(msg.data)
    assert reply["success"] is False and reply["error"]["code"] == code, reply["error"]
    assert msg.headers["Nats-Service-Error-Code"] in ("400", "403", "422")


async def test_two_process_subject_is_served_by_both_processes(nats_url, responders):
    nc = await nats.connect(nats_url)
    try:
        payload = msgspec.json.encode(_request(cases.TRIVIAL, bars=50))
        seen = set()
        for _ in range(60):
            msg = await nc.request(responders.two, payload, timeout=20)
            seen.add(msgspec.json.decode(msg.data)["node_id"])
            if len(seen) == 2:
                break
    finally:
        await nc.close()
    assert seen == {f"inprocess-{pid}" for pid in responders.pids}
