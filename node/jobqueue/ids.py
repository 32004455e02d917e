"""A durable job's id: `Strategy-Job-Id`, else `Nats-Msg-Id`, else `seq-<stream sequence>`.

Job ids are the clients' own, and every tenant's jobs share the stream STRATEGY_JOBS. JetStream
drops a repeated `Nats-Msg-Id` stream-wide, whoever sent it: with a long duplicate window a
tenant that knew (or simply reused) another tenant's id could make that tenant's submit a
silent no-op. So the stream keeps only the server's smallest window (STREAM_DUPLICATE_WINDOW_S),
and a job id is de-duplicated per tenant by the nodes instead (node/jobqueue/claims.py), for
JOBS_DUPLICATE_WINDOW_SECONDS. `Strategy-Job-Id` is the header to name a job by (the same
header a job's push reply and stored result carry): the stream never reads it, so no other
tenant's submit can shadow it even for those 100 ms. `Nats-Msg-Id` still names a job (and
still lets the stream drop a retry within 100 ms); when both are sent they must agree.
"""

from __future__ import annotations

import re
from typing import Mapping

MSG_ID = "Nats-Msg-Id"
JOB_ID = "Strategy-Job-Id"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
STREAM_DUPLICATE_WINDOW_S = 0.1  # the smallest window nats-server accepts ("needs to be >= 100ms")


class ConflictingIds(ValueError):
    """`Strategy-Job-Id` and `Nats-Msg-Id` name different jobs."""


def valid_job_id(job_id: str | None) -> bool:
    return bool(job_id) and JOB_ID_RE.match(job_id) is not None


def job_id_of(headers: Mapping[str, str], seq: int) -> str:
    """The job's id from its headers (see the module's text); ConflictingIds when the two
    headers disagree. The id is not checked here: `valid_job_id`."""
    named, msg_id = headers.get(JOB_ID), headers.get(MSG_ID)
    if named and msg_id and named != msg_id:
        raise ConflictingIds(f"{JOB_ID} {named[:128]!r} and {MSG_ID} {msg_id[:128]!r} name different jobs: "
                             f"send one of them, or the same id in both")
    return named or msg_id or f"seq-{seq}"
