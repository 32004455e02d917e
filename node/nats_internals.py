"""The only place the node reads nats-py private attributes; nowhere else may.

nats-py gives no public way to do six things the node needs:

* the reply subject of a micro-service request (`Request._msg.reply`): the node refuses to
  answer anything but an inbox, so it must see where a reply would go before sending it;
* a Key-Value bucket's stream and subject prefix, with its JetStream context (`KeyValue._js`,
  `_stream`, `_pre`): hosting counts and reads keys from the server's own subject counts
  (one stream-info request), reads a key's history with an ordered consumer, and purges a
  key without leaving a marker (node/hosting/streams.py, deployments.py, quotas.py);
* the subscriptions behind a service's endpoints (`Service._endpoints`, `Endpoint._subject`,
  `Endpoint._subscription`): a stopping node drains its request endpoints (delivering what is
  buffered) while keeping its health endpoints answering;
* a reply written to the socket at once (`publish_now`): `Client.publish` appends the message to
  a pending list and wakes a flusher task that writes it a loop turn later, a future, a queue
  put and a task switch per reply. On the warm path that was a measurable share of the node's
  loop, which every request goes through (issue 18). The fast path writes the same bytes
  `publish` would (an HPUB with nats-py's header block, sizing.header_block) and keeps its
  order: only when nothing is pending ahead of it in nats-py or in the socket's buffer, and the
  connection is plainly connected (not reconnecting or draining, whose rules `publish` keeps);
* a PONG whose flush gave up must not end the read loop (`tolerate_late_pongs`): nats-py's
  `flush(timeout)` cancels its PONG future on timeout but leaves it in `Client._pongs`, and
  when that PONG does arrive (a server that stalled a moment) `_process_pong` calls
  `set_result` on the cancelled future. The InvalidStateError ends `_read_loop` while the
  connection still says connected: nothing more is read, no callback fires, and the node
  would sit deaf. The connection's own PONG handler is replaced by one that drops a PONG whose
  waiter is gone (PONGs answer PINGs in order, so it is that one's);
* whether the connection's read loop is still running (`read_loop_alive`, `Client._reading_task`):
  the node stops (exit 1) when it has ended while the connection says connected, for that or
  any other reason (node/service.py).

Each accessor reads the attribute directly, with no `getattr` fallback: after a nats-py
upgrade that renames one, the node fails loudly (AttributeError) instead of quietly skipping
the hand-back or the drain. pyproject.toml pins nats-py to the versions these were checked
against, and tests/node/test_nats_internals.py checks each one against the installed nats-py
with a real server.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

from nats.aio.client import Client
from nats.aio.subscription import Subscription
from nats.aio.transport import TcpTransport


def reply_subject(request: Any) -> str:
    """Where a reply to this micro-service request would go ('' for a plain publish)."""
    return request._msg.reply or ""


class KvParts(NamedTuple):
    js: Any  # the bucket's JetStreamContext
    stream: str  # "KV_<bucket>"
    prefix: str  # "$KV.<bucket>.": a key's subject is prefix + key


def kv_parts(kv: Any) -> KvParts:
    """The JetStream context, stream name and subject prefix behind a nats-py KeyValue."""
    return KvParts(kv._js, kv._stream, kv._pre)


def endpoint_subscriptions(service: Any) -> Iterator[tuple[str, Subscription]]:
    """(subject, subscription) of every endpoint a micro service has started."""
    for endpoint in list(service._endpoints):
        subscription = endpoint._subscription
        if subscription is not None:
            yield endpoint._subject, subscription


def publish_now(nc: Any, subject: str, payload: bytes, header_block: bytes) -> bool:
    """Write one message (`header_block` as nats-py encodes headers, sizing.header_block) to the
    connection's socket now, as `nc.publish(subject, payload, headers=...)` would have its
    flusher write it; True when written. False, writing nothing, unless the connection is
    CONNECTED over TCP (TLS included) with nothing queued ahead: then the caller publishes."""
    transport = nc._transport
    if nc._status != Client.CONNECTED or nc._pending_data_size or type(transport) is not TcpTransport:
        return False
    writer = transport._io_writer
    if writer is None or writer.transport.is_closing() or writer.transport.get_write_buffer_size():
        return False
    size = len(header_block) + len(payload)
    writer.writelines((b"HPUB %b %d %d\r\n" % (subject.encode(), len(header_block), size),
                       header_block, payload, b"\r\n"))
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
    return True


def tolerate_late_pongs(nc: Client) -> None:
    """From now on a PONG whose `flush` timed out is dropped, not raised inside the read loop
    (see the module's text). Only this connection is changed."""
    async def process_pong() -> None:
        if nc._pongs:
            future = nc._pongs.pop(0)
            if not future.done():  # a flush that timed out cancelled it
                future.set_result(True)
            nc._pongs_received += 1
            nc._pings_outstanding = 0

    nc._process_pong = process_pong  # the parser calls `self.nc._process_pong()` on the instance


def read_loop_alive(nc: Client) -> bool:
    """Is nats-py's read loop for the current socket running? (False between a disconnect and
    the reconnect, and after the loop died on an exception.)"""
    task = nc._reading_task
    return task is not None and not task.done()
