"""Hosted strategies inside one node: storage setup, control endpoints, fan-out and runs.

`Hosting.start()` declares the streams, buckets and consumers in the background (retrying until
JetStream answers; control requests wait for it a few seconds, then get OVERLOADED), then starts
the deployment watch, the fan-out of new bars and, when the node takes work (`consume`), the
trigger consumer. Nothing here is kept only in memory: the watch and the window cache are
caches of what JetStream holds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats.js.errors

from backtest.store import BarStore
from contracts import ErrorCode, ExecutionError

from . import naming, streams
from .control import Control
from .deployments import Deployments
from .registry import Registry
from .runs import Runner
from . import schedules
from .secrets import Keyring, Secrets
from .state import StateStore
from .triggers import FanOut, Routes, Triggers
from .window import Windows

log = logging.getLogger("node.hosting")


class Hosting:
    def __init__(self, nc: Any, settings: Any, endpoints: Any, admission: Any, pool: Any,
                 consume: bool = True) -> None:
        self.nc = nc
        self.settings = settings
        self.cache = endpoints.cache  # the compile cache `validate` and `execute` use
        self.endpoints = endpoints  # .reference: the reference data `execute` hands its accessors
        self.admission = admission
        self.pool = pool
        self.consume = consume
        self.js = nc.jetstream(timeout=5.0)
        self.ready = asyncio.Event()
        self.control = Control(self)
        self.runner = Runner(self)
        self.store = BarStore(self.js, nc)
        self.windows = Windows(self.store)
        # The key-encryption keys (None: this node refuses secret operations); a key that is
        # set but unreadable stops the node here, at start, not at the first run.
        self.keyring = Keyring.load(settings.secrets_key, settings.secrets_key_file)
        self.secrets: Secrets | None = None
        self.registry: Registry | None = None
        self.deployments: Deployments | None = None
        self.states: StateStore | None = None
        self.runs_kv: Any = None
        self.locks_kv: Any = None
        self.routes: Routes | None = None
        self.fanout: FanOut | None = None
        self.triggers: Triggers | None = None
        self.fires: schedules.Fires | None = None
        self._task: asyncio.Task | None = None

    def handlers(self):
        return self.control.handlers()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._setup())

    async def _setup(self) -> None:
        retry = 0.5
        while True:
            try:
                await self._declare()
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - JetStream not there yet
                log.warning("hosted strategies unavailable (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(retry)
                retry = min(retry * 2, 5.0)
        self.routes = Routes(self.deployments.kv, self.js)
        self.routes.start()
        self.fanout = FanOut(self, self.routes)
        self.fanout.loop.start()
        self.fires = schedules.Fires(self)
        self.fires.loop.start()
        self._reconcile = asyncio.ensure_future(schedules.reconcile_quietly(self))  # schedules a crash left out
        if self.consume:
            self.triggers = Triggers(self, self.runner)
            self.triggers.loop.start()
        self.ready.set()
        log.info("hosted strategies ready (fan-out%s)", " and triggers" if self.consume else " only")

    async def _declare(self) -> None:
        max_payload = int(getattr(self.nc, "max_payload", 1024 * 1024) or 1024 * 1024)
        kv = {}
        for config in streams.bucket_configs(self.settings, max_payload):
            kv[config.bucket] = await streams.ensure_bucket(self.js, config)
        for config in streams.stream_configs(self.settings):
            await streams.ensure_stream(self.js, config)
        await self.store.ensure_stream()
        await schedules.ensure(self.js, self.settings)
        await streams.ensure_consumer(self.js, streams.TRIGGERS_STREAM, streams.trigger_consumer(self.settings))
        await streams.ensure_consumer(self.js, "BARS", streams.fanout_consumer(self.settings))
        self.registry = Registry(kv[streams.STRATEGIES], self.cache)
        self.deployments = Deployments(kv[streams.DEPLOYMENTS], kv[streams.STATUS], self.nc)
        self.states = StateStore(kv[streams.STATE])
        self.secrets = Secrets(kv[streams.SECRETS], self.keyring)
        self.runs_kv = kv[streams.RUNS]
        self.locks_kv = kv[streams.LOCKS]

    async def purge_triggers(self, tenant: str, deployment: str) -> None:
        await self.js.purge_stream(streams.TRIGGERS_STREAM, subject=naming.triggers_subject(tenant, deployment))

    async def newest_bar(self, symbol: str, timeframe: str) -> int:
        index, _ = await self.store._read_index(symbol, timeframe)
        if index is None or not index.chunks:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, f"no bars stored for {symbol} {timeframe}")
        _first, last, _seq, _count = index.arrays()
        return int(last[-1])

    async def stop_fetching(self) -> None:
        # together: each loop may be in a pull of up to FETCH_WAIT_S
        await asyncio.gather(*(part.loop.stop() for part in (self.triggers, self.fanout, self.fires)
                               if part is not None))

    async def close(self) -> None:
        await self.stop_fetching()
        if self.triggers is not None and self.triggers._tasks:  # runs finishing their records and acks
            _, pending = await asyncio.wait(set(self.triggers._tasks), timeout=self.settings.drain_timeout_seconds)
            for task in pending:
                task.cancel()
        if self.routes is not None:
            await self.routes.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()
