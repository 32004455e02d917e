"""The only place the node reads nats-py private attributes; nowhere else may.

nats-py gives no public way to do three things the node needs:

* the reply subject of a micro-service request (`Request._msg.reply`): the node refuses to
  answer anything but an inbox, so it must see where a reply would go before sending it;
* the messages a pull subscription has received but not yet handed out
  (`PullSubscription._sub._pending_queue`): a stopping node naks them so a peer runs them at
  once instead of after the ack wait;
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

import asyncio
from typing import Any, Iterator

from nats.aio.subscription import Subscription


def reply_subject(request: Any) -> str:
    """Where a reply to this micro-service request would go ('' for a plain publish)."""
    return request._msg.reply or ""


def pending_messages(pull_subscription: Any) -> asyncio.Queue:
    """The queue of messages a JetStream pull subscription holds but has not handed out."""
    queue = pull_subscription._sub._pending_queue
    if not isinstance(queue, asyncio.Queue):
        raise TypeError(f"nats-py changed: pull subscription pending queue is {type(queue).__name__}")
    return queue


def endpoint_subscriptions(service: Any) -> Iterator[tuple[str, Subscription]]:
    """(subject, subscription) of every endpoint a micro service has started."""
    for endpoint in list(service._endpoints):
        subscription = endpoint._subscription
        if subscription is not None:
            yield endpoint._subject, subscription
