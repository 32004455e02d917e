"""Run logs: one `RunLogs` message per run on `strategy.logs.<tenant>.<deployment>`.

Stream STRATEGY_LOGS keeps them for RETENTION_S (node/hosting/streams.py); `Nats-Msg-Id` is the
trigger id, so a redelivered run never logs twice. A run's lines are cut to fit the server's
max_payload (node/sizing.py): the newest lines are kept and `truncated` says so.

`tail` reads a deployment's last lines back for `strategy.v1.deployments.logs` (the node reads
the stream; a tenant account has no JetStream access of its own): an ordered consumer on the
deployment's subject from a stream sequence close before its newest message, moved back
(x8 each time) until it holds enough lines or reaches the stream's first message, so a reply
reads about as many messages as it returns, not the deployment's whole week.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import ConsumerConfig, DeliverPolicy

from contracts import subjects
from contracts.hosting import RunLogs

from .. import sizing
from . import naming, streams

FIRST_SPAN = 64  # stream sequences looked back at first (other deployments' logs interleave)
READ_WAIT_S = 2.0

_encoder = msgspec.json.Encoder()


def fitted(nc: Any, logs: RunLogs, headers: dict[str, str]) -> bytes:
    body = _encoder.encode(logs)
    while not sizing.fits(nc, body, headers) and logs.lines:
        logs.lines = logs.lines[len(logs.lines) // 2 + 1:] if len(logs.lines) > 1 else []
        logs.truncated = True
        body = _encoder.encode(logs)
    return body


async def publish(js: Any, nc: Any, tenant: str, logs: RunLogs) -> None:
    headers = {"Nats-Msg-Id": f"{logs.run_id}.logs", subjects.CONTENT_TYPE: subjects.JSON,
               "Strategy-Run-Id": logs.run_id}
    body = fitted(nc, logs, headers)
    sizing.check(nc, body, headers, "the run's logs")
    await js.publish(naming.logs_subject(tenant, logs.deployment), body, headers=headers)


_decoder = msgspec.json.Decoder(RunLogs)


async def tail(js: Any, tenant: str, deployment: str, lines: int) -> list[RunLogs]:
    """The runs' logs that hold the deployment's last `lines` lines, oldest first."""
    subject = naming.logs_subject(tenant, deployment)
    try:
        newest = await js.get_last_msg(streams.LOGS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return []
    first = (await js.stream_info(streams.LOGS_STREAM)).state.first_seq
    span = FIRST_SPAN
    while True:
        start = max(first, newest.seq - span + 1)
        runs = await _read(js, subject, start, newest.seq)
        if start <= first or sum(len(r.lines) for r in runs) >= lines:
            break
        span *= 8
    return last_lines(runs, lines)


def last_lines(runs: list[RunLogs], lines: int) -> list[RunLogs]:
    """The newest messages holding `lines` lines (messages without lines among them kept); the
    oldest one kept loses its earlier lines beyond `lines`."""
    out: list[RunLogs] = []
    left = lines
    for run in reversed(runs):
        if left <= 0:
            break
        if len(run.lines) > left:
            run.lines = run.lines[-left:]
        left -= len(run.lines)
        out.append(run)
    out.reverse()
    return out


async def _read(js: Any, subject: str, start: int, end: int) -> list[RunLogs]:
    """Every RunLogs on `subject` from stream sequence `start` to `end`."""
    sub = await js.subscribe(subject, stream=streams.LOGS_STREAM, ordered_consumer=True,
                             config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start))
    out: list[RunLogs] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_WAIT_S)
            except (asyncio.TimeoutError, nats.errors.TimeoutError):
                break  # aged out meanwhile: what was read
            meta = msg.metadata
            if meta.sequence.stream > end:
                break
            try:
                out.append(_decoder.decode(msg.data))
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            if meta.sequence.stream >= end or meta.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out
