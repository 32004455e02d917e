"""Schedules of deployments on JetStream message schedules (nats-server >= 2.14).

Stream STRATEGY_SCHEDULES (`allow_msg_schedules`, file storage; its own stream because the flag
can never be turned off, and a schedule's target must be in the schedule's stream):

* `strategy.schedules.<tenant>.<deployment>`: the one schedule message of a deployment, with
  `Nats-Schedule` (6-field cron, `@every`, `@at`), `Nats-Schedule-Target` =
  `strategy.fires.<tenant>.<deployment>` and `Nats-Schedule-Time-Zone` (IANA). The server keeps
  it (a rollup of its subject) and fires it; after a server outage missed fires collapse into one.
* `strategy.fires.<tenant>.<deployment>`: the fires, each stamped by the server with
  `Nats-Schedule-Next` (its own next fire; "purge" after a one-off `@at`).

Offsets from a session's open or close ("open+5m", "close-10m" with `session`) are one-off `@at`
schedules: the node publishes the next such instant from the exchange's calendar at create and
update, and after each fire the node taking it publishes the following one before it acks the
fire (the same instant however often the fire is delivered: a rollup of the same subject). Every
node also reconciles at start: a scheduled deployment without its schedule message (a node that
died between storing the deployment and publishing it) gets it. Nothing is held in a node.

A deployment's status carries the next fire that will run (node/hosting/firetimes.py: after the
window and the session), recomputed at create, update, resume and after each fire.

Every node binds the shared durable pull consumer `strategy-fires`: one node turns each fire
into one trigger per symbol on STRATEGY_TRIGGERS (the same path as a new bar: overlap policy,
idempotent runs), `Nats-Msg-Id` = tenant.deployment.v<version>.<symbol>.fire<fire time ns>, so
a fire handled twice is one run. A fire of a paused, stopped or deleted deployment is dropped;
a fire older than the deployment's `catchup_s` when it is taken is skipped and recorded; a fire
outside the deployment's per-day `window` or its exchange's session is skipped and counted in
its status (`fires_outside`, `fire_note`: one run record per such fire would flood the records
of an `@every 1s` outside market hours).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from contracts import ErrorCode, ExecutionError
from contracts import schedule as forms
from contracts.hosting import Deployment, DeploymentStatus, RunRecord

from .. import sizing
from . import firetimes, naming, streams, triggers

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


def server_form(dep: Deployment, now: datetime | None = None) -> tuple[str, str | None]:
    """(Nats-Schedule, Nats-Schedule-Time-Zone) of a deployment's schedule: an offset becomes the
    `@at` of its next instant; the zone goes only with a cron (the server refuses it otherwise;
    an `@every`'s zone is its window's)."""
    kind = forms.kind(dep.schedule)
    if kind == "offset":
        after = now or datetime.now(timezone.utc)
        at = firetimes.next_fire(dep, after)
        if at is None:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"invalid request: `$.schedule` {dep.schedule!r}: the {dep.session} calendar has no "
                                 "session ahead (its data ends about a year from now)")
        return "@at " + at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), None
    return dep.schedule, (dep.tz if kind == "cron" else None)


async def publish(js: Any, tenant: str, dep: Deployment, now: datetime | None = None) -> None:
    """Set (or replace) the deployment's schedule; a form the server refuses is INVALID_REQUEST."""
    form, tz = server_form(dep, now)
    headers = {"Nats-Schedule": form, "Nats-Schedule-Target": fires_subject(tenant, dep.id)}
    if tz:
        headers["Nats-Schedule-Time-Zone"] = tz
    try:
        await js.publish(schedule_subject(tenant, dep.id), b"", headers=headers)
    except nats.js.errors.APIError as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.schedule` {dep.schedule!r} (tz {dep.tz or 'UTC'}) was refused "
                             f"by the NATS server: {exc.description or exc}") from None


async def published(js: Any, tenant: str, deployment: str) -> str | None:
    """The deployment's schedule as the server holds it (Nats-Schedule), None without one."""
    try:
        msg = await js.get_last_msg(STREAM, schedule_subject(tenant, deployment))
    except nats.js.errors.NotFoundError:
        return None
    return (msg.headers or {}).get("Nats-Schedule")


async def reconcile(hosting: Any) -> int:
    """Publish the schedule of every scheduled deployment that has none on the server; returns
    how many. Run by each node at start (publishing is idempotent: a rollup)."""
    fixed = 0
    for key in await streams.keys(hosting.deployments.kv, ">"):
        tenant, _, dep_id = key.partition(".")
        dep, _ = await hosting.deployments.read(tenant, dep_id)
        if dep is None or not dep.schedule or await published(hosting.js, tenant, dep_id) is not None:
            continue
        try:
            await publish(hosting.js, tenant, dep)
            fixed += 1
            log.info("schedule of %s/%s published again at start", tenant, dep_id)
        except ExecutionError as exc:
            log.warning("schedule of %s/%s not published: %s", tenant, dep_id, exc)
    return fixed


async def reconcile_quietly(hosting: Any, attempts: int = 5) -> None:
    import asyncio

    for attempt in range(attempts):
        try:
            await reconcile(hosting)
            return
        except Exception as exc:  # noqa: BLE001 - JetStream away at start: a little later
            log.warning("schedules not reconciled (%s: %s)%s", type(exc).__name__, exc,
                        "; retrying" if attempt + 1 < attempts else "")
            await asyncio.sleep(2.0 * (attempt + 1))


def _server_next(header: str | None) -> datetime | None:
    if not header or header == "purge":
        return None
    try:
        return firetimes.parse_time(header)
    except ValueError:
        return None


async def remove(js: Any, tenant: str, deployment: str) -> None:
    for subject in (schedule_subject(tenant, deployment), fires_subject(tenant, deployment)):
        await js.purge_stream(STREAM, subject=subject)


class Fires:
    """Each fire -> triggers (or a skipped record when older than the catch-up window)."""

    def __init__(self, hosting: Any) -> None:
        self.h = hosting
        self.fired = 0
        self.late = 0
        self.closed = 0  # fires skipped outside the deployment's window or trading session
        self.loop = triggers.PullLoop(hosting, STREAM, CONSUMER, self._batch, lambda: triggers.MAX_BATCH)

    async def _batch(self, msgs: list[Any]) -> None:
        for msg in msgs:
            try:
                await self._one(msg)
            except Exception as exc:  # noqa: BLE001 - left for another try
                log.warning("fire on %s not handled: %s", msg.subject, exc)
                await triggers.nak(msg, 0.5)

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
        now = datetime.now(timezone.utc)
        if forms.kind(dep.schedule) == "offset":  # the next instant, before this fire is acked
            try:
                await publish(self.h.js, tenant, dep, now=max(now, fired_at))
            except ExecutionError as exc:  # no session ahead in the calendar's data: no more fires
                log.warning("offset schedule of %s/%s ends: %s", tenant, dep_id, exc.message)
        try:
            upcoming = firetimes.next_fire(dep, max(now, fired_at),
                                           anchor=_server_next((msg.headers or {}).get(NEXT)))
        except Exception as exc:  # noqa: BLE001 - e.g. a cron stored before croniter checked it
            log.warning("next fire of %s/%s unknown: %s", tenant, dep_id, exc)
            upcoming = None
        outside = firetimes.refusal(dep, fired_at) if dep.desired == "running" else None

        def mark(status: DeploymentStatus) -> DeploymentStatus:
            status.last_fire = fire_iso
            status.next_fire = firetimes.iso(upcoming, dep) if upcoming and dep.desired == "running" else None
            if outside:
                status.fires_outside += 1
                status.fire_note = f"the fire at {fire_iso} was skipped: {outside}"
            return status

        await self.h.deployments.set_status(tenant, dep_id, mark)
        if dep.desired != "running":  # paused or stopped: the fire is dropped, silently
            await msg.ack()
            return
        if outside:  # outside the window, or the exchange closed (weekend, holiday)
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
