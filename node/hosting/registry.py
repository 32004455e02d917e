"""The strategy registry: a tenant's named sources, every change a new immutable version.

A put is validated exactly as `strategy.v1.validate` validates (the node's compile cache:
RestrictedPython compile + policy check); a refused source is not stored and the reply carries
the same COMPILE_ERROR / SECURITY_VIOLATION. Versions are KV keys created with `create`, so
two concurrent puts never share a version number and a stored version never changes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec
import nats.js.errors

from contracts import ErrorCode, ExecutionError
from contracts.hosting import StrategyPut, StrategySummary, StrategyVersion
from sandbox.compiler import CompileCache

from ..jobs import check_language
from . import naming, streams

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StrategyVersion)
PUT_ATTEMPTS = 20
VERSIONS_CACHED = 1024


def encoded(record: StrategyVersion) -> bytes:
    """A version as the registry stores it (its Key-Value value)."""
    return _encoder.encode(record)


def not_found(what: str) -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_REQUEST, f"{what} not found")


class Registry:
    def __init__(self, kv: Any, cache: CompileCache) -> None:
        self.kv = kv
        self.cache = cache
        self._versions_seen: OrderedDict[tuple[str, str, int], StrategyVersion] = OrderedDict()

    async def _keys(self, prefix: str) -> list[str]:
        return await streams.keys(self.kv, prefix)

    async def _versions(self, tenant: str, name: str) -> list[int]:
        keys = await self._keys(naming.strategy_prefix(tenant, name))
        return sorted(int(k.rsplit(".", 1)[1]) for k in keys)

    async def put(self, tenant: str, req: StrategyPut) -> StrategyVersion:
        check_language(req.language)
        compiled, _hit = self.cache.get(req.code)  # raises COMPILE_ERROR / SECURITY_VIOLATION
        for _ in range(PUT_ATTEMPTS):
            versions = await self._versions(tenant, req.name)
            version = (versions[-1] if versions else 0) + 1
            record = StrategyVersion(name=req.name, version=version, code=req.code, style=compiled.style,
                                     language=req.language, description=req.description,
                                     created_at=naming.now_iso())
            try:
                await self.kv.create(naming.strategy_key(tenant, req.name, version), _encoder.encode(record))
                return record
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # a concurrent put took this version: take the next
        raise ExecutionError(ErrorCode.OVERLOADED, f"strategy {req.name!r} is being changed concurrently; retry")

    async def version(self, tenant: str, name: str, version: int) -> StrategyVersion:
        """A stored version for a run: versions never change, so each node keeps the last
        VERSIONS_CACHED it read (a deleted strategy has no deployment left to run it)."""
        key = (tenant, name, version)
        found = self._versions_seen.get(key)
        if found is None:
            found = await self.get(tenant, name, version)
            self._versions_seen[key] = found
            while len(self._versions_seen) > VERSIONS_CACHED:
                self._versions_seen.popitem(last=False)
        return found

    async def get(self, tenant: str, name: str, version: int | None = None) -> StrategyVersion:
        if version is None:  # the newest version still stored (deleted keys are listed too)
            for candidate in reversed(await self._versions(tenant, name)):
                try:
                    return await self.get(tenant, name, candidate)
                except ExecutionError:
                    continue
            raise not_found(f"strategy {name!r}")
        try:
            entry = await self.kv.get(naming.strategy_key(tenant, name, version))
        except nats.js.errors.KeyNotFoundError:
            raise not_found(f"strategy {name!r} version {version}") from None
        if not entry.value:
            raise not_found(f"strategy {name!r} version {version}")
        return _decoder.decode(entry.value)

    async def versions(self, tenant: str, name: str) -> list[StrategyVersion]:
        found = []
        for v in await self._versions(tenant, name):
            try:
                found.append(await self.get(tenant, name, v))
            except ExecutionError:
                continue  # deleted
        if not found:
            raise not_found(f"strategy {name!r}")
        return found

    async def list(self, tenant: str) -> list[StrategySummary]:
        by_name: dict[str, list[int]] = {}
        for key in await self._keys(naming.strategy_prefix(tenant)):
            _tenant, name, version = key.split(".")
            by_name.setdefault(name, []).append(int(version))
        out = []
        for name in sorted(by_name):
            try:
                stored = await self.versions(tenant, name)
            except ExecutionError:
                continue  # deleted
            latest = stored[-1]
            out.append(StrategySummary(name=name, latest=latest.version, versions=len(stored),
                                       style=latest.style, created_at=latest.created_at))
        return out

    async def delete(self, tenant: str, name: str) -> int:
        versions = [v.version for v in await self.versions(tenant, name)]  # not found when none is stored
        for version in versions:
            await self.kv.purge(naming.strategy_key(tenant, name, version))
        return len(versions)
