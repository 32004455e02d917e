"""The child's side of the channel: read one Job, run it, write one Outcome, exit."""

from __future__ import annotations

import os

from .lockdown import limit_run
from .protocol import HEADER, MAX_FRAME, Job, frame, job_decoder, job_encoder
from .runtime import run


def _read_exact(fd: int, size: int) -> bytes:
    chunks = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve_one(fd: int, baseline: int, prewarm: Job | None = None) -> None:
    if prewarm is not None:
        run(prewarm)  # our own trusted job: takes the first-run page faults off the request path
    try:
        (size,) = HEADER.unpack(_read_exact(fd, HEADER.size))
    except EOFError:
        return  # the node closed an unused child
    if size > MAX_FRAME:
        return
    job = job_decoder.decode(_read_exact(fd, size))
    limit_run(baseline, job.memory_mb, job.timeout_ms / 1000.0)
    outcome = run(job)
    _write_all(fd, frame(job_encoder.encode(outcome)))
