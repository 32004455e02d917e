"""The control handlers: `strategy.v1.strategies.*` and `strategy.v1.deployments.*`.

Every handler takes the request body and returns its reply Struct (never raises): the tenant is
the verified caller of the request (node/identity.py, node/hosting/naming.py), so a tenant only
ever names keys under its own token. Another tenant's strategy or deployment is "not found",
exactly like one that does not exist.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Awaitable, Callable

import msgspec

from contracts import ErrorCode, ExecutionError, decode, subjects
from contracts import schedule as forms
from contracts.hosting import (
    Deployment,
    DeploymentCreate,
    DeploymentDeploy,
    DeploymentRef,
    DeploymentReply,
    DeploymentStatus,
    DeploymentUpdate,
    DeploymentView,
    StrategyPut,
    StrategyRef,
    StrategyReply,
    check_schedule,
)

from contracts.quotas import QuotaReply, QuotaRequest
from contracts.secrets import SecretPut, SecretRef, SecretReply

from .. import identity, sizing
from ..failures import error_of
from ..jobs import run_limits
from . import firetimes, naming, quotas, schedules, sessions, triggers
from . import logs as run_logs

Handler = Callable[[bytes, str, float], Awaitable[Any]]
READY_WAIT_S = 5.0


def _by() -> str:
    """Who makes a change: the verified NATS account (and user, on imports that share it)."""
    caller = identity.current()
    if caller.account is None:
        return naming.LOCAL_TENANT
    return caller.account + (f"/{caller.user}" if caller.user else "")


def _next_iso(dep: Deployment) -> str | None:
    """The status' next fire of a deployment (None unless it is scheduled and running)."""
    if not dep.schedule or dep.desired != "running":
        return None
    try:
        at = firetimes.next_fire(dep, naming.utc_now())
    except Exception:  # noqa: BLE001 - a display value: a schedule it cannot evaluate shows none
        return None
    return firetimes.iso(at, dep) if at else None


def _must_fire(dep: Deployment) -> None:
    """A schedule whose window and session never meet would never run: refused, naming them."""
    if not dep.schedule or forms.kind(dep.schedule) == "at":
        return
    if firetimes.next_fire(dep, naming.utc_now()) is None:
        named = " and ".join(f"`$.{f}` {getattr(dep, f)!r}" for f in ("window", "session") if getattr(dep, f))
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.schedule` {dep.schedule!r} with {named or 'its zone'} never "
                             "fires within the calendar's data (about a year ahead): widen the window or pick "
                             "another session")


def _combination(dep: Deployment) -> None:
    try:
        check_schedule(dep.schedule, dep.tz, dep.window, dep.session)
    except ValueError as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid request: {exc}") from None


UPDATE_FIELDS = ("version", "symbols", "lookback", "parameters", "timeout_ms", "memory_mb", "overlap", "warm",
                 "env", "secrets", "tz", "catchup_s", "timeframe")


def _need(value: Any, field: str) -> Any:
    if value is None:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid request: `$.{field}` is required")
    return value


class Control:
    def __init__(self, hosting: Any) -> None:
        self.h = hosting
        self.quotas = quotas.Quotas(hosting)

    def handlers(self) -> list[tuple[str, str, Handler]]:
        out: list[tuple[str, str, Handler]] = []
        for op in subjects.STRATEGY_OPS:
            out.append((f"strategies-{op}", f"{subjects.STRATEGIES}.{op}", self._wrap(op, self.strategy, StrategyReply)))
        for op in subjects.DEPLOYMENT_OPS:
            out.append((f"deployments-{op}", f"{subjects.DEPLOYMENTS}.{op}", self._wrap(op, self.deployment, DeploymentReply)))
        for op in subjects.SECRET_OPS:
            out.append((f"secrets-{op}", f"{subjects.SECRETS}.{op}", self._wrap(op, self.secret, SecretReply)))
        out.append(("quotas", subjects.QUOTAS, self._wrap("quotas", self.quota, QuotaReply)))
        return out

    def _wrap(self, op: str, fn, reply_type: type) -> Handler:
        async def handler(data: bytes, kind: str, received: float) -> Any:
            try:
                await asyncio.wait_for(self.h.ready.wait(), READY_WAIT_S)
            except asyncio.TimeoutError:
                return reply_type(ok=False, node_id=self.h.settings.node_id, error=error_of(
                    ExecutionError(ErrorCode.OVERLOADED, "hosted-strategy storage (JetStream) is not available yet; retry"),
                    op))
            tenant = naming.tenant_token(identity.current())
            try:
                reply = await fn(op, tenant, data, kind)
            except Exception as exc:  # noqa: BLE001 - every failure is a reply with a code
                reply = reply_type(ok=False, error=error_of(exc, f"hosting {op}"))
            reply.node_id = self.h.settings.node_id
            return reply
        return handler

    # -- quotas ----------------------------------------------------------------------------
    async def quota(self, op: str, tenant: str, data: bytes, kind: str) -> QuotaReply:
        decode(data or b"{}", QuotaRequest, kind)  # no options: any field is refused, named
        return QuotaReply(ok=True, tenant=tenant, quotas=await self.quotas.usage(tenant))

    # -- strategies ------------------------------------------------------------------------
    async def strategy(self, op: str, tenant: str, data: bytes, kind: str) -> StrategyReply:
        reg = self.h.registry
        if op == "put":
            version, dropped = await self._put_version(tenant, decode(data, StrategyPut, kind))
            return StrategyReply(ok=True, strategy=version, dropped_versions=dropped)
        ref = decode(data or b"{}", StrategyRef, kind)
        _refuse(ref.name if op == "list" else None, "name", op)
        _refuse(ref.version if op in ("list", "versions", "delete") else None, "version", op)
        if op == "list":
            return StrategyReply(ok=True, strategies=await reg.list(tenant))
        name = _need(ref.name, "name")
        if op == "get":
            return StrategyReply(ok=True, strategy=await reg.get(tenant, name, ref.version))
        if op == "versions":
            return StrategyReply(ok=True, versions=await reg.versions(tenant, name))
        # delete: refused while a deployment runs one of its versions
        users = [d.id for d in await self.h.deployments.list(tenant) if d.strategy == name]
        if users:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"strategy {name!r} is deployed by {', '.join(users[:10])}: delete those first")
        await reg.delete(tenant, name)
        return StrategyReply(ok=True)

    # -- secrets ---------------------------------------------------------------------------
    async def secret(self, op: str, tenant: str, data: bytes, kind: str) -> SecretReply:
        store = self.h.secrets
        if op == "put":
            req = decode(data, SecretPut, kind)
            await self.quotas.before_secret(tenant, req.name)  # a new name within MAX_SECRETS_PER_TENANT
            return SecretReply(ok=True, secret=await store.put(tenant, req.name, req.value))
        ref = decode(data or b"{}", SecretRef, kind)
        if op in ("list", "rotate"):
            _refuse(ref.name, "name", op)
            if op == "list":
                return SecretReply(ok=True, secrets=await store.list(tenant))
            return SecretReply(ok=True, rotated=await store.rotate(tenant))
        name = _need(ref.name, "name")
        users = [d.id for d in await self.h.deployments.list(tenant) if name in d.secrets]
        if users:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"secret {name!r} is named by deployment(s) {', '.join(users[:10])}: "
                                 "update or delete those first")
        await store.delete(tenant, name)
        return SecretReply(ok=True)

    # -- deployments -----------------------------------------------------------------------
    async def deployment(self, op: str, tenant: str, data: bytes, kind: str) -> DeploymentReply:
        deps = self.h.deployments
        if op == "create":
            return await self._create(tenant, decode(data, DeploymentCreate, kind))
        if op == "update":
            return await self._update(tenant, decode(data, DeploymentUpdate, kind))
        if op == "deploy":
            return await self._deploy(tenant, decode(data, DeploymentDeploy, kind))
        ref = decode(data or b"{}", DeploymentRef, kind)
        _refuse(ref.id if op == "list" else None, "id", op)
        _refuse(ref.limit if op not in ("runs", "history", "logs") else None, "limit", op)
        _refuse(ref.symbol if op != "state" else None, "symbol", op)
        if op == "list":
            views = [DeploymentView(deployment=d, status=await deps.status(tenant, d.id))
                     for d in await deps.list(tenant)]
            return DeploymentReply(ok=True, deployments=views)
        dep_id = _need(ref.id, "id")
        if op == "get":
            dep = await deps.get(tenant, dep_id)
            return DeploymentReply(ok=True, deployment=dep, status=await deps.status(tenant, dep_id))
        if op == "runs":
            await deps.get(tenant, dep_id)
            return DeploymentReply(ok=True, runs=await self.h.runner.records(tenant, dep_id, ref.limit or 100))
        if op == "history":
            return _fitted_history(await deps.history(tenant, dep_id, ref.limit or 100), self.h.nc)
        if op == "state":
            dep = await deps.get(tenant, dep_id)
            if ref.symbol is not None and ref.symbol not in dep.symbols:
                raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                     f"invalid request: `$.symbol` {ref.symbol!r} is not one of deployment "
                                     f"{dep_id!r}'s symbols ({', '.join(dep.symbols)})")
            symbols = [ref.symbol] if ref.symbol else dep.symbols
            found = await asyncio.gather(*(self.h.states.current(tenant, dep_id, s) for s in symbols))
            return _fitted_states({s: f for s, f in zip(symbols, found) if f is not None}, self.h.nc)
        if op == "logs":
            await deps.get(tenant, dep_id)  # another tenant's deployment is not found
            return _fitted_logs(await run_logs.tail(self.h.js, tenant, dep_id, ref.limit or 100), self.h.nc)
        if op in ("pause", "resume", "stop"):
            desired = {"pause": "paused", "resume": "running", "stop": "stopped"}[op]
            dep = await deps.change(tenant, dep_id, lambda d: msgspec.structs.replace(d, desired=desired),
                                    how=op, by=_by())
            upcoming = _next_iso(dep)
            status = await deps.set_status(tenant, dep_id, lambda s: _with_state(s, desired, upcoming),
                                           initial=DeploymentStatus(id=dep_id, state="pending", version=dep.version))
            return DeploymentReply(ok=True, deployment=dep, status=status)
        if op == "delete":
            await deps.get(tenant, dep_id)
            await deps.delete(tenant, dep_id)
            await self.h.states.delete(tenant, dep_id)
            await self.h.purge_triggers(tenant, dep_id)
            await schedules.remove(self.h.js, tenant, dep_id)
            return DeploymentReply(ok=True)
        # run: one manual trigger per symbol, on its newest stored bar
        dep = await deps.get(tenant, dep_id)
        if dep.desired == "stopped":
            raise ExecutionError(ErrorCode.INVALID_REQUEST, f"deployment {dep_id!r} is stopped: resume it first")
        first_id = None
        for symbol in dep.symbols:
            bar_ns = await self.h.newest_bar(symbol, dep.timeframe)
            run_id = f"manual-{uuid.uuid4().hex}"
            subject, body, headers = triggers.trigger_message(tenant, dep, symbol, bar_ns, manual_id=run_id)
            sizing.check(self.h.nc, body, headers, "a trigger")
            await self.h.js.publish(subject, body, headers=headers)
            first_id = first_id or run_id
        return DeploymentReply(ok=True, deployment=dep, run_id=first_id)

    async def _put_version(self, tenant: str, req: StrategyPut) -> tuple[Any, list[int]]:
        """A new version within the tenant's quotas (node/hosting/quotas.py): a new name within
        MAX_STRATEGIES_PER_TENANT; beyond MAX_VERSIONS_PER_STRATEGY the oldest versions no
        deployment runs are dropped once it is stored. (the version, the versions dropped)"""
        drop = await self.quotas.before_version(tenant, req.name)
        version = await self.h.registry.put(tenant, req)
        dropped = await self.quotas.drop_versions(tenant, req.name, drop)
        return version, sorted(dropped or [])

    def _check_warm(self, warm: bool | None) -> None:
        if warm and self.h.settings.tenant_warm_runs <= 0:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 "invalid request: `$.warm` needs nodes with warm workers on (TENANT_WARM_RUNS > 0); "
                                 "leave it out to run each bar in a fresh process")

    async def _check_create(self, tenant: str, req: DeploymentCreate, version: int) -> Deployment:
        """Every check of a create (nothing stored): the deployment it would store."""
        await self.quotas.before_deployment(tenant, req.id)  # within MAX_DEPLOYMENTS_PER_TENANT
        run_limits(req, self.h.settings)  # timeout_ms / memory_mb within this node's limits, named
        _no_warm_secrets(req.warm, req.secrets)
        self._check_warm(req.warm)
        await self.h.secrets.require(tenant, list(req.secrets))
        if req.session is not None:
            sessions.check(req.session)
        now = naming.now_iso()
        dep = Deployment(id=req.id, strategy=req.strategy, version=version, symbols=list(req.symbols),
                         timeframe=req.timeframe, lookback=req.lookback, parameters=req.parameters,
                         timeout_ms=req.timeout_ms, memory_mb=req.memory_mb, overlap=req.overlap,
                         desired=req.desired, warm=req.warm, created_at=now, updated_at=now,
                         env=dict(req.env), secrets=list(req.secrets),
                         schedule=req.schedule.strip() if req.schedule else None, tz=req.tz, catchup_s=req.catchup_s,
                         session=req.session, window=req.window.strip() if req.window else None, changed_by=_by())
        _must_fire(dep)
        return dep

    async def _create(self, tenant: str, req: DeploymentCreate, how: str = "create") -> DeploymentReply:
        version = await self.h.registry.get(tenant, req.strategy, req.version)
        dep = await self._check_create(tenant, req, version.version)
        dep.change = how
        await self.h.deployments.create(tenant, dep)
        await self.quotas.keep(tenant, version)  # a drop that raced this create restores nothing else
        if dep.schedule:
            try:
                await schedules.publish(self.h.js, tenant, dep)
            except Exception:
                await self.h.deployments.delete(tenant, dep.id)  # refused: nothing stays behind
                raise
        state = "pending" if req.desired == "running" else req.desired
        upcoming = _next_iso(dep)
        status = await self.h.deployments.set_status(
            tenant, dep.id, lambda s: _fresh(s, state, dep.version, upcoming),
            initial=DeploymentStatus(id=dep.id, state=state, version=dep.version, next_fire=upcoming))
        return DeploymentReply(ok=True, deployment=dep, status=status)

    async def _check_update(self, tenant: str, req: DeploymentUpdate) -> tuple[Deployment, Any, Any]:
        """Every check of an update (nothing stored): the current deployment, the edit and the
        version it moves to (None when it keeps its version)."""
        run_limits(_Limits(req.timeout_ms, req.memory_mb), self.h.settings)
        self._check_warm(req.warm)
        if req.secrets is not None:
            await self.h.secrets.require(tenant, list(req.secrets))
        if req.session:
            sessions.check(req.session)
        current = await self.h.deployments.get(tenant, req.id)
        moved_to = None
        if req.version is not None:
            moved_to = await self.h.registry.get(tenant, current.strategy, req.version)  # must exist

        def edit(d: Deployment) -> Deployment:
            for name in UPDATE_FIELDS:
                value = getattr(req, name)
                if value is not None:
                    setattr(d, name, list(value) if name in ("symbols", "secrets") else value)
            if req.schedule is not None:  # a new schedule comes with its own zone, or none
                d.schedule = req.schedule.strip() or None
                d.tz = req.tz if d.schedule else None
            if req.session is not None:
                d.session = req.session or None
            if req.window is not None:
                d.window = req.window.strip() or None
            if not d.schedule:  # back to every new bar: nothing of the schedule stays
                d.session = None if req.session is None else d.session
                d.window = None if req.window is None else d.window
            _combination(d)
            _must_fire(d)
            return d

        _no_warm_secrets(current.warm if req.warm is None else req.warm,
                         current.secrets if req.secrets is None else req.secrets)
        edit(msgspec.structs.replace(current))  # refused here, before anything is stored
        return current, edit, moved_to

    async def _update(self, tenant: str, req: DeploymentUpdate, how: str = "update") -> DeploymentReply:
        _current, edit, moved_to = await self._check_update(tenant, req)
        dep = await self.h.deployments.change(tenant, req.id, edit, how=how, by=_by())
        if moved_to is not None:
            await self.quotas.keep(tenant, moved_to)  # a drop that raced this move restores nothing else
        if any(getattr(req, f) is not None for f in ("schedule", "tz", "session", "window")):
            if dep.schedule:
                await schedules.publish(self.h.js, tenant, dep)
            else:
                await schedules.remove(self.h.js, tenant, dep.id)
        upcoming = _next_iso(dep)
        status = await self.h.deployments.set_status(tenant, req.id, lambda s: _next(s, upcoming, dep.version))
        return DeploymentReply(ok=True, deployment=dep, status=status)

    async def _deploy(self, tenant: str, req: DeploymentDeploy) -> DeploymentReply:
        """A new version of `strategy` from `code`, then deployment `id` created on it or moved to
        it. Every option is checked first: a refused option stores no version."""
        dep_id = req.id or req.strategy
        current, _ = await self.h.deployments.read(tenant, dep_id)
        given = {f: getattr(req, f) for f in DeploymentDeploy.__struct_fields__
                 if f not in ("strategy", "code", "description", "id") and getattr(req, f) is not None}
        if current is None:
            for field in ("symbols", "timeframe"):
                _need(given.get(field), field)
            for field in ("schedule", "session", "window"):  # "" removes: nothing to remove yet
                if given.get(field) == "":
                    given.pop(field)
            create = _convert({"id": dep_id, "strategy": req.strategy, **given}, DeploymentCreate)
            await self._check_create(tenant, create, 1)
        else:
            if current.strategy != req.strategy:
                raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                     f"invalid request: `$.id` {dep_id!r} deploys strategy {current.strategy!r}, not "
                                     f"{req.strategy!r}: give another id, or delete that deployment first")
            desired = given.pop("desired", None)
            update = _convert({"id": dep_id, **given}, DeploymentUpdate)
            await self._check_update(tenant, update)
        version, dropped = await self._put_version(tenant, StrategyPut(name=req.strategy, code=req.code,
                                                                       description=req.description))
        if current is None:
            create.version = version.version
            reply = await self._create(tenant, create, how="deploy")
        else:
            update.version = version.version
            reply = await self._update(tenant, update, how="deploy")
            if desired is not None and desired != reply.deployment.desired:
                op = {"running": "resume", "paused": "pause", "stopped": "stop"}[desired]
                reply = await self.deployment(op, tenant, msgspec.json.encode({"id": dep_id}), subjects.JSON)
        reply.strategy_version = version.version
        reply.dropped_versions = dropped
        return reply


def _fitted_history(changes: list[Any], nc: Any) -> DeploymentReply:
    """The newest changes whose reply NATS can carry (each revision holds the whole deployment,
    parameters included): the oldest are left out first, and `history_truncated` says so."""
    reply = DeploymentReply(ok=True, history=changes)
    limit = sizing.body_limit(nc) - 512  # node_id and the reply's own fields
    sizes = [len(msgspec.json.encode(c)) + 1 for c in changes]
    total = sum(sizes)
    while reply.history and total > limit:
        total -= sizes.pop(0)
        reply.history = reply.history[1:]
        reply.history_truncated = True
    return reply


def _fitted_states(states: dict[str, dict[str, Any]], nc: Any) -> DeploymentReply:
    """The symbols' states that fit max_payload together, in the deployment's order; the others
    are named in `states_omitted` (each one alone fits: a state is at most 64 KiB)."""
    reply = DeploymentReply(ok=True)
    left = sizing.body_limit(nc) - 512 - sum(len(s) + 8 for s in states)  # node_id, fields, omitted names
    for symbol, state in states.items():
        size = len(msgspec.json.encode(state)) + len(symbol) + 8
        if size <= left:
            reply.states[symbol] = state
            left -= size
        else:
            reply.states_omitted.append(symbol)
    return reply


def _fitted_logs(runs: list[Any], nc: Any) -> DeploymentReply:
    """The newest log lines whose reply NATS can carry: the oldest lines are left out first
    (`logs_truncated` says so)."""
    reply = DeploymentReply(ok=True, logs=runs)
    limit = sizing.body_limit(nc) - 512
    while reply.logs and len(msgspec.json.encode(reply.logs)) > limit:
        oldest = reply.logs[0]
        if len(oldest.lines) > 1:
            oldest.lines = oldest.lines[len(oldest.lines) // 2:]
        else:
            reply.logs = reply.logs[1:]
        reply.logs_truncated = True
    return reply


def _convert(fields: dict[str, Any], type_: type) -> Any:
    try:
        return msgspec.convert(fields, type_)
    except msgspec.ValidationError as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid request: {exc}") from None


def _no_warm_secrets(warm: bool | None, secrets: list[str] | None) -> None:
    """A run with secrets is always a fresh process (the values must not outlive the run)."""
    if warm and secrets:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             "invalid request: `$.warm` cannot be combined with `$.secrets`: a run that holds "
                             "secrets always gets a fresh process; leave one of them out")


def _refuse(value: Any, field: str, op: str) -> None:
    """An option that does not apply to this operation is refused, never ignored."""
    if value is not None:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid request: `$.{field}` does not apply to `{op}`; leave it out")


class _Limits:
    def __init__(self, timeout_ms: int | None, memory_mb: int | None) -> None:
        self.timeout_ms, self.memory_mb = timeout_ms, memory_mb


def _with_state(status: DeploymentStatus, desired: str, next_fire: str | None = None) -> DeploymentStatus:
    status.state = "pending" if desired == "running" and status.runs == 0 else desired
    status.next_fire = next_fire
    return status


def _next(status: DeploymentStatus, next_fire: str | None, version: int) -> DeploymentStatus | None:
    """The status after an update: its next fire and version (None: unchanged, not written)."""
    if (status.next_fire, status.version) == (next_fire, version):
        return None
    status.next_fire, status.version = next_fire, version
    return status


def _fresh(status: DeploymentStatus, state: str, version: int, next_fire: str | None = None) -> DeploymentStatus:
    return DeploymentStatus(id=status.id, state=state, version=version, next_fire=next_fire)
