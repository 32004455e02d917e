"""Durable jobs: the STRATEGY_JOBS work queue, its shared pull consumer, results and dead letters.

Wire protocol (any NATS client can produce jobs; node/jobs_client.py is the Python helper):

* A producer publishes the request body (an ExecuteRequest / BacktestRequest, JSON or msgpack
  per `Content-Type`) to `strategy.jobs.<kind>` (`execute`, `backtest`) with the job id as
  `Strategy-Job-Id` (or `Nats-Msg-Id`: node/jobqueue/ids.py) and, optionally, a reply subject
  in `Strategy-Reply-To` (JetStream does not store a message's reply subject). A tenant's job id
  runs once: before running, a node claims it per tenant for JOBS_DUPLICATE_WINDOW_SECONDS
  (node/jobqueue/claims.py), and another message with the id in that window is acked unrun.
* A tenant in an account of its own publishes the same `strategy.jobs.<kind>` through its import;
  the server stores it as `strategy.jobs.<account>.<kind>` (an export guarded by
  `account_token_position`), and the job runs as that verified tenant (node/identity.py).
* One durable pull consumer `strategy-workers` is shared by every node (explicit ack, ack wait,
  max deliveries with a backoff schedule). A node pulls only as many jobs as it has idle
  workers: jobs share the node's `Admission` with the request path and only fill capacity that
  requests leave free (a request never waits behind a job that was fetched ahead of need).
* The result of a job is stored once in STRATEGY_RESULTS under `strategy.results.<job id>`
  (one message per subject, kept for JOBS_RESULT_TTL_SECONDS), then sent to the reply subject.
  The store is the source of truth: a late or reconnecting caller reads it by job id. A
  tenant's job is stored under `strategy.results.<account>.<job id>` (`stored_key`): job ids
  are the clients' own, and one tenant's id must never find, replace or pre-empt another's
  result. Its import maps the tenant's read of `strategy.results.<job id>` there, and nothing
  else of the stream is exported (no read by sequence).
* Exactly one stored result per job: before running, a node looks the job id up in the store
  (a redelivered job that already completed is acked without running); the result is published
  with `Nats-Expected-Last-Subject-Sequence: 0`, so if two nodes ever both ran a job (a node cut
  off from NATS longer than the ack wait), the server stores only the first and only the node
  whose result was stored replies. A reply is sent at most once; the stored result always.
* A strategy that fails (COMPILE_ERROR, RUNTIME_ERROR, TIMEOUT, ...) is a completed job with an
  error result. Only node-side failures (INTERNAL, OVERLOADED, the node dying) are retried:
  nak with the backoff delay, or, when the node dies, redelivery after the ack wait. Running
  jobs send `in_progress` every third of the ack wait so long jobs are not redelivered.
* A job whose last delivery fails lands on `strategy.dead.<key>` (stream STRATEGY_DEAD) with
  its headers, body and `Strategy-Error`; its stored result is an INTERNAL error naming the
  last error. When the node holding the last delivery dies, the server's MAX_DELIVERIES
  advisory is handled by a surviving node (queue group), which does the same and removes the
  job from the work queue, but only after checking the advisory against the server's state
  (anyone who may publish on the advisory subject could forge one): the consumer delivered that
  sequence and has not had it acked, the count reached the consumer's max_deliver, and no node
  holds a lease on the job (running jobs refresh one in STRATEGY_LEASES every heartbeat).
* Every message published here is sized first (node/sizing.py): a result too large for the
  server's max_payload is stored as OUTPUT_LIMIT, exactly as the request path answers, in one
  run; a dead letter too large keeps its headers and leaves the job's body out.
* No stream here captures `strategy.v1.*`: a stream's PubAck would race the service's reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any, Awaitable, Callable, Mapping

import nats
import nats.errors
import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from contracts import BacktestResult, ErrorCode, ErrorInfo, ExecuteResult, encode
from contracts.codec import content_type
from contracts.health import JobsState
from contracts import subjects
from contracts.subjects import CONTENT_TYPE

from . import sizing
from . import identity
from .admission import Admission
from .config import Settings
from .endpoints import error_headers
from .nats_auth import is_inbox_subject
from .jobqueue import (
    EXPECTED_LAST_SUBJECT_SEQ,
    JOB_ID,
    MSG_ID,
    NO_MESSAGE_FOUND,
    STREAM_DUPLICATE_WINDOW_S,
    WRONG_LAST_SEQUENCE,
    Claims,
    ConflictingIds,
    claims_stream_config,
    job_id_of,
    valid_job_id,
)
from .pull import Puller

log = logging.getLogger("node.durable")

JOBS_STREAM = "STRATEGY_JOBS"
RESULTS_STREAM = "STRATEGY_RESULTS"
DEAD_STREAM = "STRATEGY_DEAD"
CONSUMER = "strategy-workers"
JOBS_PREFIX = subjects.JOBS
RESULTS_PREFIX = subjects.RESULTS
DEAD_PREFIX = subjects.DEAD
MAX_DELIVERIES_ADVISORY = f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{JOBS_STREAM}.{CONSUMER}"
MAX_DELIVERIES_TYPE = "io.nats.jetstream.advisory.v1.max_deliver"
LEASES_STREAM = "STRATEGY_LEASES"
LEASES_PREFIX = "strategy.leases"
DEAD_LETTER_GROUP = "strategy-dead-letter"

REPLY_TO = subjects.JOB_REPLY_HEADER
JOB_KIND = "Strategy-Job-Kind"
RUN_ID = "Strategy-Run-Id"
NODE = "Strategy-Node"
ERROR = "Strategy-Error"
DELIVERIES = "Strategy-Deliveries"
JOB_SUBJECT = "Strategy-Job-Subject"
BODY_DROPPED = "Strategy-Body-Dropped"
LOOKUP_ATTEMPTS = 5  # pre-run result lookup: tries, with a doubling pause from LOOKUP_PAUSE_S
LOOKUP_PAUSE_S = 0.1
TRANSIENT = (asyncio.TimeoutError, nats.errors.ConnectionReconnectingError, nats.errors.NoRespondersError,
             nats.js.errors.NoStreamResponseError, nats.js.errors.ServiceUnavailableError,
             nats.errors.OutboundBufferLimitError)

RETRYABLE = frozenset({ErrorCode.INTERNAL, ErrorCode.OVERLOADED})
RESULT_TYPES: dict[str, type] = {"execute": ExecuteResult, "backtest": BacktestResult}

Handler = Callable[[bytes, str, float], Awaitable[Any]]

FETCH_WAIT_S = 1.0  # longest a pull request lingers; bounds how long stopping waits for it
API_TIMEOUT_S = 2.0
MAX_BATCH = 256


def jobs_subject(kind: str) -> str:
    return f"{JOBS_PREFIX}.{kind}"


def results_subject(key: str) -> str:
    return f"{RESULTS_PREFIX}.{key}"


def dead_subject(key: str) -> str:
    return f"{DEAD_PREFIX}.{key}"


def stored_key(job_subject: str, job_id: str) -> str:
    """Where a job's result (and dead letter) is kept: `<account>.<job id>` for a tenant's job
    (`strategy.jobs.<account>.<kind>`, the token the server wrote), the bare job id for a job
    published inside the node's own account. Job ids are the clients' own (`Strategy-Job-Id`), so
    one tenant's id never finds, replaces or pre-empts another's result; each tenant reads only
    `strategy.results.<its account>.>`, which its import maps from `strategy.results.<job id>`
    (deploy/nats/permissions.conf)."""
    account, _ = identity.job_parts(job_subject)
    return f"{account}.{job_id}" if account else job_id


def result_type(kind: str | None) -> type:
    return RESULT_TYPES.get(kind or "", ExecuteResult)


def _header_text(text: str, limit: int = 500) -> str:
    return " ".join(str(text).split())[:limit]


def stream_configs(settings: Settings) -> list[StreamConfig]:
    """The three streams, as the node declares them (idempotently) at start."""
    replicas = settings.jobs_replicas
    return [
        StreamConfig(
            name=JOBS_STREAM, subjects=[f"{JOBS_PREFIX}.>"], retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE, num_replicas=replicas,
            # the server's smallest window: the stream drops a repeated Nats-Msg-Id whoever sent
            # it, so job ids are de-duplicated per tenant by the nodes (node/jobqueue/claims.py)
            duplicate_window=STREAM_DUPLICATE_WINDOW_S,
            description="Durable strategy jobs; one shared pull consumer (strategy-workers)",
        ),
        StreamConfig(
            name=RESULTS_STREAM, subjects=[f"{RESULTS_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, num_replicas=replicas, max_msgs_per_subject=1,
            max_age=settings.jobs_result_ttl_seconds, allow_direct=True,
            duplicate_window=min(120.0, settings.jobs_result_ttl_seconds),
            description="Durable job results by job id (strategy.results.<job id>)",
        ),
        StreamConfig(
            name=DEAD_STREAM, subjects=[f"{DEAD_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE, num_replicas=replicas,
            max_age=max(7 * 86_400.0, settings.jobs_result_ttl_seconds),
            duplicate_window=120.0,
            description="Jobs that failed on every delivery, with their last error",
        ),
    ]


def lease_ttl(settings: Settings) -> float:
    """How long a running job's lease lasts: two heartbeats' time, less than the ack wait after
    which the server would give the job up (so a genuine MAX_DELIVERIES advisory never finds
    the dead node's last lease, and a running job always has a fresh one)."""
    return max(0.1, settings.jobs_ack_wait_seconds * 2 / 3)


def lease_stream_config(settings: Settings) -> StreamConfig:
    """Leases of running jobs (`strategy.leases.<stream seq>`, one message each, expiring):
    what lets a node tell a genuine MAX_DELIVERIES advisory from one about a job still running."""
    ttl = lease_ttl(settings)
    return StreamConfig(
        name=LEASES_STREAM, subjects=[f"{LEASES_PREFIX}.>"], retention=RetentionPolicy.LIMITS,
        storage=StorageType.MEMORY, num_replicas=settings.jobs_replicas, max_msgs_per_subject=1,
        max_age=ttl, duplicate_window=ttl, allow_direct=True,
        description="Leases of running durable jobs by stream sequence (refreshed while they run)",
    )


def lease_subject(seq: int) -> str:
    return f"{LEASES_PREFIX}.{seq}"


def consumer_config(settings: Settings) -> ConsumerConfig:
    backoff = list(settings.jobs_backoff_seconds) or None
    return ConsumerConfig(
        name=CONSUMER, durable_name=CONSUMER, description="Shared by every strategy node",
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.jobs_ack_wait_seconds, max_deliver=settings.jobs_max_deliver,
        backoff=backoff, filter_subject=f"{JOBS_PREFIX}.>", max_ack_pending=10_000,
    )


_MANAGED_FIELDS = ("subjects", "retention", "num_replicas", "max_msgs_per_subject", "max_age",
                   "duplicate_window", "allow_direct")


def _differs(have: StreamConfig, want: StreamConfig) -> bool:
    for name in _MANAGED_FIELDS:
        a, b = getattr(have, name, None), getattr(want, name, None)
        if b is None:
            continue
        if isinstance(b, float) and isinstance(a, (int, float)):
            if abs(a - b) > 1e-3:
                return True
        elif a != b:
            return True
    return False


def _fitted_dead_letter(nc: Any, data: bytes, dead_headers: dict[str, str],
                        job_headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The dead letter as it can be published: the job's body and headers plus ours may not
    fit max_payload; then the body is left out (its size said in a header), and if that is not
    enough, the job's own headers too (the job id, error and delivery count always stay)."""
    if sizing.fits(nc, data, dead_headers):
        return data, dead_headers
    dead_headers = {**dead_headers, BODY_DROPPED: str(len(data))}
    if sizing.fits(nc, b"", dead_headers):
        return b"", dead_headers
    return b"", {k: v for k, v in dead_headers.items() if k not in job_headers or k == REPLY_TO}


class ResultStore:
    """STRATEGY_RESULTS as a map key → the one stored result message (`stored_key`: the job
    id, under its tenant's account when it has one)."""

    def __init__(self, js: Any, max_payload: Any = sizing.DEFAULT_MAX_PAYLOAD) -> None:
        self.js = js
        self.max_payload = max_payload  # the connection (its INFO's max_payload) or an int

    async def get(self, job_id: str) -> Any | None:
        """The stored result message (RawStreamMsg) or None; errors other than 'absent' raise
        (a missing STRATEGY_RESULTS stream is not an absent result)."""
        try:
            return await self.js.get_last_msg(RESULTS_STREAM, results_subject(job_id))
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code not in (None, NO_MESSAGE_FOUND):
                raise
            return None

    async def lookup(self, job_id: str, attempts: int = LOOKUP_ATTEMPTS, pause: float = LOOKUP_PAUSE_S) -> Any | None:
        """`get`, retried with a doubling pause while JetStream does not answer; the last
        failure raises (the caller must not run a job whose completion it cannot check)."""
        for attempt in range(attempts):
            try:
                return await self.get(job_id)
            except (*TRANSIENT, nats.js.errors.APIError):
                if attempt == attempts - 1:
                    raise
            await asyncio.sleep(pause * 2 ** attempt)
        return None

    async def put(self, job_id: str, payload: bytes, headers: dict[str, str], run_id: str,
                  deadline: float) -> bool:
        """Store the first result of `job_id`; True when it is this run's result that is stored.

        Retries through disconnects until `deadline` (monotonic); the expected-sequence check
        makes a retry after a lost PubAck safe (the stored run id tells whose result it is).
        """
        headers = {**headers, RUN_ID: run_id, EXPECTED_LAST_SUBJECT_SEQ: "0"}
        sizing.check(self.max_payload, payload, headers, "the job's result")  # never a max-payload violation
        delay = 0.1
        while True:
            try:
                await self.js.publish(results_subject(job_id), payload, timeout=API_TIMEOUT_S,
                                      headers=dict(headers))
                return True
            except nats.js.errors.APIError as exc:
                if exc.err_code != WRONG_LAST_SEQUENCE:
                    if time.monotonic() + delay > deadline:
                        raise
                else:
                    stored = await self.get(job_id)
                    return stored is not None and (stored.headers or {}).get(RUN_ID) == run_id
            except (asyncio.TimeoutError, nats.errors.ConnectionReconnectingError,
                    nats.errors.ConnectionClosedError, nats.errors.NoRespondersError,
                    nats.js.errors.NoStreamResponseError, nats.errors.OutboundBufferLimitError):
                if time.monotonic() + delay > deadline:
                    raise
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)


class JobConsumer:
    """One node's share of the `strategy-workers` consumer.

    `handler_for(kind)` returns the coroutine that runs a job body of that kind (the same
    handlers as the request endpoints: `(data, content_type, received) -> result`), or None
    when this node does not support the kind.
    """

    def __init__(self, nc: nats.NATS, settings: Settings, admission: Admission,
                 handler_for: Callable[[str], Handler | None]) -> None:
        self.nc = nc
        self.settings = settings
        self.admission = admission
        self.handler_for = handler_for
        # Who a job runs as (node/identity.py); the node sets one that knows its own account.
        self.verifier = identity.Verifier(trust_body=settings.trust_body_user_id)
        self.js = nc.jetstream(timeout=API_TIMEOUT_S)
        self.results = ResultStore(self.js, nc)
        self.claims = Claims(self.js, API_TIMEOUT_S, nc)
        self.backoff = tuple(settings.jobs_backoff_seconds) or (settings.jobs_ack_wait_seconds,)
        self.heartbeat_s = max(0.05, settings.jobs_ack_wait_seconds / 3)
        self.state = "starting"
        self.last_error: str | None = None
        self.running = 0
        self.completed = 0
        self.retried = 0
        self.dead_lettered = 0
        self.skipped_duplicates = 0
        self._sub: Any = None
        self._advisories: Any = None
        self._leases = False  # STRATEGY_LEASES declared: running jobs hold leases
        self._finished: dict[int, asyncio.Event] = {}  # running job (id of its msg) → its heartbeat stops
        self.ignored_advisories = 0
        self._task: asyncio.Task | None = None
        self._stop = asyncio.Event()
        self._capacity = asyncio.Event()
        self._fetching = False
        self._background: set[asyncio.Task] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Set up streams and consumer in the background (retrying until JetStream answers)."""
        self._task = asyncio.ensure_future(self._run())

    def health(self) -> JobsState:
        return JobsState(
            state=self.state, stream=JOBS_STREAM, consumer=CONSUMER, running=self.running,
            completed=self.completed, retried=self.retried, dead_lettered=self.dead_lettered,
            skipped_duplicates=self.skipped_duplicates, last_error=self.last_error,
        )

    async def stop_fetching(self) -> None:
        """Take no more jobs: let the current pull request end, hand back what it brings."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._capacity.set()
        self.state = "draining"
        task = self._task
        if task is not None and not task.done():
            if not self._fetching:
                task.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(task), FETCH_WAIT_S + API_TIMEOUT_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
            except Exception:  # noqa: BLE001 - the loop logs its own failures
                pass
        await self._return_buffered()

    async def close(self) -> None:
        """After in-flight jobs finished (Admission drained): stop listening."""
        await self.stop_fetching()
        if self._background:  # naks of jobs handed back, dead letters in progress
            _, pending = await asyncio.wait(set(self._background), timeout=API_TIMEOUT_S)
            for task in pending:
                task.cancel()
        # A pull request outlives its cancelled fetch on the server: a job it delivered after the
        # first hand-back would sit unacked for a whole ack wait. Hand those back too.
        await self._return_buffered()
        for sub in (self._sub, self._advisories):
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception:  # noqa: BLE001
                    pass
        self._sub = self._advisories = None
        self.state = "stopped"

    # -- setup -----------------------------------------------------------------------------
    async def _setup(self) -> None:
        jobs, results, dead = stream_configs(self.settings)
        await self._ensure_stream(jobs)
        await self._ensure_stream(results)
        await self._ensure_stream(claims_stream_config(self.settings.jobs_duplicate_window_seconds,
                                                       self.settings.jobs_replicas))
        try:  # jobs run without it; only dead letters need it
            await self._ensure_stream(dead)
        except Exception as exc:  # noqa: BLE001 - e.g. no permission to declare it
            log.warning("dead-letter stream %s unavailable (%s: %s); failed jobs still get an error result",
                        DEAD_STREAM, type(exc).__name__, exc)
        try:  # without it a MAX_DELIVERIES advisory cannot be checked against running jobs
            await self._ensure_stream(lease_stream_config(self.settings))
            self._leases = True
        except Exception as exc:  # noqa: BLE001
            self._leases = False
            log.warning("lease stream %s unavailable (%s: %s); a MAX_DELIVERIES advisory about a job "
                        "still running elsewhere cannot be told from a genuine one",
                        LEASES_STREAM, type(exc).__name__, exc)
        try:
            await self.js.add_consumer(JOBS_STREAM, config=consumer_config(self.settings))
        except nats.js.errors.BadRequestError as exc:
            # e.g. a peer declared it with other settings and the server refuses the change
            log.warning("job consumer %s kept its existing configuration: %s", CONSUMER, exc.description)
            await self.js.consumer_info(JOBS_STREAM, CONSUMER)
        self._sub = await Puller.bind(self.nc, JOBS_STREAM, CONSUMER, grace=API_TIMEOUT_S)
        self._advisories = await self.nc.subscribe(MAX_DELIVERIES_ADVISORY, queue=DEAD_LETTER_GROUP,
                                                   cb=self._on_max_deliveries)

    async def _ensure_stream(self, want: StreamConfig) -> None:
        try:
            info = await self.js.stream_info(want.name)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(want)
                log.info("created stream %s (%s, replicas %s)", want.name, want.subjects, want.num_replicas)
                return
            except nats.js.errors.BadRequestError:
                info = await self.js.stream_info(want.name)  # a peer created it first
        if _differs(info.config, want):
            try:
                await self.js.update_stream(want)
                log.info("updated stream %s to this node's settings", want.name)
            except nats.js.errors.APIError as exc:
                log.warning("stream %s keeps its existing configuration: %s", want.name, exc.description)

    # -- the pull loop ---------------------------------------------------------------------
    def _free(self) -> int:
        budget = self.admission.budget  # the node's byte budget (node/admission.py), shared with requests
        if budget.max_bytes and budget.used and budget.used + sizing.max_payload(self.nc) > budget.max_bytes:
            return 0  # no room for another job payload: jobs wait in the stream, not in this node
        return self.admission.max_workers - self.admission.in_flight

    async def _run(self) -> None:
        retry = 0.5
        while not self._stop.is_set():
            try:
                if self._sub is None:
                    await self._setup()
                    self.state, self.last_error, retry = "consuming", None, 0.5
                    log.info("consuming durable jobs from %s as %s", JOBS_STREAM, CONSUMER)
                free = self._free()
                if free <= 0:
                    self._capacity.clear()
                    try:  # a finished job sets the event; a finished request is seen by polling
                        await asyncio.wait_for(self._capacity.wait(), 0.02)
                    except asyncio.TimeoutError:
                        pass
                    continue
                self._fetching = True
                try:  # read until the server ended the request (node/pull.py), each job dispatched as it comes
                    await self._sub.pull(min(free, MAX_BATCH), FETCH_WAIT_S, self._dispatch)
                except asyncio.TimeoutError:  # the server stayed silent past the request's end
                    continue
                finally:
                    self._fetching = False
                if self.state != "consuming" and self._sub is not None and not self._stop.is_set():
                    self.state = "consuming"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - JetStream down, NATS reconnecting, ...
                if isinstance(exc, nats.js.errors.APIError) and self._sub is not None:
                    # e.g. the consumer or stream was deleted: declare them again on the next round
                    sub, self._sub = self._sub, None
                    await self._safe(sub.unsubscribe())
                    if self._advisories is not None:
                        advisories, self._advisories = self._advisories, None
                        await self._safe(advisories.unsubscribe())
                text = f"{type(exc).__name__}: {exc}"
                if self.state != "unavailable" or text != self.last_error:
                    log.warning("durable jobs unavailable (%s); retrying", text)
                self.last_error = text
                if not self._stop.is_set():
                    self.state = "unavailable"
                try:
                    await asyncio.wait_for(self._stop.wait(), retry)
                except asyncio.TimeoutError:
                    pass
                retry = min(retry * 2, 5.0)

    async def _return_buffered(self) -> None:
        """Nak jobs that arrived after we stopped taking work, so a peer gets them at once: those
        buffered, and those a pull request still open on the server brings until it ends."""
        if self._sub is None:
            return
        naks: list[asyncio.Future] = []
        await self._sub.hand_back(FETCH_WAIT_S + API_TIMEOUT_S,
                                  lambda msg: naks.append(asyncio.ensure_future(self._safe(msg.nak()))))
        if naks:
            await asyncio.wait(naks)

    def _dispatch(self, msg: Any) -> None:
        if self._stop.is_set():
            self._spawn(self._safe(msg.nak()))
            return
        finished = asyncio.Event()
        self._finished[id(msg)] = finished
        heartbeat = asyncio.ensure_future(self._heartbeat(msg, finished))
        self.running += 1

        async def work() -> None:
            try:
                await self._process(msg)
            finally:
                finished.set()
                self._finished.pop(id(msg), None)
                heartbeat.cancel()
                self.running -= 1
                self._capacity.set()

        if not self.admission.submit(work, len(msg.data or b""), force_bytes=True):  # gated in _free
            finished.set()
            self._finished.pop(id(msg), None)
            heartbeat.cancel()
            self.running -= 1
            self._spawn(self._safe(msg.nak()))

    async def _heartbeat(self, msg: Any, finished: asyncio.Event) -> None:
        """in_progress and the job's lease until `finished` (not only until cancelled: a
        cancellation that lands inside a JetStream publish can be swallowed by nats-py, and an
        in_progress sent after the job's nak would hold the job back from redelivery)."""
        seq = msg.metadata.sequence.stream
        await self._safe(self._lease(seq))
        while not finished.is_set():
            try:
                await asyncio.wait_for(finished.wait(), self.heartbeat_s)
                return
            except asyncio.TimeoutError:
                pass
            await self._safe(msg.in_progress())
            await self._safe(self._lease(seq))

    async def _lease(self, seq: int) -> None:
        """Say (for two heartbeats' time) that this node is running the job at `seq`."""
        if self._leases:
            await self.js.publish(lease_subject(seq), b"", timeout=API_TIMEOUT_S,
                                  headers={NODE: self.settings.node_id})

    # -- one job ---------------------------------------------------------------------------
    async def _process(self, msg: Any) -> None:
        try:
            meta = msg.metadata
            headers = dict(msg.headers or {})
            seq, delivered = meta.sequence.stream, meta.num_delivered
            # strategy.jobs.[<account>.]<kind>: the account token is the verified tenant (node/identity.py).
            caller, kind = self.verifier.job(msg.subject)
            ctype = content_type(headers)
            reply_to = headers.get(REPLY_TO)
            try:
                job_id, problem = job_id_of(headers, seq), None
                if not valid_job_id(job_id):
                    problem = f"invalid job id: use 1-128 letters, digits, '-' or '_' ({JOB_ID} or {MSG_ID})"
            except ConflictingIds as exc:
                job_id, problem = f"seq-{seq}", f"invalid job id: {exc}"
            if problem is not None:
                result = result_type(kind)(success=False, node_id=self.settings.node_id, error=ErrorInfo(
                    code=ErrorCode.INVALID_REQUEST, message=problem))
                await self._reply(reply_to, job_id, encode(result, ctype), ctype, result.error, msg.subject)
                self._settling(msg)
                await msg.ack()
                self.completed += 1
                return
            try:
                stored = await self.results.lookup(stored_key(msg.subject, job_id))
            except Exception as exc:  # noqa: BLE001 - the store stayed unreachable through the retries
                # Without the lookup a redelivered job could run twice, and its result could not be
                # stored anyway: hand it back (or dead-letter it on its last delivery), do not run it.
                await self._failed(msg, job_id, kind, ctype, headers, delivered,
                                   f"INTERNAL: result store unreachable ({type(exc).__name__}: {exc})")
                return
            if stored is None:
                try:  # the first message with this id of this tenant in the window runs, no other
                    first = await self.claims.claim(stored_key(msg.subject, job_id), seq)
                except Exception as exc:  # noqa: BLE001 - as for the lookup: hand it back, do not run it
                    await self._failed(msg, job_id, kind, ctype, headers, delivered,
                                       f"INTERNAL: job id claims unreachable ({type(exc).__name__}: {exc})")
                    return
            if stored is not None or not first:
                # completed on an earlier delivery, or a repeated submit of a job id that another
                # message of this tenant holds: never run twice
                self.skipped_duplicates += 1
                self._settling(msg)
                await msg.ack()
                return
            handler = self.handler_for(kind)
            refusal = self.reply_refusal(caller, reply_to)
            if refusal is not None:  # refused, never run: the header is an option it cannot honour
                result = result_type(kind)(success=False, node_id=self.settings.node_id, error=ErrorInfo(
                    code=ErrorCode.INVALID_REQUEST, message=refusal))
                reply_to = None
            elif handler is None:
                result = result_type(kind)(success=False, node_id=self.settings.node_id, error=ErrorInfo(
                    code=ErrorCode.INVALID_REQUEST,
                    message=f"job kind {kind[:64]!r} not supported by this node"))
            else:
                with identity.acting_for(caller):
                    result = await handler(msg.data, ctype, time.monotonic())
            error = getattr(result, "error", None)
            if error is not None and error.code in RETRYABLE:
                await self._failed(msg, job_id, kind, ctype, headers, delivered, f"{error.code}: {error.message}")
                return
            await self._complete(job_id, kind, ctype, reply_to, result, msg.subject)
            self._settling(msg)
            await msg.ack()
            self.completed += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the node's own failure: retry the job elsewhere
            log.warning("durable job on %s failed inside the node: %s", msg.subject, exc, exc_info=True)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._settling(msg)
            await self._safe(msg.nak(delay=self._delay(getattr(msg.metadata, "num_delivered", 1))))
            self.retried += 1

    def reply_refusal(self, caller: identity.Caller, reply_to: str | None) -> str | None:
        """Why the node cannot send this job's result to its `Strategy-Reply-To`, or None.

        Only to an inbox (never where a client points the node: node/nats_auth.py), and a
        tenant's job only below its own account's inbox prefixes (JOB_REPLY_PREFIXES): every
        client's inbox prefix is delivered into that client's account by the server, so a job
        naming another tenant's prefix would make the node publish its output into that tenant.
        """
        if not reply_to:
            return None
        shown = _header_text(reply_to, 80)
        if not is_inbox_subject(reply_to):
            return (f"{REPLY_TO} {shown!r} is not an inbox subject: the node replies only to inboxes "
                    "(_INBOX... or your client's inbox prefix); the result is stored under the job id")
        if caller.verified:
            prefixes = self.settings.job_reply_prefixes.get(caller.account or "", ())
            if reply_to.split(".", 1)[0] not in prefixes:
                allowed = " or ".join(f"{p}.>" for p in prefixes) or "none: no push replies are configured for it"
                return (f"{REPLY_TO} {shown!r} is not an inbox of account {caller.account}: "
                        f"its jobs may reply below {allowed}; the result is stored under the job id")
        return None

    def _settling(self, msg: Any) -> None:
        """The job is about to be acked or naked: its heartbeat sends no in_progress after that
        (an in_progress behind a nak would hold the job back from redelivery for an ack wait)."""
        finished = self._finished.get(id(msg))
        if finished is not None:
            finished.set()

    def _delay(self, delivered: int) -> float:
        return self.backoff[min(max(delivered, 1), len(self.backoff)) - 1]

    async def _failed(self, msg: Any, job_id: str, kind: str, ctype: str, headers: Mapping[str, str],
                      delivered: int, error_text: str) -> None:
        self.last_error = error_text
        if delivered < self.settings.jobs_max_deliver:
            self.retried += 1
            self._settling(msg)
            await msg.nak(delay=self._delay(delivered))
            return
        await self._dead_letter(msg.data, headers, job_id, kind, ctype, delivered, error_text, msg.subject)
        self._settling(msg)
        await msg.ack()

    async def _complete(self, job_id: str, kind: str, ctype: str, reply_to: str | None, result: Any,
                        subject: str) -> None:
        """Store the job's result (first one wins), then reply if it was ours.

        A result too large for the server becomes OUTPUT_LIMIT by the same rule as a request's
        reply (node/sizing.py): stored as the job's result, never retried.
        """
        result, payload = sizing.fit_reply(result, ctype, self.nc)
        run_id = uuid.uuid4().hex
        headers = {CONTENT_TYPE: ctype, JOB_ID: job_id, JOB_KIND: kind[:64], NODE: self.settings.node_id}
        deadline = time.monotonic() + max(10.0, self.settings.jobs_ack_wait_seconds)
        ours = await self.results.put(stored_key(subject, job_id), payload, headers, run_id, deadline)
        if ours:
            await self._reply(reply_to, job_id, payload, ctype, getattr(result, "error", None), subject)

    async def _reply(self, reply_to: str | None, job_id: str, payload: bytes, ctype: str,
                     error: ErrorInfo | None, subject: str) -> None:
        if not reply_to:
            return
        refusal = self.reply_refusal(self.verifier.job(subject)[0], reply_to)
        if refusal is not None:  # checked before the run too; a dead letter's final result comes here
            log.warning("job %s: no reply: %s", job_id, refusal)
            return
        headers = {**error_headers(error, ctype), JOB_ID: job_id}
        try:
            sizing.check(self.nc, payload, headers, "the job's reply")
        except sizing.TooLarge as exc:  # the stored result stays the source of truth
            log.error("job %s: reply not sent: %s", job_id, exc)
            return
        await self._safe(self.nc.publish(reply_to, payload, headers=headers))

    async def _dead_letter(self, data: bytes, headers: Mapping[str, str], job_id: str, kind: str,
                           ctype: str, delivered: int, error_text: str, subject: str) -> None:
        dead_headers = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
        dead_headers.update({
            JOB_ID: job_id, JOB_KIND: kind[:64], JOB_SUBJECT: subject[:200], ERROR: _header_text(error_text),
            DELIVERIES: str(delivered), NODE: self.settings.node_id, MSG_ID: f"dead-{stored_key(subject, job_id)}",
        })
        data, dead_headers = _fitted_dead_letter(self.nc, data or b"", dead_headers, headers)
        try:
            await self.js.publish(dead_subject(stored_key(subject, job_id)), data, timeout=API_TIMEOUT_S,
                                  headers=dead_headers)
        except Exception as exc:  # noqa: BLE001 - the final error result below still ends the job
            log.error("job %s: could not publish its dead letter (%s: %s)", job_id, type(exc).__name__, exc)
        final = result_type(kind)(success=False, node_id=self.settings.node_id, error=ErrorInfo(
            code=ErrorCode.INTERNAL,
            message=f"the job failed on all {delivered} deliveries; last error: {_header_text(error_text, 300)}"))
        await self._complete(job_id, kind, ctype, headers.get(REPLY_TO), final, subject)
        self.dead_lettered += 1
        log.warning("job %s dead-lettered after %d deliveries: %s", job_id, delivered, error_text)

    async def _on_max_deliveries(self, advisory: Any) -> None:
        """The last delivery of a job was never acked (its node died): dead-letter it here."""
        self._spawn(self._handle_advisory(advisory.data))

    async def _verified(self, event: Any) -> tuple[int, int] | None:
        """(stream seq, deliveries) when the advisory agrees with the server's own state, else
        None. Anyone allowed to publish on the advisory subject could send one, so nothing in
        it is taken on trust: it must name this stream and consumer, the consumer must have
        delivered that sequence and not had it acked, its count must have reached the
        consumer's max_deliver, and no node may hold a lease on the job (one that is running
        refreshes its lease every heartbeat)."""
        if not isinstance(event, dict) or event.get("type") != MAX_DELIVERIES_TYPE:
            return None
        if event.get("stream") != JOBS_STREAM or event.get("consumer") != CONSUMER:
            return None
        seq, deliveries = event.get("stream_seq"), event.get("deliveries")
        if not isinstance(seq, int) or not isinstance(deliveries, int) or seq <= 0:
            return None
        info = await self.js.consumer_info(JOBS_STREAM, CONSUMER)
        if deliveries < (info.config.max_deliver or 0) or info.config.max_deliver in (None, -1):
            return None
        if not (info.ack_floor.stream_seq < seq <= info.delivered.stream_seq):
            return None  # never delivered yet, or already acked
        if not self._leases:  # no lease stream (e.g. no permission): the checks above only
            return seq, deliveries
        try:
            await self.js.get_last_msg(LEASES_STREAM, lease_subject(seq))
            return None  # a node is running it right now
        except nats.js.errors.NotFoundError as exc:
            if exc.err_code not in (None, NO_MESSAGE_FOUND):
                raise
        return seq, deliveries

    async def _handle_advisory(self, data: bytes) -> None:
        seq = 0
        try:
            try:
                verified = await self._verified(json.loads(data))
            except (ValueError, TypeError):
                verified = None
            if verified is None:
                self.ignored_advisories += 1
                log.warning("ignored a MAX_DELIVERIES advisory that the consumer's state does not confirm: %s",
                            _header_text(data.decode(errors="replace"), 300))
                return
            seq, deliveries = verified
            try:
                raw = await self.js.get_msg(JOBS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                return  # acked meanwhile, or another node handled the advisory
            headers = dict(raw.headers or {})
            try:
                job_id = job_id_of(headers, seq)
            except ConflictingIds:
                job_id = ""  # answered INVALID_REQUEST on its first delivery: no result to leave
            _account, kind = identity.job_parts(raw.subject or "")
            if valid_job_id(job_id) and await self.results.get(stored_key(raw.subject or "", job_id)) is None:
                await self._dead_letter(
                    raw.data or b"", headers, job_id, kind, content_type(headers), deliveries,
                    f"no node finished the job in {deliveries} deliveries (each ended without an ack: "
                    "the node running it stopped or crashed)",
                    raw.subject or "")
            try:
                await self.js.delete_msg(JOBS_STREAM, seq)
            except nats.js.errors.NotFoundError:
                pass
        except Exception as exc:  # noqa: BLE001
            log.warning("could not dead-letter job at %s seq %d: %s", JOBS_STREAM, seq, exc)

    # -- helpers ---------------------------------------------------------------------------
    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _safe(coro: Awaitable[Any]) -> None:
        try:
            await coro
        except Exception:  # noqa: BLE001 - an ack/heartbeat lost with the connection: redelivery covers it
            log.debug("ack/heartbeat/reply not sent", exc_info=True)
