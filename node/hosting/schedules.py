"""Schedules of deployments on JetStream message schedules (nats-server >= 2.14).

Stream STRATEGY_SCHEDULES (`allow_msg_schedules`, file storage; its own stream because the flag
can never be turned off, and a schedule's target must be in the schedule's stream):

* `strategy.schedules.<tenant>.<deployment>`: the one schedule message of a deployment, with
  `Nats-Schedule` (6-field cron, `@every`, `@at`), `Nats-Schedule-Target` =
  `strategy.fires.<tenant>.<deployment>` and `Nats-Schedule-Time-Zone` (IANA). The server keeps
  it (a rollup of its subject) and fires it; after a server outage missed fires collapse into one.
* `strategy.fires.<tenant>.<deployment>`: the fires, each stamped by the server with
  `Nats-Schedule-Next` (the next fire time, shown in the deployment's status).

Every node binds the shared durable pull consumer `strategy-fires`: one node turns each fire
into one trigger per symbol on STRATEGY_TRIGGERS (the same path as a new bar: overlap policy,
idempotent runs), `Nats-Msg-Id` = tenant.deployment.v<version>.<symbol>.fire<fire time ns>, so
a fire handled twice is one run. A fire of a paused, stopped or deleted deployment is dropped;
a fire older than the deployment's `catchup_s` when it is taken is skipped and recorded.
"""

from __future__ import annotations

import logging
import time
from datetime import timezone
from typing import Any

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from contracts import ErrorCode, ExecutionError
from contracts.hosting import Deployment, DeploymentStatus, RunRecord

from .. import sizing
from . import naming, sessions, streams, triggers

log = logging.getLogger("node.hosting.schedules")

STREAM = "STRATEGY_SCHEDULES"
CONSUMER = "strategy-fires"
SCHEDULES = "strategy.schedules"
FIRES = "strategy.fires"
FIRES_MAX_AGE_S = 86_400.0
NEXT = "Nats-Schedule-Next"


def schedule_subject(tenant: str, deployment: str) -> str:
    return f"{SCHEDULES}.{tenant}.{deployment}"


def fires_subject(tenant: str, deployment: str) -> str:
    return f"{FIRES}.{tenant}.{deployment}"


def stream_config(settings: Any) -> StreamConfig:
    return StreamConfig(name=STREAM, subjects=[f"{SCHEDULES}.>", f"{FIRES}.>"], retention=RetentionPolicy.LIMITS,
                        storage=StorageType.FILE, num_replicas=settings.jobs_replicas, allow_msg_schedules=True,
                        description="deployment schedules (message schedules) and their fires")


def consumer_config(settings: Any) -> ConsumerConfig:
    return ConsumerConfig(
        name=CONSUMER, durable_name=CONSUMER, description="Turns each schedule fire into triggers (shared)",
        deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.jobs_ack_wait_seconds, max_deliver=-1,
        filter_subject=f"{FIRES}.>", max_ack_pending=10_000,
    )


def fire_id(tenant: str, dep: Deployment, symbol: str, fire_ns: int) -> str:
    return f"{tenant}.{dep.id}.v{dep.version}.{symbol}.fire{fire_ns}"


async def publish(js: Any, tenant: str, dep: Deployment) -> None:
    """Set (or replace) the deployment's schedule; a form the server refuses is INVALID_REQUEST."""
    headers = {"Nats-Schedule": dep.schedule, "Nats-Schedule-Target": fires_subject(tenant, dep.id)}
    if dep.tz:
        headers["Nats-Schedule-Time-Zone"] = dep.tz
    try:
        await js.publish(schedule_subject(tenant, dep.id), b"", headers=headers)
    except nats.js.errors.APIError as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.schedule` {dep.schedule!r} (tz {dep.tz or 'UTC'}) was refused "
                             f"by the NATS server: {exc.description or exc}") from None


async def remove(js: Any, tenant: str, deployment: str) -> None:
    for subject in (schedule_subject(tenant, deployment), fires_subject(tenant, deployment)):
        await js.purge_stream(STREAM, subject=subject)


class Fires:
    """Each fire -> triggers (or a skipped record when older than the catch-up window)."""

    def __init__(self, hosting: Any) -> None:
        self.h = hosting
        self.fired = 0
        self.late = 0
        self.closed = 0  # fires dropped outside the deployment's trading session
        self.loop = triggers.PullLoop(hosting, STREAM, CONSUMER, self._batch, lambda: triggers.MAX_BATCH)

    async def _batch(self, msgs: list[Any]) -> None:
        for msg in msgs:
            try:
                await self._one(msg)
            except Exception as exc:  # noqa: BLE001 - left for another try
                log.warning("fire on %s not handled: %s", msg.subject, exc)
                try:
                    await msg.nak(delay=0.5)
                except Exception:  # noqa: BLE001
                    pass

    async def _one(self, msg: Any) -> None:
        parts = msg.subject.split(".")
        if len(parts) != 4:
            await msg.ack()
            return
        tenant, dep_id = parts[2], parts[3]
        fired_at = msg.metadata.timestamp.replace(tzinfo=msg.metadata.timestamp.tzinfo or timezone.utc)
        fire_ns = int(fired_at.timestamp() * 1e9)
        dep, _ = await self.h.deployments.read(tenant, dep_id)
        if dep is None or not dep.schedule:
            await msg.ack()
            return
        fire_iso = naming.iso_of(fired_at)
        next_fire = (msg.headers or {}).get(NEXT)

        def mark(status: DeploymentStatus) -> DeploymentStatus:
            status.last_fire, status.next_fire = fire_iso, next_fire
            return status

        await self.h.deployments.set_status(tenant, dep_id, mark)
        if dep.desired != "running":  # paused or stopped: the fire is dropped, silently
            await msg.ack()
            return
        if dep.session and not sessions.is_open(dep.session, fired_at):  # closed, weekend or holiday
            self.closed += 1
            await msg.ack()
            return
        age = time.time() - fired_at.timestamp()
        if age > dep.catchup_s:
            self.late += 1
            for symbol in dep.symbols:
                record = RunRecord(run_id=fire_id(tenant, dep, symbol, fire_ns), deployment=dep.id,
                                   version=dep.version, symbol=symbol, bar_time="", status="skipped",
                                   started_at=naming.now_iso(), node_id=self.h.settings.node_id,
                                   note=f"the fire at {fire_iso} was {age:.1f}s old when taken, beyond the "
                                        f"catch-up window of {dep.catchup_s}s")
                if await self.h.runner._store_record(tenant, record):
                    await self.h.runner._status(tenant, dep, record)
            await msg.ack()
            return
        pubs = []
        for symbol in dep.symbols:
            try:
                bar_ns = await self.h.newest_bar(symbol, dep.timeframe)
            except ExecutionError as exc:  # no bars stored yet: recorded as an error run
                record = RunRecord(run_id=fire_id(tenant, dep, symbol, fire_ns), deployment=dep.id,
                                   version=dep.version, symbol=symbol, bar_time="", status="error",
                                   started_at=naming.now_iso(), node_id=self.h.settings.node_id,
                                   error=exc.info())
                if await self.h.runner._store_record(tenant, record):
                    await self.h.runner._status(tenant, dep, record)
                continue
            subject, body, headers = triggers.trigger_message(
                tenant, dep, symbol, bar_ns, schedule_id=fire_id(tenant, dep, symbol, fire_ns))
            sizing.check(self.h.nc, body, headers, "a trigger")
            pubs.append(self.h.js.publish(subject, body, headers=headers))
        for pub in pubs:
            await pub
        self.fired += 1
        await msg.ack()


async def ensure(js: Any, settings: Any) -> None:
    await streams.ensure_stream(js, stream_config(settings))
    await streams.ensure_consumer(js, STREAM, consumer_config(settings))
