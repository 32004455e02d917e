"""`strategy.v1.health`: liveness, limits and which isolation layers are really active."""

from __future__ import annotations

from typing import Literal

import msgspec


class IsolationLayer(msgspec.Struct, kw_only=True):
    name: str
    active: bool
    detail: str = ""


class Limits(msgspec.Struct, kw_only=True):
    max_workers: int
    max_queue: int
    max_timeout_seconds: float
    max_memory_mb: int
    max_code_chars: int
    max_bars: int
    # per-tenant quotas of hosted objects (contracts/quotas.py; `strategy.v1.quotas` gives a
    # tenant its own counts); None from a node older than these fields
    max_strategies_per_tenant: int | None = None
    max_versions_per_strategy: int | None = None
    max_deployments_per_tenant: int | None = None
    max_secrets_per_tenant: int | None = None


class PoolState(msgspec.Struct, kw_only=True):
    ready: int
    busy: int
    target: int
    started: int
    healthy: bool
    warm_workers: int = 0  # opt-in per-tenant warm workers alive now (0 when the mode is off)
    warm_tenants: int = 0


class JobsState(msgspec.Struct, kw_only=True):
    """The durable-job consumer of this node (absent when the node does not take jobs)."""

    state: Literal["starting", "consuming", "unavailable", "draining", "stopped"]
    stream: str
    consumer: str
    running: int = 0
    completed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    skipped_duplicates: int = 0
    last_error: str | None = None


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok", "degraded", "draining"]
    version: str
    node_id: str
    uptime_s: float
    nats_connected: bool
    in_flight: int
    queued: int
    limits: Limits
    pool: PoolState
    isolation: list[IsolationLayer]
    jobs: JobsState | None = None
    # True when the operator set TRUST_BODY_USER_ID: a request's body `user_id` then picks its
    # tenant (warm worker) even without an identity NATS vouches for. False: only a verified
    # NATS identity (Nats-Request-Info of an imported request, a job's account token) does.
    trust_body_user_id: bool = False
    # The node's own NATS account. Tenants are verified only when it is an account of its own
    # that tenants import from; null (unknown) or "$G" (a server without accounts): none is.
    nats_account: str | None = None
