"""node/pull.py against a real nats-server: a pull request is over only when the server ended it."""

from __future__ import annotations

import asyncio
import time
import uuid

import nats
import pytest_asyncio
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from node.pull import Puller


@pytest_asyncio.fixture
async def queue(nats_url):
    """A fresh stream and pull consumer: (connection, JetStream, subject, stream, consumer)."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    name = f"PULL_{uuid.uuid4().hex[:8]}"
    subject = f"pull.{name}"
    await js.add_stream(StreamConfig(name=name, subjects=[subject]))
    await js.add_consumer(name, ConsumerConfig(durable_name="w", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    try:
        yield nc, js, subject, name, "w"
    finally:
        await js.delete_stream(name)
        await nc.close()


async def test_a_pull_returns_when_the_server_ends_the_request_and_leaves_none_open(queue):
    nc, js, subject, stream, consumer = queue
    puller = await Puller.bind(nc, stream, consumer)
    await js.publish(subject, b"one")
    got: list = []
    started = time.monotonic()
    assert await puller.pull(2, 0.3, got.append) == 1  # one of two: over at the server's 408
    assert time.monotonic() - started >= 0.25
    assert [m.data for m in got] == [b"one"] and puller.open == 0
    assert (await js.consumer_info(stream, consumer)).num_waiting == 0
    await puller.unsubscribe()


async def test_a_full_batch_ends_the_request_without_waiting_for_its_expiry(queue):
    nc, js, subject, stream, consumer = queue
    puller = await Puller.bind(nc, stream, consumer)
    for data in (b"a", b"b"):
        await js.publish(subject, data)
    got: list = []
    started = time.monotonic()
    assert await puller.pull(2, 5.0, got.append) == 2
    assert time.monotonic() - started < 2.0 and puller.open == 0
    await puller.unsubscribe()


async def test_each_message_is_handed_over_as_it_arrives(queue):
    nc, js, subject, stream, consumer = queue
    puller = await Puller.bind(nc, stream, consumer)
    arrived = asyncio.Event()
    pulling = asyncio.ensure_future(puller.pull(2, 1.0, lambda msg: arrived.set()))
    await js.publish(subject, b"one")
    await asyncio.wait_for(arrived.wait(), 0.9)  # before the request (waiting for a second) ends
    assert not pulling.done()
    assert await pulling == 1
    await puller.unsubscribe()


async def test_hand_back_gets_what_a_request_whose_reader_was_cancelled_still_brings(queue):
    nc, js, subject, stream, consumer = queue
    puller = await Puller.bind(nc, stream, consumer)
    pulling = asyncio.ensure_future(puller.pull(1, 1.0, lambda msg: None))
    await asyncio.sleep(0.2)
    pulling.cancel()
    assert puller.open == 1  # the server still holds the request
    await js.publish(subject, b"late")
    handed: list = []
    await puller.hand_back(3.0, handed.append)
    assert [m.data for m in handed] == [b"late"] and puller.open == 0
    for msg in handed:
        await msg.nak()
    await puller.unsubscribe()
