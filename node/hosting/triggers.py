"""Triggers: each new bar fanned out once per matching deployment, then pulled like durable jobs.

Fan-out. Every node binds the one durable pull consumer `strategy-fanout` on BARS (deliver new,
explicit ack), so each new chunk on `bars.<timeframe>.<symbol>` is handled by one node at a
time. For the chunk's newest bar (its `Bars-Range` header) the node publishes one `Trigger` per
running deployment on that series to `strategy.triggers.<tenant>.<deployment>` with
`Nats-Msg-Id` = tenant.deployment.v<version>.<symbol>.<bar ns>, waits for every PubAck, then
acks the chunk. A node that dies part-way leaves the chunk to be redelivered; the triggers it
published again are dropped by the stream's duplicate window, so each (deployment, version,
bar) is one trigger. Deployments are known from a watch of KV DEPLOYMENTS; before a batch is
fanned out the watch is brought up to the bucket's last sequence, so a deployment created
before the bar arrived is never missed.

Consumption. The one durable pull consumer `strategy-triggers` on the work-queue stream
STRATEGY_TRIGGERS is shared by every node; a node pulls only as many triggers as it has idle
workers (the node's Admission, shared with requests and jobs), sends `in_progress` while a run
goes on, and acks only when it is recorded (node/hosting/runs.py). A node killed with -9 leaves
its triggers to be redelivered after the ack wait; the run record and the signal's Nats-Msg-Id
make the redelivery idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
import nats.js.errors

from contracts.hosting import Deployment, Trigger

from .. import sizing
from ..pull import Puller
from . import naming, streams

log = logging.getLogger("node.hosting.triggers")

_trigger = msgspec.msgpack.Encoder()
_deployment = msgspec.json.Decoder(Deployment)
FETCH_WAIT_S = 1.0
PER_WORKER = 3  # triggers in hand per sandbox worker (one running, the others reading or publishing)
MAX_BATCH = 256
RANGE_HEADER = "Bars-Range"


def trigger_message(tenant: str, dep: Deployment, symbol: str, bar_ns: int,
                    manual_id: str | None = None, schedule_id: str | None = None) -> tuple[str, bytes, dict[str, str]]:
    """A trigger for a new bar, a manual run (`manual_id`) or a schedule's fire (`schedule_id`)."""
    trig = Trigger(tenant=tenant, deployment=dep.id, version=dep.version, symbol=symbol,
                   timeframe=dep.timeframe, bar_ns=bar_ns, manual=manual_id is not None)
    run_id = manual_id or schedule_id or naming.trigger_id(tenant, dep.id, dep.version, symbol, bar_ns)
    return naming.triggers_subject(tenant, dep.id), _trigger.encode(trig), {"Nats-Msg-Id": run_id}


async def _quiet_stop(watcher: Any) -> None:
    try:
        await watcher.stop()
    except Exception:  # noqa: BLE001 - a watcher of a lost connection
        pass


class Routes:
    """Running deployments by series, from a watch of KV DEPLOYMENTS."""

    def __init__(self, kv: Any, js: Any) -> None:
        self.kv = kv
        self.js = js
        self.by_series: dict[tuple[str, str], dict[tuple[str, str], Deployment]] = {}
        self.by_key: dict[str, Deployment] = {}
        self.seen = 0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self._watcher: Any = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._watcher is not None:
            try:
                await self._watcher.stop()
            except Exception:  # noqa: BLE001
                pass
            self._watcher = None

    async def _watch(self) -> None:
        while True:
            try:
                if self._watcher is not None:
                    await _quiet_stop(self._watcher)
                watcher = self._watcher = await self.kv.watchall()
                while True:
                    entry = await watcher.updates(timeout=60 * 60)
                    if entry is None:  # the initial values are all in
                        self._ready.set()
                        continue
                    self._apply(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnects, timeouts: watch again
                log.debug("deployment watch restarts: %s", exc)
                await asyncio.sleep(0.5)

    def _apply(self, entry: Any) -> None:
        key = entry.key
        old = self.by_key.pop(key, None)
        if old is not None:
            tenant = key.split(".", 1)[0]
            for symbol in old.symbols:
                self.by_series.get((old.timeframe, symbol), {}).pop((tenant, old.id), None)
        if entry.operation is None and entry.value:
            dep = _deployment.decode(entry.value)
            tenant = key.split(".", 1)[0]
            self.by_key[key] = dep
            for symbol in dep.symbols:
                self.by_series.setdefault((dep.timeframe, symbol), {})[(tenant, dep.id)] = dep
        self.seen = max(self.seen, int(entry.revision or 0))
        self._changed.set()

    async def caught_up(self, timeout: float = 5.0) -> None:
        """Wait until the watch has applied every change the bucket holds now; a watch that
        stays behind (e.g. its ordered consumer lost in a server restart) is started again
        and the caller retries the batch later."""
        try:
            await self._caught_up(timeout)
        except asyncio.TimeoutError:
            log.warning("the deployment watch is behind; watching again")
            self.restart()
            raise

    def restart(self) -> None:
        if self._task is not None:
            self._task.cancel()
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            asyncio.ensure_future(_quiet_stop(watcher))
        self._ready = asyncio.Event()
        self.start()

    async def _caught_up(self, timeout: float) -> None:
        await asyncio.wait_for(self._ready.wait(), timeout)
        info = await self.js.stream_info(f"KV_{streams.DEPLOYMENTS}")
        last = info.state.last_seq
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.seen < last:
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("the deployment watch is behind")
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def running(self, timeframe: str, symbol: str) -> list[tuple[str, Deployment]]:
        return [(tenant, dep) for (tenant, _), dep in self.by_series.get((timeframe, symbol), {}).items()
                if dep.desired == "running" and not dep.schedule]  # a scheduled one runs on its fires


class PullLoop:
    """A shared durable pull consumer, pulled only when there is room (node Admission).

    Each pull request is read until the server has ended it (node/pull.py): nats-py's `fetch`
    gives up on the client's clock while the server expires a request from when it received
    it, so a request the server took late (a stall, a loaded host) stayed open after `fetch`
    returned and delivered the next message to a node that had stopped pulling, where it sat
    unacked for a whole ack wait. On `stop`, what the open requests still bring, and what
    arrives after the loop stopped taking work, is handed back with a nak: another node gets
    it at once.
    """

    GRACE_S = 2.0  # how long past a request's expiry the server may stay silent

    def __init__(self, hosting: Any, stream: str, consumer: str, handle, free) -> None:
        self.h = hosting
        self.stream = stream
        self.consumer = consumer
        self.handle = handle
        self.free = free
        self.sub: Puller | None = None
        self.state = "starting"
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._room = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        self._stop.set()
        self._room.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), FETCH_WAIT_S + self.GRACE_S)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                self._task.cancel()
        if self.sub is not None:
            sub, self.sub = self.sub, None
            naks: list[asyncio.Future] = []
            try:
                await sub.hand_back(FETCH_WAIT_S + self.GRACE_S,
                                    lambda msg: naks.append(asyncio.ensure_future(nak(msg))))
                if naks:
                    await asyncio.wait(naks)
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - a lost connection: the ack wait hands them back
                pass
        self.state = "stopped"

    def room(self) -> None:
        self._room.set()

    async def _loop(self) -> None:
        retry = 0.5
        while not self._stop.is_set():
            try:
                if self.sub is None:
                    self.sub = await Puller.bind(self.h.nc, self.stream, self.consumer, grace=self.GRACE_S)
                    self.state, retry = "consuming", 0.5
                n = self.free()
                if n <= 0:
                    self._room.clear()
                    try:
                        await asyncio.wait_for(self._room.wait(), 0.02)
                    except asyncio.TimeoutError:
                        pass
                    continue
                # One message per pull: a pull of one ends as soon as one is there, where a
                # lingering pull of n would hold the first until n arrived or it expired.
                msgs: list[Any] = []
                try:
                    await self.sub.pull(1, FETCH_WAIT_S, msgs.append)
                except asyncio.TimeoutError:  # the server stayed silent past the request's end
                    continue
                if self._stop.is_set():  # delivered as we stopped: another node takes it now
                    await asyncio.gather(*(nak(msg) for msg in msgs))
                elif msgs:
                    await self.handle(msgs)
                if self.state != "consuming":
                    self.state = "consuming"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - JetStream down, reconnecting: try again
                log.warning("%s/%s unavailable (%s: %s); retrying", self.stream, self.consumer, type(exc).__name__, exc)
                self.state = "unavailable"
                if isinstance(exc, nats.js.errors.APIError) and self.sub is not None:
                    # e.g. the consumer was deleted: a new subscription once it is back
                    sub, self.sub = self.sub, None
                    try:
                        await sub.unsubscribe()
                    except Exception:  # noqa: BLE001
                        pass
                try:
                    await asyncio.wait_for(self._stop.wait(), retry)
                except asyncio.TimeoutError:
                    pass
                retry = min(retry * 2, 5.0)


async def nak(msg: Any, delay: float | None = None) -> None:
    """Hand `msg` back for another delivery (after `delay` seconds); on a lost connection the
    ack wait hands it back instead."""
    try:
        await msg.nak(delay=delay)
    except Exception:  # noqa: BLE001
        pass


class FanOut:
    def __init__(self, hosting: Any, routes: Routes) -> None:
        self.h = hosting
        self.routes = routes
        self.fanned = 0
        self.loop = PullLoop(hosting, "BARS", streams.FANOUT_CONSUMER, self._batch, lambda: MAX_BATCH)

    async def _batch(self, msgs: list[Any]) -> None:
        try:
            await self.routes.caught_up()
        except Exception as exc:  # noqa: BLE001 - the watch is behind or JetStream is away: later
            log.warning("fan-out waits for the deployment watch (%s: %s)", type(exc).__name__, exc)
            for msg in msgs:
                await nak(msg, 0.2)
            return
        for msg in msgs:
            try:
                await self._one(msg)
            except Exception as exc:  # noqa: BLE001 - left unacked: redelivered after the ack wait
                log.warning("fan-out of %s failed: %s", msg.subject, exc)
                await nak(msg, 0.5)

    async def _one(self, msg: Any) -> None:
        parts = msg.subject.split(".", 2)
        rng = (msg.headers or {}).get(RANGE_HEADER, "")
        if len(parts) != 3 or not rng:
            await msg.ack()
            return
        _, timeframe, symbol = parts
        try:
            bar_ns = int(rng.split()[1])
        except (IndexError, ValueError):  # not a chunk of the bar store: nothing to fan out
            log.warning("ignored %s: unreadable %s header %r", msg.subject[:100], RANGE_HEADER, rng[:100])
            await msg.ack()
            return
        pubs = []
        for tenant, dep in self.routes.running(timeframe, symbol):
            subject, body, headers = trigger_message(tenant, dep, symbol, bar_ns)
            sizing.check(self.h.nc, body, headers, "a trigger")
            pubs.append(self.h.js.publish(subject, body, headers=headers))
        if pubs:
            await asyncio.gather(*pubs)
            self.fanned += len(pubs)
        await msg.ack()


class Triggers:
    """Pulls triggers when a worker is free and runs each through the Runner."""

    def __init__(self, hosting: Any, runner: Any) -> None:
        self.h = hosting
        self.runner = runner
        self.running = 0
        self.loop = PullLoop(hosting, streams.TRIGGERS_STREAM, streams.TRIGGER_CONSUMER, self._batch, self._free)
        self._tasks: set[asyncio.Task] = set()

    def _free(self) -> int:
        """Triggers this node may take now: its sandbox runs go through the node's Admission
        (shared with requests and jobs), and the reads and writes around them are short, so it
        holds at most PER_WORKER triggers per worker, and none while the Admission has a queue."""
        adm = self.h.admission
        if adm.queued:
            return 0
        return adm.max_workers * PER_WORKER - self.running

    async def _batch(self, msgs: list[Any]) -> None:
        for msg in msgs:
            self._dispatch(msg)

    def _dispatch(self, msg: Any) -> None:
        finished = asyncio.Event()

        async def beat() -> None:
            every = max(0.05, self.h.settings.jobs_ack_wait_seconds / 3)
            while not finished.is_set():
                try:
                    await asyncio.wait_for(finished.wait(), every)
                    return
                except asyncio.TimeoutError:
                    try:
                        await msg.in_progress()
                    except Exception:  # noqa: BLE001
                        pass

        heartbeat = asyncio.ensure_future(beat())
        self.running += 1

        async def work() -> None:
            try:
                await self.runner.handle(msg)
            except Exception as exc:  # noqa: BLE001 - the node's own failure: another try
                log.warning("trigger %s failed in the node: %s", msg.subject, exc, exc_info=True)
                await nak(msg, 0.5)
            finally:
                finished.set()
                heartbeat.cancel()
                self.running -= 1
                self.loop.room()

        task = asyncio.ensure_future(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
