"""Durable jobs from Python: `job_id = await submit(nc, "execute", request)`, `await result(nc, job_id)`.

The same protocol any NATS client can speak (see node/durable.py): publish the request to
`strategy.jobs.<kind>` with `Strategy-Job-Id: <job id>` (and `Strategy-Reply-To` for a push
reply), then read `strategy.results.<job id>` from the STRATEGY_RESULTS stream (a tenant
account's import maps that read into its own results, `strategy.results.<account>.<job id>`, so
job ids never meet across tenants). Submitting a job id again within JOBS_DUPLICATE_WINDOW_SECONDS
(or after its result is stored) never runs it twice, so retrying a submit is safe; the check is
per tenant (node/jobqueue/claims.py). `Nats-Msg-Id` also names a job, but JetStream reads that
header stream-wide: node/jobqueue/ids.py.

`result` only reads the results stream (direct get, falling back to a leader get), which is
all deploy/nats/permissions.conf lets a client do; with `wait` it polls until the result is
stored or the wait is over.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import nats
import nats.errors
import nats.js.errors

from contracts import BacktestResult, ExecuteResult, decode, encode
from contracts.codec import content_type
from contracts.subjects import CONTENT_TYPE, JSON, MSGPACK

from . import sizing
from .durable import (
    JOB_ID,
    JOB_KIND,
    REPLY_TO,
    RESULTS_STREAM,
    jobs_subject,
    result_type,
    results_subject,
    valid_job_id,
)

KINDS = ("execute", "backtest")


def new_job_id() -> str:
    """Unguessable, so nobody can look a job's result up by guessing its id within its own
    account (results, claims and replies are kept per account)."""
    return uuid.uuid4().hex


async def submit(nc: nats.NATS, kind: str, request: Any, job_id: str | None = None,
                 reply_to: str | None = None, *, msgpack: bool = False, timeout: float = 5.0) -> str:
    """Publish a durable job and return its id once JetStream has stored it.

    `request` is an ExecuteRequest/BacktestRequest, a dict of the same fields, or encoded bytes.
    Raises sizing.TooLarge, before sending anything, when the job with its headers exceeds the
    server's max_payload (nats-py would send it, and the server would close the connection).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    job_id = job_id or new_job_id()
    if not valid_job_id(job_id):
        raise ValueError("job id must be 1-128 letters, digits, '-' or '_'")
    ctype = MSGPACK if msgpack else JSON
    data = request if isinstance(request, (bytes, bytearray)) else encode(request, ctype)
    headers = {JOB_ID: job_id, CONTENT_TYPE: ctype}
    if reply_to:
        headers[REPLY_TO] = reply_to
    sizing.check(nc, bytes(data), headers, "the job")  # nats-py would send it and lose the connection
    await nc.jetstream().publish(jobs_subject(kind), bytes(data), timeout=timeout, headers=headers)
    return job_id


async def _stored(js: Any, job_id: str) -> Any | None:
    subject = results_subject(job_id)
    try:
        return await js.get_last_msg(RESULTS_STREAM, subject, direct=True)
    except nats.js.errors.NotFoundError:
        return None
    except (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError):
        pass  # no direct-get responder (the stream does not allow it, or does not exist yet)
    try:
        return await js.get_last_msg(RESULTS_STREAM, subject)
    except nats.js.errors.NotFoundError:
        return None


def decode_result(msg: Any) -> ExecuteResult | BacktestResult:
    headers = msg.headers or {}
    return decode(msg.data or b"", result_type(headers.get(JOB_KIND)), content_type(headers))


async def result(nc: nats.NATS, job_id: str, wait: float | None = None) -> ExecuteResult | BacktestResult | None:
    """The stored result of `job_id`, or None when there is none (yet) after `wait` seconds."""
    if not valid_job_id(job_id):
        raise ValueError("job id must be 1-128 letters, digits, '-' or '_'")
    js = nc.jetstream(timeout=2.0)
    deadline = time.monotonic() + (wait or 0.0)
    pause = 0.02
    while True:
        try:
            msg = await _stored(js, job_id)
        except (asyncio.TimeoutError, nats.errors.ConnectionReconnectingError,
                nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError):
            msg = None  # JetStream not reachable right now: keep trying while the wait lasts
            if time.monotonic() >= deadline:
                raise
        if msg is not None:
            return decode_result(msg)
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.5)
