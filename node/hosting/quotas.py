"""Per-tenant quotas of hosted objects: strategies, versions per strategy, deployments, secrets.

Only creating operations are limited (a new strategy name, a new version, a new deployment
id, a new secret name); an update of an existing object and every delete pass. What a tenant
has is counted from the Key-Value keys under its prefix at the moment of the request
(nothing is kept in a node's memory: any node of the fleet may serve the next request):

* strategies: names under `STRATEGIES <tenant>.>` with at least one live version;
* versions: live keys under `STRATEGIES <tenant>.<name>.>`;
* deployments: live keys under `DEPLOYMENTS <tenant>.>`;
* secrets: live keys under `SECRETS <tenant>.>`.

A key is live when its last entry is a value, not a delete or purge marker; `live_keys` reads
only the headers of each key's last entry (one ordered, headers-only consumer).

At MAX_VERSIONS_PER_STRATEGY a new version is stored and the oldest versions no deployment
runs are dropped (a retention policy, as users of hosting products know it from release
histories: `deploy` on every edit keeps working, and the protocol has no way to delete one
version). A version a deployment runs is never dropped: when every stored version is run by a
deployment the new one is refused. A dropped version is removed from the stream (no marker), so
its number is never taken again (a newer version always stays). After a drop the deployments are
read again and a version one of them took meanwhile is written back; and a create or move of a
deployment reads its version again after its own write and stores it again if a drop purged it
meanwhile (`keep`): whichever of the two reads comes second sees the other's write, so no
deployment is left on a dropped version.

Exactness: the count is taken just before the create, without a lock, so N concurrent creates
of one tenant that all read the same count may together overshoot a limit by at most N - 1
(KV offers no atomic count-and-create across keys). The next create after them sees the true
count and is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import nats.js.errors
from nats.js.api import DeliverPolicy

from contracts import ErrorCode, ExecutionError
from contracts.quotas import Quota

from .. import nats_internals
from . import naming, registry

log = logging.getLogger("node.hosting")
READ_S = 5.0
_MARKERS = ("DEL", "PURGE")


async def live_keys(kv: Any, pattern: str) -> list[str]:
    """The keys matching `pattern` whose last entry is a value (deleted and purged keys left out),
    read as headers only: one message per key, never the values."""
    js, stream, prefix = nats_internals.kv_parts(kv)
    subject = prefix + pattern
    info = await js.stream_info(stream, subjects_filter=subject)
    if not info.state.subjects:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, headers_only=True,
                                 deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
    live: list[str] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=READ_S)
            except asyncio.TimeoutError:
                # the keys listed a moment ago are gone (purged meanwhile): nothing more comes
                break
            if (msg.headers or {}).get("KV-Operation") not in _MARKERS:
                live.append(msg.subject[len(prefix):])
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return live


def refused(tenant: str, count: int, what: str, setting: str, action: str = "remove one first") -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_REQUEST,
                          f"tenant {tenant} has {count} {what}, the most {setting} allows: {action}")


class Quotas:
    """The checks of the control path; `hosting` gives the buckets (read at each call) and settings."""

    def __init__(self, hosting: Any) -> None:
        self.h = hosting

    # -- what a tenant has -----------------------------------------------------------------
    async def usage(self, tenant: str) -> list[Quota]:
        """Each quota of `tenant` with what it has now (`strategy.v1.quotas`, contracts/quotas.py),
        counted the way the checks below count."""
        s = self.h.settings
        strategy_keys, deployments, secrets = await asyncio.gather(
            live_keys(self.h.registry.kv, naming.strategy_prefix(tenant)),
            live_keys(self.h.deployments.kv, f"{tenant}.>"),
            live_keys(self.h.secrets.kv, f"{tenant}.>"))
        per_name = Counter(k.split(".")[1] for k in strategy_keys)
        # the strategy with the most versions (the first name of those tied)
        most = max(sorted(per_name.items()), key=lambda item: item[1], default=(None, 0))
        return [
            Quota(name="strategies", setting="MAX_STRATEGIES_PER_TENANT", limit=s.max_strategies_per_tenant,
                  used=len(per_name), at_limit="refused"),
            Quota(name="versions_per_strategy", setting="MAX_VERSIONS_PER_STRATEGY",
                  limit=s.max_versions_per_strategy, used=most[1], at_limit="oldest_unused_dropped",
                  strategy=most[0]),
            Quota(name="deployments", setting="MAX_DEPLOYMENTS_PER_TENANT", limit=s.max_deployments_per_tenant,
                  used=len(deployments), at_limit="refused"),
            Quota(name="secrets", setting="MAX_SECRETS_PER_TENANT", limit=s.max_secrets_per_tenant,
                  used=len(secrets), at_limit="refused"),
        ]

    # -- strategies and versions -----------------------------------------------------------
    async def versions(self, tenant: str, name: str) -> list[int]:
        keys = await live_keys(self.h.registry.kv, naming.strategy_prefix(tenant, name))
        return sorted(int(k.rsplit(".", 1)[1]) for k in keys)

    async def before_version(self, tenant: str, name: str) -> list[int]:
        """Checks a new version of strategy `name` (nothing stored): refused when it is a new
        name beyond MAX_STRATEGIES_PER_TENANT, or when every version it would have to drop is
        run by a deployment. Returns the versions to drop once the new one is stored."""
        settings = self.h.settings
        stored = await self.versions(tenant, name)
        if not stored:
            names = {k.split(".")[1] for k in await live_keys(self.h.registry.kv, naming.strategy_prefix(tenant))}
            names.discard(name)
            if len(names) >= settings.max_strategies_per_tenant:
                raise refused(tenant, len(names), "strategies", "MAX_STRATEGIES_PER_TENANT",
                              "delete one first")
            return []
        excess = len(stored) + 1 - settings.max_versions_per_strategy
        if excess <= 0:
            return []
        used = await self._used(tenant, name)
        unused = [v for v in stored if v not in used]
        if len(unused) < excess:
            raise ExecutionError(
                ErrorCode.INVALID_REQUEST,
                f"strategy {name!r} of tenant {tenant} has {len(stored)} versions, the most "
                f"MAX_VERSIONS_PER_STRATEGY allows, and the oldest are dropped only when no deployment runs "
                f"them; deployments run {len(used & set(stored))} of them: move or delete a deployment first")
        return unused[:excess]

    async def _used(self, tenant: str, name: str) -> set[int]:
        return {d.version for d in await self.h.deployments.list(tenant) if d.strategy == name}

    async def drop_versions(self, tenant: str, name: str, versions: list[int]) -> list[int]:
        """Removes the given old versions (after the new one is stored); a version a deployment
        took meanwhile is written back. Returns the versions dropped."""
        if not versions:
            return []
        kv = self.h.registry.kv
        kept: dict[int, bytes] = {}
        try:
            for v in versions:
                key = naming.strategy_key(tenant, name, v)
                try:
                    value = (await kv.get(key)).value
                except nats.js.errors.KeyNotFoundError:
                    continue  # gone already (a concurrent drop or delete)
                if not value:
                    continue
                kept[v] = value
                js, stream, prefix = nats_internals.kv_parts(kv)
                await js.purge_stream(stream, subject=prefix + key)  # no marker left behind
        except Exception as exc:  # noqa: BLE001 - the new version is stored: the next put drops the rest
            log.warning("strategy %s.%s: dropping old versions stopped: %s", tenant, name, exc)
        taken = await self._used(tenant, name)
        for v in [v for v in kept if v in taken]:  # a deployment moved onto it while we dropped
            await kv.create(naming.strategy_key(tenant, name, v), kept[v])
        return [v for v in kept if v not in taken]

    async def keep(self, tenant: str, record: Any) -> bool:
        """After a deployment was written on version `record` (a StrategyVersion): when a put
        dropped that version between the deployment's check and its write, store it again.
        True when it did.

        The drop purges, then reads the deployments; the create or move writes its deployment,
        then reads the version here. Whichever read comes second sees the other's write: the
        drop finds the deployment and writes the version back, or this read finds the version
        gone and writes it back. A version the user deleted (a delete marker) is not brought back.
        """
        kv = self.h.registry.kv
        key = naming.strategy_key(tenant, record.name, record.version)
        try:
            await kv.get(key)
            return False
        except nats.js.errors.KeyDeletedError:
            return False
        except nats.js.errors.KeyNotFoundError:
            pass  # purged by a drop: no marker
        try:
            await kv.create(key, registry.encoded(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            return False  # the drop wrote it back first
        log.info("strategy %s.%s: version %d, dropped while a deployment was set on it, is stored again",
                 tenant, record.name, record.version)
        return True

    # -- deployments and secrets -----------------------------------------------------------
    async def before_deployment(self, tenant: str, deployment: str) -> None:
        """A new deployment id beyond MAX_DEPLOYMENTS_PER_TENANT is refused (an existing id is
        left to the create, which says it exists)."""
        keys = await live_keys(self.h.deployments.kv, f"{tenant}.>")
        if naming.deployment_key(tenant, deployment) in keys:
            return
        limit = self.h.settings.max_deployments_per_tenant
        if len(keys) >= limit:
            raise refused(tenant, len(keys), "deployments", "MAX_DEPLOYMENTS_PER_TENANT")

    async def before_secret(self, tenant: str, name: str) -> None:
        """A new secret name beyond MAX_SECRETS_PER_TENANT is refused; replacing one passes."""
        keys = await live_keys(self.h.secrets.kv, f"{tenant}.>")
        if naming.deployment_key(tenant, name) in keys:
            return
        if len(keys) >= self.h.settings.max_secrets_per_tenant:
            raise refused(tenant, len(keys), "secrets", "MAX_SECRETS_PER_TENANT")
