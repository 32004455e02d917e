"""The child's side of the channel: read a Job, run it, write its Outcome; exit unless told to keep going."""

from __future__ import annotations

import errno
import os
import resource
import select

import numpy as np

from contracts import ErrorCode, ErrorInfo

from . import hygiene, shm
from .lockdown import limit_run
from .protocol import HEADER, MAX_FRAME, Job, Outcome, Scrubbed, frame, job_decoder, job_encoder
from .runtime import run
from .stdlib import safe_random


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


def _read_job(fd: int) -> Job | None:
    # the header's first bytes may carry the memfd of the job's bars (sandbox/shm.py)
    head, fds, truncated = shm.recv_with_fds(fd, HEADER.size)
    try:
        if not head:
            raise EOFError
        (size,) = HEADER.unpack(head + _read_exact(fd, HEADER.size - len(head)))
    except EOFError:
        for extra in fds:
            os.close(extra)
        return None  # the node closed the channel: an unused child, or a retired warm worker
    if size > MAX_FRAME or truncated:
        for extra in fds:
            os.close(extra)
        return None
    return shm.receive(job_decoder.decode(_read_exact(fd, size)), fds)


def _unmapped(exc: BaseException) -> Outcome:
    """The job's shared bars could not be mapped: out of memory, or not what the job said."""
    if isinstance(exc, MemoryError) or getattr(exc, "errno", None) == errno.ENOMEM:
        return Outcome(success=False, error=ErrorInfo(
            code=ErrorCode.MEMORY_LIMIT, message="the bars do not fit in the strategy's memory limit"))
    return Outcome(success=False, error=ErrorInfo(
        code=ErrorCode.INTERNAL, message=f"the bars could not be handed to the sandbox ({exc})"))


def _reseed() -> None:
    """numpy's global generator would otherwise be the zygote's, drawn identically by every child."""
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    safe_random.reseed()  # the `random` module strategies import (sandbox.stdlib)


def _cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1000.0


def job_waiting(fd: int) -> bool:
    """Has the node already sent this child its job (it was taken the moment it was ready)?"""
    return bool(select.select([fd], [], [], 0)[0])


def serve(fd: int, baseline: int, prewarm: Job | None = None) -> None:
    if prewarm is not None and not job_waiting(fd):
        # Our own trusted job: takes the first-run page faults off the request path while the
        # child waits. A child whose job is already waiting (the pool is short of children: every
        # one is taken as soon as it is ready) skips it: the run would take those faults anyway,
        # and the prewarm's own work would only be more CPU on a saturated node (issue 18).
        run(prewarm)
    captured = False
    scrubbed = False  # the last run's scrub reseeded the generators: the next run needs no reseed
    while True:
        try:
            job = _read_job(fd)
        except (shm.SharedBarsError, OSError, MemoryError) as exc:
            _write_all(fd, frame(job_encoder.encode(_unmapped(exc))))
            return
        if job is None:
            return
        if not captured and (job.keep or job.points):
            # What every later run of this process (a warm worker's, a sweep point's) starts
            # from: taken before any untrusted code ran here. A one-shot run does not need it.
            hygiene.capture()
            captured = True
        limit_run(baseline, job.memory_mb, job.timeout_ms / 1000.0)
        if not scrubbed:
            _reseed()
        outcome = run(job)
        if not job.keep:
            _write_all(fd, frame(job_encoder.encode(outcome)))
            return
        # A warm worker: the outcome goes out first, so the reply is not held up by the scrub.
        # The scrub runs before this process reads another job, still under this run's deadline
        # (the node waits for its report that long, then kills the worker): whatever the run
        # left behind is finalized and reset now, not during the next run (sandbox.hygiene). The
        # node gives the worker another run only after a report that says it is clean.
        outcome.cpu_ms = _cpu_ms()
        _write_all(fd, frame(job_encoder.encode(outcome)))
        clean = hygiene.scrub()
        scrubbed = True
        _write_all(fd, frame(job_encoder.encode(Scrubbed(clean=clean, cpu_ms=_cpu_ms(),
                                                         failure=hygiene.last_failure))))
