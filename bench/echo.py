"""The raw NATS floor: a responder in its own process that answers every request at once.

`python -m bench.echo URL SUBJECT REPLY_FILE` subscribes (plain core NATS, nats-py on uvloop, the
same stack as the node) and answers each request with the bytes of REPLY_FILE and the node's
reply header (`Content-Type`). The harness writes there a real reply of the node to the trivial
execute request, so the echo carries exactly the execute case's bytes both ways: the request
payload (sent by the client) and an ExecuteResult-sized reply. An empty REPLY_FILE means:
reply with the request bytes (a mirror).
"""

from __future__ import annotations

import asyncio
import sys

import nats

from bench.procs import until_stopped


async def serve(url: str, subject: str, reply_file: str, content_type: str) -> None:
    with open(reply_file, "rb") as fh:
        body = fh.read()
    headers = {"Content-Type": content_type} if content_type else None
    nc = await nats.connect(url, name="bench-echo", max_reconnect_attempts=5)
    publish = nc.publish

    async def on_msg(msg) -> None:
        if msg.reply:
            await publish(msg.reply, body or msg.data, headers=headers)

    await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
    await nc.flush()
    print("echo ready", flush=True)
    await until_stopped()
    await nc.drain()


def main() -> None:
    url, subject, reply_file = sys.argv[1:4]
    content_type = sys.argv[4] if len(sys.argv) > 4 else "application/json"
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(url, subject, reply_file, content_type))
    else:
        uvloop.run(serve(url, subject, reply_file, content_type))


if __name__ == "__main__":
    main()
