"""The only place the node reads nats-py private attributes; nowhere else may.

nats-py gives no public way to do three things the node needs:

* the reply subject of a micro-service request (`Request._msg.reply`): the node refuses to
  answer anything but an inbox, so it must see where a reply would go before sending it;
* a Key-Value bucket's stream and subject prefix, with its JetStream context (`KeyValue._js`,
  `_stream`, `_pre`): hosting counts and reads keys from the server's own subject counts
  (one stream-info request), reads a key's history with an ordered consumer, and purges a
  key without leaving a marker (node/hosting/streams.py, deployments.py, quotas.py);
* the subscriptions behind a service's endpoints (`Service._endpoints`, `Endpoint._subject`,
  `Endpoint._subscription`): a stopping node drains its request endpoints (delivering what is
  buffered) while keeping its health endpoints answering.

Each accessor reads the attribute directly, with no `getattr` fallback: after a nats-py
upgrade that renames one, the node fails loudly (AttributeError) instead of quietly skipping
the hand-back or the drain. pyproject.toml pins nats-py to the versions these were checked
against, and tests/node/test_nats_internals.py checks each one against the installed nats-py
with a real server.
"""

from __future__ import annotations

from typing import Any, Iterator, NamedTuple

from nats.aio.subscription import Subscription


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
