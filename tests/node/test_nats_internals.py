"""Every nats-py private attribute the node reads (node/nats_internals.py), checked against the
installed nats-py with a real server: an upgrade that renames one fails here, loudly, instead
of quietly turning the job hand-back or the endpoint drain into a no-op.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import nats
import pytest
from nats.aio.subscription import Subscription
from nats.js.api import StreamConfig
from nats.micro import add_service

from node import nats_internals


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


async def test_pending_messages_is_the_pull_subscriptions_own_queue(nats_url):
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="INTERNALS_CHECK", subjects=["internals.check"]))
    try:
        psub = await js.pull_subscribe("internals.check", durable="internals-check")
        await js.publish("internals.check", b"one")
        (msg,) = await psub.fetch(1, timeout=5)
        await msg.ack()
        queue = nats_internals.pending_messages(psub)
        assert isinstance(queue, asyncio.Queue) and queue.empty()
        # The very queue nats-py fills from the socket: what lands there is what fetch returns.
        await js.publish("internals.check", b"two")
        await nc.publish(psub._sub.subject, b"", headers=None)  # a message on its inbox, unasked
        await nc.flush()
        for _ in range(100):
            if not queue.empty():
                break
            await asyncio.sleep(0.02)
        assert not queue.empty()
    finally:
        await js.delete_stream("INTERNALS_CHECK")
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


@pytest.mark.parametrize("accessor", [nats_internals.reply_subject, nats_internals.pending_messages,
                                      lambda s: list(nats_internals.endpoint_subscriptions(s))])
def test_a_missing_attribute_fails_loudly_not_quietly(accessor):
    with pytest.raises(AttributeError):
        accessor(object())
