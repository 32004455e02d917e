"""One run of a deployment for one trigger, and its run record.

`Runner.handle(msg)` takes a trigger from STRATEGY_TRIGGERS and ends it exactly one way:

* already recorded (a redelivery of a run that completed): ack, nothing runs again;
* the deployment is gone, not running (paused/stopped; a manual run-now is still served while
  paused), or moved to another version: ack and drop (pausing stops the next bar's runs even
  when their triggers were already queued);
* the overlap policy says no (`skip`, or `queue_one` with one already waiting): a `skipped`
  record; `queue_one` holds one trigger back (nak with a short delay) until the lock is free;
* otherwise: the lookback window up to the bar, the version's source (compiled through the
  node's compile cache), the deployment's parameters, limits and `state`, one fresh sandbox
  child as for `execute`; the newest bar's signal (BUY/SELL) goes to
  `signals.<tenant>.<deployment>.<symbol>` with `Nats-Msg-Id` = trigger id (stored once however
  often the trigger is delivered), then the state, logs, run record and status; then the ack.
  A node-side failure (INTERNAL, OVERLOADED) naks the trigger for another try.

Run records live in KV DEPLOYMENT_RUNS under `<tenant>.<deployment>.<run token>` (created once)
with the bucket's max_age as retention.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import nats.js.errors
import numpy as np

from contracts import ErrorCode, ErrorInfo, ExecutionError, subjects
from contracts.bars import ns_to_isos
from contracts.hosting import Deployment, DeploymentStatus, RunLogs, RunRecord, Trigger
from sandbox.protocol import Job, OutputLimits

from .. import sizing
from ..failures import Overloaded, error_of
from ..jobs import run_limits
from . import logs as run_logs
from . import naming, streams
from .redact import Redactor

log = logging.getLogger("node.hosting.runs")

_json = msgspec.json.Encoder()
_record = msgspec.json.Decoder(RunRecord)
_trigger = msgspec.msgpack.Decoder(Trigger)
RETRYABLE = frozenset({ErrorCode.INTERNAL, ErrorCode.OVERLOADED})
QUEUE_WAIT_S = 0.05
RUN_ID = "Strategy-Run-Id"


def bar_iso(bar_ns: int) -> str:
    return ns_to_isos(np.array([bar_ns], dtype=np.int64))[0]


class Runner:
    def __init__(self, hosting: Any) -> None:
        self.h = hosting  # node/hosting/service.py: connection, stores, pool, settings
        self.ran = 0
        self.skipped = 0
        self.duplicates = 0
        self.dropped = 0

    # -- records ---------------------------------------------------------------------------
    async def record(self, tenant: str, deployment: str, run_id: str) -> RunRecord | None:
        try:
            entry = await self.h.runs_kv.get(naming.run_key(tenant, deployment, naming.run_token(run_id)))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _record.decode(entry.value) if entry.value else None

    async def records(self, tenant: str, deployment: str, limit: int) -> list[RunRecord]:
        keys = await streams.keys(self.h.runs_kv, f"{tenant}.{deployment}.>")
        out = []
        for key in keys:
            try:
                entry = await self.h.runs_kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                continue
            if entry.value:
                out.append(_record.decode(entry.value))
        out.sort(key=lambda r: (r.bar_time, r.started_at))
        return out[-limit:]

    async def _store_record(self, tenant: str, record: RunRecord) -> bool:
        """Create the record; False when one exists already (another delivery finished first)."""
        body = _json.encode(record)
        if len(body) > sizing.body_limit(self.h.nc):  # KV puts carry headers: keep their room
            record.signal, record.note = None, None
            record.error = ErrorInfo(code=ErrorCode.OUTPUT_LIMIT, message="the run record was too large")
            body = _json.encode(record)
        try:
            await self.h.runs_kv.create(naming.run_key(tenant, record.deployment, naming.run_token(record.run_id)), body)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    # -- overlap ---------------------------------------------------------------------------
    async def _lock(self, key: str, run_id: str) -> bool:
        try:
            await self.h.locks_kv.create(key, run_id.encode())
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            try:
                entry = await self.h.locks_kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return await self._lock(key, run_id)
            return entry.value == run_id.encode()  # our own earlier delivery (its node died)

    async def _unlock(self, key: str, run_id: str) -> None:
        try:
            entry = await self.h.locks_kv.get(key)
            if entry.value == run_id.encode():
                await self.h.locks_kv.delete(key, last=entry.revision)
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyWrongLastSequenceError):
            pass

    @staticmethod
    def lock_key(tenant: str, deployment: str, symbol: str) -> str:
        """Overlap is per symbol: a deployment's runs for one symbol never overlap (skip/queue_one)."""
        return f"{naming.deployment_key(tenant, deployment)}.{symbol}"

    async def _overlap(self, dep: Deployment, tenant: str, symbol: str, run_id: str) -> str:
        """'run', 'skip' or 'wait' for this trigger under the deployment's overlap policy."""
        if dep.overlap == "allow":
            return "run"
        key = self.lock_key(tenant, dep.id, symbol)
        if await self._lock(key, run_id):
            if dep.overlap == "queue_one":
                await self._unlock(f"{key}.queued", run_id)
            return "run"
        if dep.overlap == "queue_one" and await self._lock(f"{key}.queued", run_id):
            return "wait"
        return "skip"

    async def _wait_turn(self, dep: Deployment, tenant: str, symbol: str, run_id: str) -> str:
        """queue_one: the one waiting trigger polls the lock until the running one releases it
        (the trigger's heartbeat keeps it from redelivery; a redelivery after this node died
        finds the queued mark its own and waits again). The lock's TTL bounds the wait."""
        key = self.lock_key(tenant, dep.id, symbol)
        deadline = time.monotonic() + streams.lock_ttl(self.h.settings) + 1.0
        pause = 0.005
        while time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, QUEUE_WAIT_S)
            if await self._lock(key, run_id):
                await self._unlock(f"{key}.queued", run_id)
                return "run"
        return "skip"

    # -- one trigger -----------------------------------------------------------------------
    async def handle(self, msg: Any) -> None:
        headers = dict(msg.headers or {})
        run_id = headers.get("Nats-Msg-Id") or f"seq-{msg.metadata.sequence.stream}"
        try:
            trig = _trigger.decode(msg.data)
        except msgspec.DecodeError:
            log.warning("dropped an unreadable trigger on %s", msg.subject)
            await msg.ack()
            return
        # The tenant is the subject's token (nodes alone publish triggers; deploy/nats keeps tenants out).
        tenant = msg.subject.split(".")[2] if msg.subject.count(".") >= 3 else trig.tenant
        if tenant != trig.tenant:
            await msg.ack()
            return
        recorded, (dep, _) = await asyncio.gather(self.record(tenant, trig.deployment, run_id),
                                                  self.h.deployments.read(tenant, trig.deployment))
        if recorded is not None:
            self.duplicates += 1
            await msg.ack()
            return
        if dep is None or dep.version != trig.version or trig.symbol not in dep.symbols or (
                dep.desired != "running" and not (trig.manual and dep.desired == "paused")):
            self.dropped += 1
            await msg.ack()
            return
        decision = await self._overlap(dep, tenant, trig.symbol, run_id)
        if decision == "wait":
            decision = await self._wait_turn(dep, tenant, trig.symbol, run_id)
        started = naming.now_iso()
        if decision == "skip":
            record = RunRecord(run_id=run_id, deployment=dep.id, version=dep.version, symbol=trig.symbol,
                               bar_time=bar_iso(trig.bar_ns), status="skipped", started_at=started,
                               node_id=self.h.settings.node_id, manual=trig.manual,
                               note="the previous run of this deployment on this symbol was still going (overlap: "
                                    f"{dep.overlap})")
            if await self._store_record(tenant, record):
                self.skipped += 1
                await self._status(tenant, dep, record)
            await msg.ack()
            return
        try:
            retry = await self._run(msg, tenant, dep, trig, run_id, started)
        finally:
            if dep.overlap != "allow":
                await self._unlock(self.lock_key(tenant, dep.id, trig.symbol), run_id)
        if retry:
            await msg.nak(delay=min(1.0, self.h.settings.jobs_ack_wait_seconds / 4))
        else:
            await msg.ack()

    async def _run(self, msg: Any, tenant: str, dep: Deployment, trig: Trigger, run_id: str,
                   started: str) -> bool:
        """Run it and publish everything; True when the node failed and the trigger should retry."""
        t0 = time.perf_counter()
        h = self.h
        stamp = bar_iso(trig.bar_ns)
        state_in: dict[str, Any] = {}
        revision = None
        outcome = None
        redact = Redactor([])
        try:
            timeout_ms, memory_mb = run_limits(dep, h.settings)
            version, bars, (state_in, revision), secret_values = await asyncio.gather(
                h.registry.version(tenant, dep.strategy, dep.version),
                h.windows.window(trig.symbol, trig.timeframe, trig.bar_ns, dep.lookback),
                h.states.read(tenant, dep.id, trig.symbol, run_id),
                self._secrets(tenant, dep))
            redact = Redactor(list(secret_values.values()))
            compiled, _hit = h.cache.get(version.code)
            job = Job(kind="execute", code=compiled.to_bytes(), bars=bars, symbol=trig.symbol,
                      timeframe=trig.timeframe, parameters=dep.parameters, timeout_ms=timeout_ms,
                      memory_mb=memory_mb, limits=OutputLimits(), state=state_in,
                      env=dict(dep.env), secrets=secret_values)
            if h.endpoints.reference is not None:  # reference data known by the trigger's bar, as for execute
                job = await h.endpoints.reference(compiled, job)
            # warm (opt-in): a worker of this deployment's own (one owner, one version), never shared;
            # a deployment that names secrets never runs warm (refused at create/update; kept here too).
            warm = dep.warm and not dep.secrets
            outcome = await self._sandbox(job, ("hosted", tenant, dep.id, dep.version) if warm else None)
            error = outcome.error
        except Exception as exc:  # noqa: BLE001 - every failure is a record (or a retry)
            error = error_of(exc, "hosted run")
        if redact:  # every secret value out of what leaves the node (node/hosting/redact.py)
            error, outcome = self._redacted(redact, error, outcome)
        if error is not None and error.code in RETRYABLE and msg.metadata.num_delivered < h.settings.jobs_max_deliver:
            return True
        signal = None
        note = None
        if error is None and outcome is not None:
            for s in outcome.signals:
                if s.timestamp == stamp and s.type != "HOLD":
                    signal = s
        # The signal first (the latency that counts); a redelivery after a crash from here on
        # starts from the same state (state.py) and publishes the same id, which SIGNALS drops.
        if signal is not None:
            headers = {"Nats-Msg-Id": run_id, subjects.CONTENT_TYPE: subjects.JSON, RUN_ID: run_id,
                       "Strategy-Deployment": dep.id, "Strategy-Symbol": trig.symbol}
            body = _json.encode(signal)
            sizing.check(h.nc, body, headers, "the signal")
            await h.js.publish(naming.signals_subject(tenant, dep.id, trig.symbol), body, headers=headers)

        async def save_state() -> str | None:
            if error is None and outcome is not None and isinstance(outcome.state, dict) and outcome.state != state_in:
                if not await h.states.write(tenant, dep.id, trig.symbol, run_id, state_in, outcome.state, revision):
                    return "state not saved: a concurrent run (overlap: allow) changed it first"
            return None

        lines = list(outcome.logs) if outcome is not None else []
        note, _ = await asyncio.gather(save_state(), run_logs.publish(
            h.js, h.nc, tenant, RunLogs(run_id=run_id, deployment=dep.id, symbol=trig.symbol, bar_time=stamp,
                                        lines=lines)))
        record = RunRecord(run_id=run_id, deployment=dep.id, version=dep.version, symbol=trig.symbol,
                           bar_time=stamp, status="error" if error else "ok", error=error, signal=signal,
                           started_at=started, duration_ms=round((time.perf_counter() - t0) * 1000.0, 3),
                           node_id=h.settings.node_id, manual=trig.manual, note=note,
                           delivery=msg.metadata.num_delivered)
        if await self._store_record(tenant, record):
            self.ran += 1
            await self._status(tenant, dep, record)
        return False

    async def _secrets(self, tenant: str, dep: Deployment) -> dict[str, str]:
        if not dep.secrets:
            return {}
        if self.h.keyring is None:  # another node with the key may take the retry
            raise ExecutionError(ErrorCode.INTERNAL, "deployment names secrets but this node holds no "
                                 "key-encryption key (SECRETS_KEY_FILE / SECRETS_KEY)")
        return await self.h.secrets.reveal(tenant, list(dep.secrets))

    @staticmethod
    def _redacted(redact: Redactor, error: ErrorInfo | None, outcome: Any) -> tuple[ErrorInfo | None, Any]:
        if error is not None:
            error = msgspec.structs.replace(error, message=redact.text(error.message))
        if outcome is not None:
            outcome = msgspec.structs.replace(
                outcome, logs=redact.lines(list(outcome.logs)),
                signals=[msgspec.convert(redact.value(msgspec.to_builtins(s)), type(s)) for s in outcome.signals],
                state=redact.value(outcome.state), result=None,
                error=error if outcome.error is not None else None)
        return error, outcome

    async def _sandbox(self, job: Job, warm_key: Any = None) -> Any:
        """The sandbox run through the node's Admission, like a request's: it shares the node's
        worker slots (the control-plane reads and writes around it do not hold one)."""
        done: asyncio.Future = asyncio.get_running_loop().create_future()

        async def work() -> None:
            try:
                result = await self.h.pool.run(job, tenant=warm_key)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting run
                if not done.done():
                    done.set_exception(exc)
                return
            if not done.done():
                done.set_result(result)

        if not self.h.admission.submit(work):
            raise Overloaded("this node is at capacity; the trigger is retried")
        return await done

    async def _status(self, tenant: str, dep: Deployment, record: RunRecord) -> None:
        def edit(status: DeploymentStatus) -> DeploymentStatus:
            status.last_run = record
            status.version = dep.version
            if record.status == "skipped":
                status.skipped += 1
                return status
            status.runs += 1
            if status.state == "pending":
                status.state = "running"
            if record.signal is not None:
                status.signals += 1
            if record.error is not None:
                status.errors += 1
                status.last_error, status.last_error_at = record.error, record.started_at
                if status.state == "running":
                    status.state = "error"
            elif status.state == "error":
                status.state = "running"
            return status

        try:
            await self.h.deployments.set_status(tenant, dep.id, edit)
        except ExecutionError as exc:
            log.warning("status of %s not updated: %s", dep.id, exc.message)
