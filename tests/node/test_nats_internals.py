"""Every nats-py private attribute the node reads (node/nats_internals.py), checked against the
installed nats-py with a real server: an upgrade that renames one fails here, loudly, instead
of quietly turning a KV count, a key's history or the endpoint drain into a no-op.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import nats
import pytest
from nats.aio.subscription import Subscription
from nats.js.api import KeyValueConfig
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


@pytest.mark.parametrize("accessor", [nats_internals.reply_subject, nats_internals.kv_parts,
                                      lambda s: list(nats_internals.endpoint_subscriptions(s))])
def test_a_missing_attribute_fails_loudly_not_quietly(accessor):
    with pytest.raises(AttributeError):
        accessor(object())
