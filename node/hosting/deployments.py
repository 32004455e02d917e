"""Deployments and their status.

A deployment binds one strategy version to symbols x a timeframe with a lookback, parameters,
limits, an overlap policy and a desired state (running, paused, stopped). Its record lives in
KV DEPLOYMENTS, its status in KV DEPLOYMENT_STATUS (history kept: every change is an event a
client can watch with `kv.watch("<tenant>.<deployment>")`). Both are changed with
compare-and-set, so concurrent control requests and runs on other nodes never lose an update.

Each revision of a deployment says who made it (`changed_by`, the verified NATS identity) and
how (`change`); `history` reads the key's revisions kept by the bucket (HISTORY, the most
Key-Value keeps) and tells what changed between them.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import msgspec
import nats.js.errors

from contracts import ErrorCode, ExecutionError
from contracts.hosting import Deployment, DeploymentChange, DeploymentStatus

from .. import nats_internals, sizing
from . import naming, streams

_json = msgspec.json.Encoder()
_deployment = msgspec.json.Decoder(Deployment)
_status = msgspec.json.Decoder(DeploymentStatus)
CAS_ATTEMPTS = 50

STATE_OF_DESIRED = {"running": "running", "paused": "paused", "stopped": "stopped"}
HISTORY_READ_S = 5.0
# what a revision is about, not who or when it was written
_BOOKKEEPING = {"created_at", "updated_at", "changed_by", "change"}


def not_found(deployment: str) -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_REQUEST, f"deployment {deployment!r} not found")


class Deployments:
    def __init__(self, kv: Any, status_kv: Any, max_payload: Any = sizing.DEFAULT_MAX_PAYLOAD) -> None:
        self.kv = kv
        self.status_kv = status_kv
        self.max_payload = max_payload  # the connection (its INFO) or an int: node/sizing.py

    def _sized(self, value: bytes, what: str) -> bytes:
        """Every value is sized before it is published: KV puts carry a few headers, so a value
        may take the body limit (max_payload less node/sizing.py's header room)."""
        limit = sizing.body_limit(self.max_payload)
        if len(value) > limit:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"{what} would be {len(value):,} bytes; this NATS server stores at most {limit:,}: "
                                 "send smaller parameters")
        return value

    # -- deployments -----------------------------------------------------------------------
    async def read(self, tenant: str, deployment: str) -> tuple[Deployment | None, int | None]:
        try:
            entry = await self.kv.get(naming.deployment_key(tenant, deployment))
        except nats.js.errors.KeyNotFoundError:
            return None, None
        if not entry.value:
            return None, None
        return _deployment.decode(entry.value), entry.revision

    async def get(self, tenant: str, deployment: str) -> Deployment:
        found, _ = await self.read(tenant, deployment)
        if found is None:
            raise not_found(deployment)
        return found

    async def create(self, tenant: str, deployment: Deployment) -> None:
        deployment.change = deployment.change or "create"
        try:
            await self.kv.create(naming.deployment_key(tenant, deployment.id),
                                 self._sized(_json.encode(deployment), "the deployment"))
        except nats.js.errors.KeyWrongLastSequenceError:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"deployment {deployment.id!r} exists: update it, or delete it first") from None

    async def change(self, tenant: str, deployment: str,
                     edit: Callable[[Deployment], Deployment], how: str = "update", by: str = "") -> Deployment:
        for _ in range(CAS_ATTEMPTS):
            current, revision = await self.read(tenant, deployment)
            if current is None:
                raise not_found(deployment)
            changed = edit(msgspec.structs.replace(current))
            changed.updated_at = naming.now_iso()
            changed.change, changed.changed_by = how, by
            try:
                await self.kv.update(naming.deployment_key(tenant, deployment),
                                     self._sized(_json.encode(changed), "the deployment"), last=revision)
                return changed
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise ExecutionError(ErrorCode.OVERLOADED, f"deployment {deployment!r} is changing concurrently; retry")

    async def history(self, tenant: str, deployment: str, limit: int = 100) -> list[DeploymentChange]:
        """The deployment's revisions still kept, oldest first (the newest `limit`), each with the
        fields that differ from the revision before it. Read with an ordered consumer on the
        key's subject until the server says nothing is pending (not a KV watch, whose
        end-of-values marker can come before a delivered value)."""
        import asyncio

        js, stream, prefix = nats_internals.kv_parts(self.kv)
        subject = prefix + naming.deployment_key(tenant, deployment)
        info = await js.stream_info(stream, subjects_filter=subject)
        if not (info.state.subjects or {}).get(subject):
            raise not_found(deployment)
        sub = await js.subscribe(subject, ordered_consumer=True)
        records: list[tuple[int, Deployment | None]] = []
        try:
            while True:
                msg = await sub.next_msg(timeout=HISTORY_READ_S)
                op = (msg.headers or {}).get("KV-Operation")
                records.append((msg.metadata.sequence.stream,
                                None if op in ("DEL", "PURGE") or not msg.data else _deployment.decode(msg.data)))
                if msg.metadata.num_pending == 0:
                    break
        except asyncio.TimeoutError:
            raise ExecutionError(ErrorCode.OVERLOADED, f"history of {deployment!r} could not be read in time; retry")
        finally:
            await sub.unsubscribe()
        if records[-1][1] is None:
            raise not_found(deployment)
        out: list[DeploymentChange] = []
        before: Deployment | None = None
        for revision, dep in records:
            if dep is None:  # deleted and made again: a new life
                before = None
                out.clear()
                continue
            out.append(DeploymentChange(revision=revision, at=dep.updated_at, by=dep.changed_by,
                                        change=dep.change or ("create" if before is None else "update"),
                                        changed=_changed(before, dep), deployment=dep))
            before = dep
        return out[-limit:]

    async def delete(self, tenant: str, deployment: str) -> None:
        await self.kv.purge(naming.deployment_key(tenant, deployment))
        await self.status_kv.purge(naming.deployment_key(tenant, deployment))

    async def list(self, tenant: str) -> list[Deployment]:
        keys = await streams.keys(self.kv, f"{tenant}.>")
        out = []
        for key in sorted(keys):
            found, _ = await self.read(tenant, key.split(".", 1)[1])
            if found is not None:
                out.append(found)
        return out

    # -- status ----------------------------------------------------------------------------
    async def status(self, tenant: str, deployment: str) -> DeploymentStatus | None:
        try:
            entry = await self.status_kv.get(naming.deployment_key(tenant, deployment))
        except nats.js.errors.KeyNotFoundError:
            return None
        return _status.decode(entry.value) if entry.value else None

    async def set_status(self, tenant: str, deployment: str,
                         edit: Callable[[DeploymentStatus], DeploymentStatus | None] | Callable[
                             [DeploymentStatus], Awaitable[DeploymentStatus | None]],
                         initial: DeploymentStatus | None = None) -> DeploymentStatus | None:
        """Apply `edit` to the status with compare-and-set; `initial` when there is none yet
        (without it a missing status means the deployment is gone: nothing is written)."""
        key = naming.deployment_key(tenant, deployment)
        for _ in range(CAS_ATTEMPTS):
            try:
                entry = await self.status_kv.get(key)
                current, revision = (_status.decode(entry.value) if entry.value else None), entry.revision
            except nats.js.errors.KeyNotFoundError:
                current, revision = None, None
            if current is None:
                if initial is None:
                    return None
                current = msgspec.structs.replace(initial)
            changed = edit(current)
            if changed is None:
                return current
            changed.updated_at = naming.now_iso()
            changed.seq = current.seq + 1
            value = self._sized(_json.encode(changed), "the status")
            try:
                if revision is None:
                    await self.status_kv.create(key, value)
                else:
                    await self.status_kv.update(key, value, last=revision)
                return changed
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
        raise ExecutionError(ErrorCode.OVERLOADED, f"status of {deployment!r} is changing concurrently; retry")


def _changed(before: Deployment | None, after: Deployment) -> list[str]:
    fields = [f for f in after.__struct_fields__ if f not in _BOOKKEEPING]
    if before is None:
        return fields
    return [f for f in fields if getattr(before, f) != getattr(after, f)]
