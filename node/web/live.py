"""Live data for the browser: Server-Sent Events fed by NATS, never by polling loops.

Sources (each one an event the server pushes to us as it happens):
* `subject_events(nc, subject)`: a core subscription. It follows the imported streams a tenant
  may read (`signals.<tenant>.<deployment>.<symbol>`, `strategy.logs.<tenant>.<deployment>`)
  and Key-Value changes: every put or delete of a key is a message on `$KV.<bucket>.<key>`, so
  subscribing there is a watch of those keys from now on (the current values come first from a
  control request, e.g. `deployments.list`).
* `kv_changes(nc, bucket, keys)`: that watch as (key, value or None for a delete) pairs.

`sse(request, events)` turns an async iterator of `Event`s (or dicts, sent as JSON) into a
text/event-stream response; a comment line every HEARTBEAT_S keeps proxies from closing an idle
stream, and the iterator is closed (its subscription dropped) when the browser leaves.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import StreamingResponse

HEARTBEAT_S = 15.0
QUEUE = 1000  # messages buffered per subscription before the slowest browser loses the oldest


@dataclass
class Event:
    data: Any
    event: str | None = None


def _frame(item: Any) -> bytes:
    if not isinstance(item, Event):
        item = Event(item)
    data = item.data if isinstance(item.data, str) else json.dumps(item.data, separators=(",", ":"))
    lines = [f"event: {item.event}"] if item.event else []
    lines += [f"data: {line}" for line in data.split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def sse(request: Request, events: AsyncIterator[Any]) -> StreamingResponse:
    """A text/event-stream response of `events` (Event or JSON-able values)."""

    async def body() -> AsyncIterator[bytes]:
        iterator = events.__aiter__()
        pending: asyncio.Task | None = None
        try:
            yield b": connected\n\n"
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(iterator.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
                if await request.is_disconnected():
                    break
                if not done:
                    yield b": keep-alive\n\n"
                    continue
                task, pending = pending, None
                try:
                    item = task.result()
                except StopAsyncIteration:
                    break
                yield _frame(item)
        finally:
            if pending is not None:
                pending.cancel()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001 - the browser has gone; nothing to report to
                    pass

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class Subscription:
    """A core subscription made before streaming starts (so nothing published after the page
    asked is missed); iterate it for the messages, close it with `aclose()`."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub

    def __aiter__(self) -> "Subscription":
        self._it = self.sub.messages.__aiter__()
        return self

    async def __anext__(self) -> Any:
        return await self._it.__anext__()

    async def aclose(self) -> None:
        try:
            await self.sub.unsubscribe()
        except Exception:  # noqa: BLE001 - the connection is closing
            pass


async def subject_events(nc: Any, subject: str) -> Subscription:
    """Messages on `subject` from now on, as they are published (a core subscription)."""
    return Subscription(await nc.subscribe(subject, pending_msgs_limit=QUEUE))


async def kv_changes(nc: Any, bucket: str, keys: str) -> AsyncIterator[tuple[str, bytes | None]]:
    """A watch of `keys` in `bucket` from now on: each put as (key, value) and each delete or
    purge as (key, None). The subscription exists when this returns."""
    prefix = f"$KV.{bucket}."
    sub = await subject_events(nc, prefix + keys)

    async def changes() -> AsyncIterator[tuple[str, bytes | None]]:
        try:
            async for msg in sub:
                op = (msg.headers or {}).get("KV-Operation")
                yield msg.subject[len(prefix):], (None if op in ("DEL", "PURGE") else msg.data)
        finally:
            await sub.aclose()

    return changes()


async def flush(nc: Any, timeout: float = 5.0) -> None:
    """`nc.flush`, which a cancelled caller cannot turn into a broken connection.

    nats-py keeps a cancelled flush's future in its PONG queue, and the PONG that then arrives
    fails the connection's read loop (InvalidStateError): every page of the user, which share
    the connection, sees it error and reconnect. A browser leaving an event stream cancels its
    request at any await, so the flush runs on in its own task until its PONG has come."""
    task = asyncio.ensure_future(nc.flush(timeout=timeout))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failure nobody awaits
    await asyncio.shield(task)


async def ready(nc: Any, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`events`, after one `ready` event sent once the server has our subscriptions (a flush)."""
    await flush(nc)
    yield Event({}, "ready")
    try:
        async for item in events:
            yield item
    finally:
        close = getattr(events, "aclose", None)
        if close is not None:
            await close()


def mapped(source: AsyncIterator[Any], fn: Any) -> AsyncIterator[Any]:
    """fn(item) for each item of `source`, skipping None results."""

    async def gen() -> AsyncIterator[Any]:
        try:
            async for item in source:
                out = fn(*item) if isinstance(item, tuple) else fn(item)
                if out is not None:
                    yield out
        finally:
            close = getattr(source, "aclose", None)
            if close is not None:
                await close()

    return gen()


async def merged(*iterators: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Items of several async iterators as they come (all closed when the consumer stops)."""
    queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE)
    done = object()

    async def pump(it: AsyncIterator[Any]) -> None:
        try:
            async for item in it:
                await queue.put(item)
        finally:
            await queue.put(done)

    tasks = [asyncio.ensure_future(pump(it)) for it in iterators]
    remaining = len(tasks)
    try:
        while remaining:
            item = await queue.get()
            if item is done:
                remaining -= 1
                continue
            yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for it in iterators:
            close = getattr(it, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # noqa: BLE001
                    pass
