"""Every nats-py private attribute the node reads (node/nats_internals.py), checked against the
installed nats-py with a real server: an upgrade that renames one fails here, loudly, instead
of quietly turning a KV count, a key's history or the endpoint drain into a no-op.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import nats
import nats.errors
import pytest
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig
from nats.micro import add_service

from node import nats_internals, sizing
from tests.support import stall


def test_the_installed_nats_py_is_inside_the_pinned_range():
    major, minor = (int(x) for x in version("nats-py").split(".")[:2])
    assert (major, minor) == (2, 16), "node/nats_internals.py was checked against nats-py 2.16 only"


async def test_reply_subject_reads_where_a_service_request_wants_its_reply(nats_url):
    nc = await nats.connect(nats_url)
    seen: list[str] = []

    async def handler(req) -> None:
        seen.append(nats_internals.reply_subject(req))
        if seen[-1]:
            await req.respond(b"ok")
    service = await add_service(nc, name="internals-check", version="0.0.1")
    await service.add_endpoint(name="echo", subject="internals.echo", handler=handler)
    try:
        inbox_reply = await nc.request("internals.echo", b"", timeout=5)
        await nc.publish("internals.echo", b"")  # no reply subject at all
        await nc.flush()
        for _ in range(100):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.02)
        assert inbox_reply.data == b"ok"
        assert seen[0].startswith("_INBOX.") and seen[1] == ""
    finally:
        await service.stop()
        await nc.close()


async def test_kv_parts_are_the_buckets_own_context_stream_and_prefix(nats_url):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket="INTERNALS_KV", history=2))
    try:
        parts = nats_internals.kv_parts(kv)
        assert (parts.stream, parts.prefix) == ("KV_INTERNALS_KV", "$KV.INTERNALS_KV.")
        await kv.put("a.b", b"1")
        info = await parts.js.stream_info(parts.stream, subjects_filter=parts.prefix + "a.>")
        assert info.state.subjects == {"$KV.INTERNALS_KV.a.b": 1}  # a key's subject is prefix + key
        await parts.js.purge_stream(parts.stream, subject=parts.prefix + "a.b")
        assert (await parts.js.stream_info(parts.stream)).state.messages == 0  # purged, no marker
    finally:
        await js.delete_key_value("INTERNALS_KV")
        await nc.close()


async def test_endpoint_subscriptions_lists_each_started_endpoint(nats_url):
    nc = await nats.connect(nats_url)

    async def handler(req) -> None:
        await req.respond(b"")
    service = await add_service(nc, name="internals-endpoints", version="0.0.1")
    await service.add_endpoint(name="a", subject="internals.a", handler=handler)
    await service.add_endpoint(name="b", subject="internals.b", handler=handler, queue_group="q")
    try:
        found = dict(nats_internals.endpoint_subscriptions(service))
        assert set(found) == {"internals.a", "internals.b"}
        assert all(isinstance(sub, Subscription) for sub in found.values())
        assert found["internals.b"].queue == "q"
    finally:
        await service.stop()
        await nc.close()


async def collected(listener, publisher, subject: str, count: int):
    """(messages received so far, the subscription, a coroutine that reads until `count`).

    Returns once a probe from `publisher` has reached the subscription: on a fresh pair of
    connections nats-server can drop the very first publish even after both flushed (seen with
    nc.publish alone, about 1 in 100), which is not what these tests are about. Probes are
    left out of what `read` collects."""
    got: list = []
    sub = await listener.subscribe(subject)
    await listener.flush()
    for attempt in range(50):
        await publisher.publish(subject, b"probe-%d" % attempt)
        await publisher.flush()
        try:
            await sub.next_msg(timeout=0.2)
            break
        except nats.errors.TimeoutError:
            continue

    async def read() -> None:
        while len(got) < count:
            msg = await sub.next_msg(timeout=5)
            if not msg.data.startswith(b"probe-"):
                got.append(msg)
    return got, sub, read


async def test_publish_now_delivers_what_publish_delivers(nats_url):
    nc, listener = await nats.connect(nats_url), await nats.connect(nats_url)
    block = sizing.header_block({"Content-Type": "application/json"})
    try:
        got, _sub, read = await collected(listener, nc, "internals.now", 2)
        await nc.publish("internals.now", b'{"a": 1}', headers={"Content-Type": "application/json"})
        await nc.flush()
        out_msgs = nc.stats["out_msgs"]
        assert nats_internals.publish_now(nc, "internals.now", b'{"a": 1}', block) is True
        assert nc.stats["out_msgs"] == out_msgs + 1
        await read()
        assert [(m.data, m.headers) for m in got] == [(b'{"a": 1}', {"Content-Type": "application/json"})] * 2
    finally:
        await nc.close()
        await listener.close()


async def test_publish_now_writes_nothing_behind_a_pending_publish_and_order_is_kept(nats_url):
    nc, listener = await nats.connect(nats_url), await nats.connect(nats_url)
    block = sizing.header_block({"Content-Type": "text/plain"})
    try:
        got, _sub, read = await collected(listener, nc, "internals.order", 3)
        await nc.publish("internals.order", b"1")  # pending until the flusher's next turn
        assert nats_internals.publish_now(nc, "internals.order", b"2", block) is False
        await nc.publish("internals.order", b"2", headers={"Content-Type": "text/plain"})
        await nc.flush()
        assert nats_internals.publish_now(nc, "internals.order", b"3", block) is True
        await read()
        assert [m.data for m in got] == [b"1", b"2", b"3"]
    finally:
        await nc.close()
        await listener.close()


async def test_publish_now_declines_on_a_draining_or_closed_connection(nats_url):
    nc = await nats.connect(nats_url)
    block = sizing.header_block({"Content-Type": "text/plain"})
    async def slow(_msg) -> None:
        await asyncio.sleep(0.2)
    await nc.subscribe("internals.held", cb=slow)  # keeps the drain going a while
    await nc.publish("internals.held", b"")
    await nc.flush()
    draining = asyncio.ensure_future(nc.drain())
    for _ in range(100):
        if nc.is_draining:
            break
        await asyncio.sleep(0.001)
    assert nc.is_draining
    assert nats_internals.publish_now(nc, "internals.drain", b"x", block) is False
    await draining
    assert nats_internals.publish_now(nc, "internals.closed", b"x", block) is False


async def flush_that_gives_up(server, nc) -> None:
    """A flush whose PONG comes after its timeout: the server stalls 1 s, the flush waits 0.3 s."""
    stalled = asyncio.ensure_future(stall(server, 1.0))
    await asyncio.sleep(0.05)
    with pytest.raises(nats.errors.FlushTimeoutError):
        await nc.flush(timeout=0.3)
    await stalled
    await asyncio.sleep(0.3)  # the late PONG arrives


async def test_a_pong_after_its_flush_gave_up_leaves_the_read_loop_running(bare_server):
    nc = await nats.connect(bare_server.url)
    try:
        nats_internals.tolerate_late_pongs(nc)
        await flush_that_gives_up(bare_server, nc)
        assert nats_internals.read_loop_alive(nc) and nc.is_connected
        sub = await nc.subscribe("internals.late-pong")
        await nc.publish("internals.late-pong", b"read")
        assert (await sub.next_msg(timeout=2)).data == b"read"  # something still reads the socket
        await nc.flush(timeout=2)  # and the next flush gets its own PONG
    finally:
        await nc.close()


async def test_without_it_the_installed_nats_py_ends_the_read_loop_on_that_pong(bare_server):
    """The bug tolerate_late_pongs works around; when this fails, nats-py has fixed it."""
    nc = await nats.connect(bare_server.url)
    try:
        await flush_that_gives_up(bare_server, nc)
        assert nc.is_connected and not nats_internals.read_loop_alive(nc)
    finally:
        await nc.close()


@pytest.mark.parametrize("accessor", [nats_internals.reply_subject, nats_internals.kv_parts,
                                      lambda s: list(nats_internals.endpoint_subscriptions(s)),
                                      lambda s: nats_internals.publish_now(s, "x", b"", b""),
                                      nats_internals.read_loop_alive])
def test_a_missing_attribute_fails_loudly_not_quietly(accessor):
    with pytest.raises(AttributeError):
        accessor(object())
