"""Python client operations for hosted strategies (also reached as `StrategyClient.hosting`).

    hosting = HostingClient(nc)
    await hosting.put_strategy("sma", code)
    await hosting.create_deployment("sma-live", strategy="sma", symbols=["AAPL"], timeframe="1m")
    await hosting.deploy_file("sma.py", symbols=["AAPL"], timeframe="1m", schedule="open+5m", session="XNYS")
    (await hosting.history("sma")).history       # who changed what, when
    (await hosting.quotas()).quotas              # each limit and what this tenant has now
    async for signal in hosting.follow_signals("sma-live"): ...

Each call is one request on `strategy.v1.strategies.*` / `strategy.v1.deployments.*`; a reply
with `ok: false` raises `HostingError` (its `.error` has the code and message). Following reads
the live subjects `signals.<tenant>.<deployment>.>` / `strategy.logs.<tenant>.<deployment>`; the
tenant is `local` on a server without accounts, or the account name (give `tenant=`) when the
tenant's account imports those streams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, AsyncIterator

import msgspec

from contracts import ErrorInfo, Signal, decode, encode, subjects
from contracts.hosting import (
    DeploymentCreate,
    DeploymentDeploy,
    DeploymentRef,
    DeploymentReply,
    DeploymentUpdate,
    RunLogs,
    StrategyPut,
    StrategyRef,
    StrategyReply,
)
from contracts.quotas import QuotaReply, QuotaRequest
from contracts.secrets import SecretPut, SecretRef, SecretReply

from .naming import LOCAL_TENANT


class HostingError(Exception):
    def __init__(self, error: ErrorInfo | None) -> None:
        self.error = error
        super().__init__(f"{error.code}: {error.message}" if error else "request failed")


class HostingClient:
    def __init__(self, nc: Any, *, timeout: float = 10.0, tenant: str = LOCAL_TENANT) -> None:
        self.nc = nc
        self.timeout = timeout
        self.tenant = tenant

    async def _call(self, subject: str, message: Any, reply_type: type, check: bool = True) -> Any:
        msg = await self.nc.request(subject, encode(message), timeout=self.timeout,
                                    headers={subjects.CONTENT_TYPE: subjects.JSON})
        reply = decode(msg.data, reply_type)
        if check and not reply.ok:
            raise HostingError(reply.error)
        return reply

    # -- strategies ------------------------------------------------------------------------
    async def put_strategy(self, name: str, code: str, description: str = "") -> StrategyReply:
        return await self._call(f"{subjects.STRATEGIES}.put", StrategyPut(name=name, code=code, description=description),
                                StrategyReply)

    async def get_strategy(self, name: str, version: int | None = None) -> StrategyReply:
        return await self._call(f"{subjects.STRATEGIES}.get", StrategyRef(name=name, version=version), StrategyReply)

    async def list_strategies(self) -> StrategyReply:
        return await self._call(f"{subjects.STRATEGIES}.list", StrategyRef(), StrategyReply)

    async def strategy_versions(self, name: str) -> StrategyReply:
        return await self._call(f"{subjects.STRATEGIES}.versions", StrategyRef(name=name), StrategyReply)

    async def delete_strategy(self, name: str) -> StrategyReply:
        return await self._call(f"{subjects.STRATEGIES}.delete", StrategyRef(name=name), StrategyReply)

    # -- deployments -----------------------------------------------------------------------
    async def create_deployment(self, id: str, *, strategy: str, symbols: list[str], timeframe: str,
                                **fields: Any) -> DeploymentReply:
        req = DeploymentCreate(id=id, strategy=strategy, symbols=symbols, timeframe=timeframe, **fields)
        return await self._call(f"{subjects.DEPLOYMENTS}.create", req, DeploymentReply)

    async def update_deployment(self, id: str, **fields: Any) -> DeploymentReply:
        return await self._call(f"{subjects.DEPLOYMENTS}.update", DeploymentUpdate(id=id, **fields), DeploymentReply)

    async def deployment(self, op: str, id: str | None = None, limit: int | None = None,
                         symbol: str | None = None) -> DeploymentReply:
        """get, list, pause, resume, stop, delete, run, runs, history, state or logs."""
        if op not in subjects.DEPLOYMENT_OPS or op in ("create", "update", "deploy"):
            raise ValueError(f"unknown deployment operation {op!r}")
        return await self._call(f"{subjects.DEPLOYMENTS}.{op}", DeploymentRef(id=id, limit=limit, symbol=symbol),
                                DeploymentReply)

    async def get_deployment(self, id: str) -> DeploymentReply:
        return await self.deployment("get", id)

    async def list_deployments(self) -> DeploymentReply:
        return await self.deployment("list")

    async def pause(self, id: str) -> DeploymentReply:
        return await self.deployment("pause", id)

    async def resume(self, id: str) -> DeploymentReply:
        return await self.deployment("resume", id)

    async def stop(self, id: str) -> DeploymentReply:
        return await self.deployment("stop", id)

    async def delete_deployment(self, id: str) -> DeploymentReply:
        return await self.deployment("delete", id)

    async def run_now(self, id: str) -> DeploymentReply:
        return await self.deployment("run", id)

    async def runs(self, id: str, limit: int = 100) -> DeploymentReply:
        return await self.deployment("runs", id, limit)  # the newest `limit` records

    async def history(self, id: str, limit: int = 100) -> DeploymentReply:
        """The deployment's changes, oldest first (`history`: DeploymentChange with revision, at,
        by, change and the fields `changed`), the newest `limit` of those kept (up to 64)."""
        return await self.deployment("history", id, limit)

    async def state(self, id: str, symbol: str | None = None) -> DeploymentReply:
        """The deployment's current `state` per symbol (`states`; `states_omitted`: symbols whose
        state did not fit one reply, ask for each with `symbol`). Read by the node for the
        verified caller, so a tenant in an account of its own gets it too."""
        return await self.deployment("state", id, symbol=symbol)

    async def logs(self, id: str, limit: int = 100) -> DeploymentReply:
        """The deployment's last `limit` log lines (`logs`: RunLogs, newest last;
        `logs_truncated` when older ones were left out to fit the reply)."""
        return await self.deployment("logs", id, limit)

    async def deploy(self, code: str, *, strategy: str, id: str | None = None, description: str = "",
                     **fields: Any) -> DeploymentReply:
        """Store `code` as a new version of `strategy` and create deployment `id` (default: the
        strategy's name) on it, or move that deployment to it (then only the `fields` given
        change). `reply.strategy_version` is the new version."""
        req = DeploymentDeploy(strategy=strategy, code=code, description=description, id=id, **fields)
        return await self._call(f"{subjects.DEPLOYMENTS}.deploy", req, DeploymentReply)

    async def deploy_file(self, path: str | Path, *, strategy: str | None = None, **fields: Any) -> DeploymentReply:
        """`deploy` of a strategy file; the strategy is named after the file's stem by default."""
        path = Path(path)
        return await self.deploy(path.read_text(encoding="utf-8"), strategy=strategy or path.stem, **fields)

    # -- secrets (values go in, never come back) ---------------------------------------------
    async def set_secret(self, name: str, value: str) -> SecretReply:
        return await self._call(f"{subjects.SECRETS}.put", SecretPut(name=name, value=value), SecretReply)

    async def list_secrets(self) -> SecretReply:
        return await self._call(f"{subjects.SECRETS}.list", SecretRef(), SecretReply)

    async def delete_secret(self, name: str) -> SecretReply:
        return await self._call(f"{subjects.SECRETS}.delete", SecretRef(name=name), SecretReply)

    async def rotate_secrets(self) -> SecretReply:
        """Re-encrypt this tenant's secrets under the nodes' newest key (`rotated`: how many)."""
        return await self._call(f"{subjects.SECRETS}.rotate", SecretRef(), SecretReply)

    # -- quotas ----------------------------------------------------------------------------
    async def quotas(self) -> QuotaReply:
        """This tenant's quotas: each limit, its node setting and what the tenant has now."""
        return await self._call(subjects.QUOTAS, QuotaRequest(), QuotaReply)

    # -- following -------------------------------------------------------------------------
    async def follow_signals(self, deployment: str) -> AsyncIterator[tuple[str, Signal]]:
        """(symbol, signal) as they are published, live."""
        prefix = f"{subjects.SIGNALS}.{self.tenant}.{deployment}."
        sub = await self.nc.subscribe(prefix + ">")
        try:
            async for msg in sub.messages:
                yield msg.subject[len(prefix):], msgspec.json.decode(msg.data, type=Signal)
        finally:
            await sub.unsubscribe()

    async def follow_logs(self, deployment: str) -> AsyncIterator[RunLogs]:
        sub = await self.nc.subscribe(f"{subjects.LOGS}.{self.tenant}.{deployment}")
        try:
            async for msg in sub.messages:
                yield msgspec.json.decode(msg.data, type=RunLogs)
        finally:
            await sub.unsubscribe()
