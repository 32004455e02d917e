"""The running node: NATS connection, the `strategy-exec` micro service and its lifecycle.

Handlers never await the sandbox themselves (nats.py runs one subscription's callbacks in
order); they hand each request to `Admission`, which bounds concurrency and refuses with
OVERLOADED past its queue. Shutdown drains the endpoints, finishes what was admitted, then
drains the connection, so no accepted request goes unanswered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any, Awaitable, Callable

import nats
from nats.micro import add_service
from nats.micro.request import Request

from contracts import subjects
from contracts.codec import content_type
from sandbox.pool import SandboxPool
from sandbox.warm import WarmPolicy

from . import __version__, identity
from .admission import Admission, ByteBudget, PendingLimited
from .backtesting import Backtesting
from .config import Settings
from .connectivity import Connectivity, write_heartbeat
from .durable import JobConsumer
from .hosting.secrets import Keyring
from .hosting.service import Hosting
from . import nats_internals, sizing
from .endpoints import Endpoints, error_headers
from .metrics import Metrics
from .nats_auth import connect_options, denied_subject, is_inbox_subject
from .telemetry import Telemetry

log = logging.getLogger("node")


class Node:
    def __init__(self, settings: Settings, nats_url: str, connect_env: dict[str, str] | None = None,
                 telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.nats_url = nats_url
        self.connect_env = connect_env or {}
        self.metrics = Metrics()
        self.pool = SandboxPool(
            ready_target=settings.ready_children, max_memory_mb=settings.max_memory_mb,
            max_cpu_seconds=int(settings.max_timeout_seconds) + 1, disable=settings.sandbox_disable,
            prewarm=settings.sandbox_prewarm,
            warm=WarmPolicy(runs=settings.tenant_warm_runs, per_tenant=settings.tenant_warm_workers,
                            total=settings.tenant_warm_max, idle_seconds=settings.tenant_warm_idle_seconds),
        )
        self.endpoints = Endpoints(settings, self.pool, self.metrics)
        self.budget = ByteBudget(settings.max_inflight_bytes)  # one per node: requests, points, jobs
        self.admission = Admission(settings.max_workers, settings.max_queue, self.budget)
        self.endpoints.admission_state = lambda: (self.admission.in_flight, self.admission.queued)
        self.telemetry = telemetry or Telemetry(settings)  # OTEL_* env; spans, metrics
        self.telemetry.bind(self)
        self.nc: nats.NATS | None = None
        self.verifier = identity.Verifier(trust_body=settings.trust_body_user_id)  # replaced at start
        self.service: Any = None
        self._stopped = asyncio.Event()
        self._stopping = False
        self.backtesting: Backtesting | None = None
        self.jobs: JobConsumer | None = None  # durable jobs (node/durable.py) when role is all|jobs
        self.hosting: Hosting | None = None  # hosted strategies (node/hosting/)
        self._heartbeat: asyncio.Future | None = None
        self.connectivity = Connectivity(exit_after_s=settings.nats_disconnected_exit_seconds)
        self.exit_code = 0  # 1 when the node stopped because it lost NATS (serve() exits with it)

    # -- start --------------------------------------------------------------------------
    async def start(self) -> None:
        # Hosted-strategy secrets: a key that is set but unreadable or malformed stops the node
        # here, before it connects (node/hosting/secrets.py), not at the first secret it needs.
        Keyring.load(self.settings.secrets_key, self.settings.secrets_key_file)
        await self.pool.start()
        for layer in self.pool.layers:
            log.info("isolation layer %-18s %s  %s", layer.name, "active  " if layer.active else "INACTIVE", layer.detail)
        options = connect_options(self.connect_env)
        self.nc = await nats.connect(
            [u.strip() for u in self.nats_url.split(",") if u.strip()],  # "nats://a:4222,nats://b:4222"
            name=f"strategy-node {self.settings.node_id}",
            max_reconnect_attempts=-1, reconnect_time_wait=0.5, allow_reconnect=True,
            error_cb=self._on_error, disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect, closed_cb=self._on_closed, **options,
        )
        nats_internals.tolerate_late_pongs(self.nc)  # a slow PONG must not leave the node deaf
        self.connectivity.on_connected()
        self.endpoints.nats_connected = lambda: bool(self.nc and self.nc.is_connected)
        # Tenants are verified only when the node has an account of its own (node/identity.py).
        self.verifier = identity.Verifier(await identity.own_account(self.nc), self.settings.trust_body_user_id)
        self.endpoints.nats_account = self.verifier.own_account
        if self.verifier.verifies and self.settings.role != "requests" and not self.settings.job_reply_prefixes:
            log.warning("tenant accounts are verified but JOB_REPLY_PREFIXES is empty: every tenant's durable "
                        "job that asks for a push reply (Strategy-Reply-To) is refused; name each account's "
                        "inbox prefixes (deploy/k8s/base/configmap.yaml)")
        self.service = await add_service(
            PendingLimited(self.nc, self.settings), name=subjects.SERVICE_NAME, version=__version__,
            description="Runs untrusted trading strategies in a locked-down sandbox",
            queue_group=subjects.QUEUE_GROUP,
            metadata={"node_id": self.settings.node_id, "environment": self.settings.environment},
            stats_handler=lambda ep: self.metrics.snapshot(ep.name),
        )
        if self.settings.role in ("all", "requests"):
            await self._endpoint("execute", subjects.EXECUTE, self.endpoints.execute)
            await self._endpoint("validate", subjects.VALIDATE, self.endpoints.validate)
            self.backtesting = await Backtesting.create(self.settings, self.endpoints, self.nc)
            self.backtesting.points.budget = self.budget
            await self._endpoint("backtest", subjects.BACKTEST, self.backtesting.backtest)
            await self._endpoint("backtest-point", subjects.BACKTEST_POINT, self.backtesting.point,
                                 admission=self.backtesting.points)  # own slots: no sweep deadlock
            await self._endpoint("screen", subjects.SCREEN, self.backtesting.screen)
        if self.settings.role in ("all", "jobs"):
            if self.backtesting is None:  # role "jobs": backtest jobs need the engine, not its endpoints
                self.backtesting = await Backtesting.create(self.settings, self.endpoints, self.nc)
                self.backtesting.points.budget = self.budget
            self.jobs = JobConsumer(self.nc, self.settings, self.admission, self._job_handler)
            self.jobs.verifier = self.verifier
            self.jobs.start()  # declares the streams and consumer in the background, then pulls
        # Hosted strategies: control endpoints on request nodes, trigger runs on nodes that take jobs.
        self.hosting = Hosting(self.nc, self.settings, self.endpoints, self.admission, self.pool,
                               consume=self.settings.role in ("all", "jobs"))
        if self.settings.role in ("all", "requests"):
            for name, subject, handler in self.hosting.handlers():
                await self._endpoint(name, subject, handler)
        self.hosting.start()  # declares its streams and buckets in the background, then fans out and pulls
        await self.service.add_endpoint(name="health", subject=subjects.HEALTH, handler=self._health,
                                        queue_group=subjects.QUEUE_GROUP)
        # This node's own health, for probes that must ask their own pod, not any node in the group.
        await self.service.add_endpoint(name="health-node", subject=subjects.node_health(self.settings.node_id),
                                        handler=self._health, queue_group=f"health-{self.settings.node_id}")
        await self.nc.flush()
        self._heartbeat = asyncio.ensure_future(self._beat())
        log.info("node %s serving %s on %s", self.settings.node_id, subjects.PREFIX + ".*", self.nats_url)

    async def _endpoint(self, name: str, subject: str,
                        handler: Callable[[bytes, str, float], Awaitable[Any]],
                        admission: Admission | None = None) -> None:
        admission = admission or self.admission

        async def on_request(req: Request) -> None:
            received = time.monotonic()
            kind = content_type(req.headers)
            scope = self.telemetry.request(subject, req.headers)  # span from the caller's traceparent
            # The tenant NATS vouches for (node/identity.py), never the body alone.
            caller = self.verifier.request(req.headers, nats_internals.reply_subject(req))

            async def work() -> None:
                with scope, identity.acting_for(caller):
                    reply = await handler(req.data, kind, received)
                    scope.finish(reply)
                    await self._respond(req, reply, kind, scope.traced)

            if not admission.submit(work, len(req.data)):
                with scope:
                    reply = self.endpoints.refused(subject)
                    scope.finish(reply)
                    await self._respond(req, reply, kind, scope.traced)

        await self.service.add_endpoint(name=name, subject=subject, handler=on_request,
                                        queue_group=subjects.QUEUE_GROUP)

    async def _respond(self, req: Request, reply: Any, kind: str, traced: bool = True) -> None:
        """Size and publish `reply` on the request's inbox; `traced`: a trace context may be
        current (False only for a request scope that has none: nothing to inject)."""
        reply_to = nats_internals.reply_subject(req)
        if not is_inbox_subject(reply_to):
            # No inbox (a plain publish), or a reply subject that names something else, such as
            # a JetStream API or result subject: answering it would make the node a confused deputy.
            if reply_to:
                log.warning("refused to reply to non-inbox subject %r", reply_to[:80])
            return
        try:
            reply, body = sizing.fit_reply(reply, kind, self.nc)  # the same rule as job results
            error = getattr(reply, "error", None)
            if error is None and not traced:
                plain = sizing.plain_headers(kind)  # built, sized and encoded once
                # never a max-payload violation: headers plus body, as the server counts them
                sizing.check_size(self.nc, plain.size + len(body), "the reply")
                if nats_internals.publish_now(self.nc, reply_to, body, plain.block):
                    return  # written now, not by nats-py's flusher a loop turn later
                await self.nc.publish(reply_to, body, headers=plain.headers)
                return
            headers = error_headers(error, kind)  # a new dict each time
            if traced:
                self.telemetry.inject(headers)  # traceparent of the node's span, when there is one
            sizing.check_size(self.nc, sizing.header_bytes(headers) + len(body), "the reply")
            await self.nc.publish(reply_to, body, headers=headers)  # what Request.respond does
        except Exception:  # noqa: BLE001 - a lost connection: nothing else to do for this one
            log.warning("could not send a reply", exc_info=True)

    def _job_handler(self, kind: str) -> Callable[[bytes, str, float], Awaitable[Any]] | None:
        if kind == "execute":
            return self.endpoints.execute
        if kind == "backtest" and self.backtesting is not None:
            return self.backtesting.backtest
        return None

    async def _health(self, req: Request) -> None:
        kind = content_type(req.headers)
        health = self.endpoints.health()
        if self.jobs is not None:
            health.jobs = self.jobs.health()
            if self.settings.role == "jobs" and health.status == "ok" and health.jobs.state != "consuming":
                health.status = "degraded"  # a jobs-only node without its consumer does no work
        await self._respond(req, health, kind)

    def _write_heartbeat(self) -> None:
        try:
            write_heartbeat(self.settings.heartbeat_file, self.connectivity)
        except OSError:
            log.debug("cannot write heartbeat %s", self.settings.heartbeat_file, exc_info=True)

    async def _beat(self) -> None:
        """Rewrite the heartbeat file (event loop alive + NATS connectivity, node/connectivity.py)
        every second; stop the node when it has been disconnected longer than the limit."""
        deaf = 0
        while not self._stopped.is_set():
            self._write_heartbeat()
            if self.connectivity.beyond_limit() and not self._stopping:
                self._lost(f"disconnected from NATS for more than {self.connectivity.exit_after_s:g}s")
            # a connection that says connected while nothing reads it serves no one (two beats in
            # a row: a reconnect starts its new read loop just before it says connected)
            deaf = deaf + 1 if self._deaf() else 0
            if deaf >= 2 and not self._stopping:
                reason = "the NATS connection's read loop ended while it was connected: nothing more arrives"
                self.connectivity.on_closed(reason)  # the liveness probe fails from now on
                self._lost(reason)
            await asyncio.sleep(1.0)

    def _deaf(self) -> bool:
        nc = self.nc
        return nc is not None and nc.is_connected and not nats_internals.read_loop_alive(nc)

    def _lost(self, reason: str) -> None:
        """Serve or stop: without NATS this node is useless; exit 1 so the orchestrator replaces it."""
        log.error("%s: stopping (exit status 1)", reason)
        self.exit_code = 1
        self._write_heartbeat()
        asyncio.ensure_future(self.stop())

    # -- NATS callbacks -----------------------------------------------------------------
    async def _on_error(self, exc: Exception) -> None:
        log.warning("NATS error: %s", exc)
        subject = denied_subject(exc)
        refdata = getattr(self.backtesting, "refdata", None)
        if subject is not None and refdata is not None:
            refdata.denied(subject)  # its reads under way fail now, not at their timeout

    async def _on_disconnect(self) -> None:
        self.connectivity.on_disconnected()
        self._write_heartbeat()
        if not self._stopping:
            log.warning("disconnected from NATS; reconnecting (exit after %gs without NATS)",
                        self.connectivity.exit_after_s)

    async def _on_reconnect(self) -> None:
        self.connectivity.on_connected()
        self._write_heartbeat()
        log.info("reconnected to NATS at %s", self.nc.connected_url.netloc if self.nc else "?")

    async def _on_closed(self) -> None:
        """nats-py closed the connection for good: after our own drain, or after a fatal error."""
        error = self.nc.last_error if self.nc is not None else None
        self.connectivity.on_closed(f"{type(error).__name__}: {error}" if error else "closed")
        self._write_heartbeat()
        if not self._stopping:
            self._lost(f"NATS closed the connection for good ({self.connectivity.reason})")

    # -- stop ---------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))

    async def stop(self) -> None:
        """Stop taking work, finish what was admitted, then drain the connection."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self.endpoints.draining = True
        log.info("draining: no new requests; %d in flight", self.admission.in_flight)
        if self.jobs is not None:
            await self.jobs.stop_fetching()  # no new jobs; those running finish with the admission drain
        if self.hosting is not None:
            await self.hosting.stop_fetching()  # no new triggers; running ones finish with the drain
        lost = self.nc is None or self.nc.is_closed  # closed for good: nothing can be delivered
        online = not lost and self.nc.is_connected
        for subject, sub in (nats_internals.endpoint_subscriptions(self.service) if online and self.service else []):
            if not subject.startswith(subjects.HEALTH):
                try:
                    await sub.drain()  # delivers what is buffered, then unsubscribes
                except Exception:  # noqa: BLE001
                    log.debug("endpoint drain failed", exc_info=True)
        if self.nc is not None and self.nc.is_connected:
            try:
                await self.nc.flush(timeout=2)
            except Exception:  # noqa: BLE001
                pass
        await asyncio.sleep(0)  # let drained callbacks submit their work
        # A closed connection can deliver nothing: give running work a moment, not the whole drain.
        drain_s = min(self.settings.drain_timeout_seconds, 2.0) if lost else self.settings.drain_timeout_seconds
        finished = await self.admission.drain(drain_s)
        if self.backtesting is not None:
            finished = await self.backtesting.drain(drain_s) and finished
        if not finished:
            log.error("drain timeout: some requests did not finish in %.0fs", drain_s)
        if self.jobs is not None:
            await self.jobs.close()
        if self.hosting is not None:
            await self.hosting.close()
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.drain()
            except Exception:  # noqa: BLE001 - e.g. reconnecting: close without draining
                try:
                    await self.nc.close()
                except Exception:  # noqa: BLE001 - nats-py flushing into a dead socket
                    log.debug("closing the NATS connection failed", exc_info=True)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        await self.pool.close()
        self.telemetry.shutdown()
        log.info("node %s stopped", self.settings.node_id)
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
