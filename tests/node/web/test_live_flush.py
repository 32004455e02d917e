"""A browser that goes away while its event stream waits for the server's PONG (live.ready's
flush) must not break the signed-in user's NATS connection, which all of that user's pages
share. nats-py keeps a cancelled flush's future in its PONG queue, and the PONG that then
arrives fails its read loop (InvalidStateError): the connection errors and reconnects, and
requests in flight meanwhile hang (seen once in CI as a page waiting 30 s for a diff)."""

from __future__ import annotations

import asyncio

import nats

from node.web import live


async def empty():
    return
    yield


async def test_an_event_stream_cancelled_during_its_flush_leaves_the_connection_healthy(nats_url):
    errors: list[BaseException] = []

    async def on_error(exc: BaseException) -> None:
        errors.append(exc)

    nc = await nats.connect(nats_url, error_cb=on_error)
    try:
        for _ in range(20):  # the browser leaves while the PING is out
            stream = live.ready(nc, empty())
            task = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        async def answer(msg) -> None:
            await msg.respond(b"ok")
        sub = await nc.subscribe("live.flush.check", cb=answer)
        for _ in range(5):  # PONGs for every PING sent above have come back by now
            assert (await nc.request("live.flush.check", b"", timeout=5)).data == b"ok"
        await sub.unsubscribe()
        assert errors == [] and nc.is_connected
    finally:
        await nc.close()
