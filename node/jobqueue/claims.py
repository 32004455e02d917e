"""Each tenant's job id runs once within JOBS_DUPLICATE_WINDOW_SECONDS: claims in STRATEGY_JOB_IDS.

Stream STRATEGY_JOB_IDS, subject `strategy.jobids.<stored key>` (the job id under its tenant's
account, node/durable.py `stored_key`: one tenant's id never meets another's), one message per
subject whose body is the STRATEGY_JOBS sequence of the job message that claimed the id, kept
for the window. Before a job runs, the node that took it claims its id with
`Nats-Expected-Last-Subject-Sequence: 0` (the server stores only the first claim):

* the claim is stored, or the stored claim names this same message (a redelivery after a node
  died or handed the job back): the job runs;
* the stored claim names another message: this one repeats a job id of the same tenant within
  the window (a retried submit). It is acked and never run, like a duplicate the stream dropped;
  the stored result (and the first submit's push reply) is the job's.

A claim that expires between the failed check and the read is claimed again. Nothing is kept in
a node's memory: any node may take any delivery.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats.js.errors
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from .. import sizing
from .jetstream import EXPECTED_LAST_SUBJECT_SEQ, NO_MESSAGE_FOUND, WRONG_LAST_SEQUENCE

CLAIMS_STREAM = "STRATEGY_JOB_IDS"
CLAIMS_PREFIX = "strategy.jobids"
ATTEMPTS = 3  # a claim that expires between the failed check and the read is taken again


def claim_subject(key: str) -> str:
    return f"{CLAIMS_PREFIX}.{key}"


def claims_stream_config(window_s: float, replicas: int) -> StreamConfig:
    return StreamConfig(
        name=CLAIMS_STREAM, subjects=[f"{CLAIMS_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE, num_replicas=replicas, max_msgs_per_subject=1, max_age=window_s,
        duplicate_window=min(120.0, window_s),
        description="Durable job ids claimed per tenant (strategy.jobids.<account>.<job id>): each runs once",
    )


class Claims:
    def __init__(self, js: Any, timeout: float, max_payload: Any = sizing.DEFAULT_MAX_PAYLOAD) -> None:
        self.js = js
        self.timeout = timeout
        self.max_payload = max_payload  # the connection (its INFO's max_payload) or an int

    async def claim(self, key: str, seq: int) -> bool:
        """True when the job message at STRATEGY_JOBS sequence `seq` may run job `key`: its claim
        is stored now or was stored by an earlier delivery of the same message. Errors other
        than a held claim raise (the caller hands the job back rather than run it unchecked)."""
        subject, mine = claim_subject(key), str(seq).encode()
        headers = {EXPECTED_LAST_SUBJECT_SEQ: "0"}
        sizing.check(self.max_payload, mine, headers, "a job id claim")  # every message is sized
        for _ in range(ATTEMPTS):
            try:
                await self.js.publish(subject, mine, timeout=self.timeout, headers=dict(headers))
                return True
            except nats.js.errors.APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    raise
            try:
                held = await self.js.get_last_msg(CLAIMS_STREAM, subject)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code not in (None, NO_MESSAGE_FOUND):
                    raise
                await asyncio.sleep(0)
                continue  # expired between the check and the read: claim it again
            return held.data == mine
        raise RuntimeError(f"job id claim {subject}: no stable answer in {ATTEMPTS} attempts")
