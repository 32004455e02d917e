"""Node settings from environment variables; one frozen object read once at start."""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from contracts import limits as contract_limits


def _number(env: Mapping[str, str], name: str, default, low, high, cast=float):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int)


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float)


@dataclass(frozen=True)
class Settings:
    nats_url: str | None = None
    max_workers: int = 4
    max_queue: int = 256
    # Payload bytes a node holds for admitted work (requests, grid points, jobs); 0 = unbounded.
    max_inflight_bytes: int = 64 * 1024 * 1024
    max_timeout_seconds: float = 30.0
    max_memory_mb: int = 512
    default_timeout_ms: int = 10_000
    default_memory_mb: int = 256
    ready_children: int = 4
    drain_timeout_seconds: float = 30.0
    log_level: str = "INFO"
    environment: str = "development"
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}")
    sandbox_disable: str = ""
    sandbox_prewarm: bool = True
    embedded_port: int = 4222
    embedded_store: str | None = None
    role: str = "all"
    heartbeat_file: str = "/tmp/strategy-node.heartbeat"
    # Exit (status 1) after this long disconnected from NATS; the liveness probe fails first.
    nats_disconnected_exit_seconds: float = 60.0
    # Durable jobs (node/durable.py): replicas of STRATEGY_JOBS/RESULTS/DEAD, redelivery policy.
    jobs_replicas: int = 1
    jobs_ack_wait_seconds: float = 30.0
    jobs_max_deliver: int = 5
    jobs_backoff_seconds: tuple[float, ...] = ()
    jobs_result_ttl_seconds: float = 86_400.0
    jobs_duplicate_window_seconds: float = 600.0
    # Durable jobs' push replies (Strategy-Reply-To): {tenant account: its clients' inbox
    # prefixes}. A tenant's job may name a reply subject only below one of its own account's
    # prefixes; an account with none gets no push replies (its jobs' results are stored).
    job_reply_prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Opt-in warm workers per tenant (sandbox/warm.py): runs per worker; 0 keeps a fresh
    # process for every run.
    tenant_warm_runs: int = 0
    tenant_warm_workers: int = 2
    tenant_warm_max: int = 4
    tenant_warm_idle_seconds: float = 60.0
    # Trust a request's body `user_id` as its tenant when NATS proves none (node/identity.py);
    # for closed networks only, and reported in Health.
    trust_body_user_id: bool = False
    # Hosted-strategy secrets (node/hosting/secrets.py): the key-encryption key(s), from a mounted
    # file (read at start) or the variable itself; never shown in repr or Health.
    secrets_key_file: str = ""
    secrets_key: str = field(default="", repr=False)
    # Per-tenant quotas of hosted objects (node/hosting/quotas.py): creating operations beyond
    # them are refused with INVALID_REQUEST; at the versions limit the oldest unused are dropped.
    max_strategies_per_tenant: int = 200
    max_versions_per_strategy: int = 100
    max_deployments_per_tenant: int = 100
    max_secrets_per_tenant: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env
        cores = os.cpu_count() or 2
        workers = _int(env, "MAX_WORKERS", max(2, cores * 2), 1, 1024)
        max_timeout = _float(env, "MAX_TIMEOUT_SECONDS", 30.0, 0.01, contract_limits.MAX_TIMEOUT_MS / 1000)
        max_memory = _int(env, "MAX_MEMORY_MB", 512, contract_limits.MIN_MEMORY_MB, contract_limits.MAX_MEMORY_MB)
        level = env.get("LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {level!r}")
        role = env.get("NODE_ROLE", "all").lower()
        if role not in ("all", "requests", "jobs"):
            raise ValueError(f"NODE_ROLE must be all, requests or jobs, got {role!r}")
        return cls(
            nats_url=env.get("NATS_URL") or None,
            max_workers=workers,
            max_queue=_int(env, "MAX_QUEUE", workers * 64, 0, 1_000_000),
            max_inflight_bytes=_int(env, "MAX_INFLIGHT_BYTES", 64 * 1024 * 1024, 0, 1 << 40),
            max_timeout_seconds=max_timeout,
            max_memory_mb=max_memory,
            default_timeout_ms=min(_int(env, "DEFAULT_TIMEOUT_MS", 10_000, 1, contract_limits.MAX_TIMEOUT_MS),
                                   int(max_timeout * 1000)),
            default_memory_mb=min(_int(env, "DEFAULT_MEMORY_MB", 256, contract_limits.MIN_MEMORY_MB,
                                       contract_limits.MAX_MEMORY_MB), max_memory),
            ready_children=_int(env, "SANDBOX_READY", workers, 1, 1024),
            drain_timeout_seconds=_float(env, "DRAIN_TIMEOUT_SECONDS", 30.0, 0.0, 3600.0),
            log_level=level,
            environment=env.get("ENVIRONMENT", "development"),
            node_id=env.get("NODE_ID") or f"{socket.gethostname()}-{uuid.uuid4().hex[:6]}",
            sandbox_disable=env.get("SANDBOX_DISABLE", ""),
            sandbox_prewarm=_flag(env, "SANDBOX_PREWARM", True),
            embedded_port=_int(env, "EMBEDDED_NATS_PORT", 4222, 0, 65535),
            embedded_store=env.get("EMBEDDED_NATS_STORE") or None,
            role=role,
            heartbeat_file=env.get("HEARTBEAT_FILE") or "/tmp/strategy-node.heartbeat",
            nats_disconnected_exit_seconds=_float(env, "NATS_DISCONNECTED_EXIT_SECONDS", 60.0, 0.5, 86_400.0),
            **_jobs_settings(env),
            **_warm_settings(env, workers),
            **_quota_settings(env),
        )


def _quota_settings(env: Mapping[str, str]) -> dict:
    """MAX_*_PER_TENANT / MAX_VERSIONS_PER_STRATEGY: what one tenant may keep in the hosting buckets."""
    return dict(
        max_strategies_per_tenant=_int(env, "MAX_STRATEGIES_PER_TENANT", 200, 1, 1_000_000),
        max_versions_per_strategy=_int(env, "MAX_VERSIONS_PER_STRATEGY", 100, 1, 100_000),
        max_deployments_per_tenant=_int(env, "MAX_DEPLOYMENTS_PER_TENANT", 100, 1, 1_000_000),
        max_secrets_per_tenant=_int(env, "MAX_SECRETS_PER_TENANT", 100, 1, 1_000_000),
    )


def _warm_settings(env: Mapping[str, str], workers: int) -> dict:
    """TENANT_WARM_* variables; TENANT_WARM_RUNS unset or 0 leaves the mode off."""
    return dict(
        tenant_warm_runs=_int(env, "TENANT_WARM_RUNS", 0, 0, 1_000_000),
        tenant_warm_workers=_int(env, "TENANT_WARM_WORKERS", 2, 1, 1024),
        tenant_warm_max=_int(env, "TENANT_WARM_MAX", workers, 1, 4096),
        tenant_warm_idle_seconds=_float(env, "TENANT_WARM_IDLE_SECONDS", 60.0, 0.1, 86_400.0),
        trust_body_user_id=_flag(env, "TRUST_BODY_USER_ID", False),
        secrets_key_file=env.get("SECRETS_KEY_FILE", ""),
        secrets_key=env.get("SECRETS_KEY", ""),
    )


def _jobs_settings(env: Mapping[str, str]) -> dict:
    """JOBS_* variables. Redelivery backoff defaults to JOBS_ACK_WAIT_SECONDS doubling per delivery."""
    ack_wait = _float(env, "JOBS_ACK_WAIT_SECONDS", 30.0, 0.1, 3600.0)
    max_deliver = _int(env, "JOBS_MAX_DELIVER", 5, 1, 100)
    raw = (env.get("JOBS_BACKOFF_SECONDS") or "").strip()
    if raw:
        try:
            backoff = tuple(float(x) for x in raw.split(",") if x.strip())
        except ValueError:
            raise ValueError(f"JOBS_BACKOFF_SECONDS must be comma-separated seconds, got {raw!r}") from None
        if any(b < 0.1 or b > 86_400 for b in backoff):
            raise ValueError(f"JOBS_BACKOFF_SECONDS values must be between 0.1 and 86400, got {raw!r}")
    else:
        backoff = tuple(min(ack_wait * 2 ** i, 3600.0) for i in range(max_deliver - 1))
    backoff = backoff[: max_deliver - 1]  # the server requires max_deliver > len(backoff)
    return dict(
        jobs_replicas=_int(env, "JOBS_REPLICAS", 1, 1, 5),
        jobs_ack_wait_seconds=backoff[0] if backoff else ack_wait,  # the server acks-waits backoff[0]
        jobs_max_deliver=max_deliver,
        jobs_backoff_seconds=backoff,
        jobs_result_ttl_seconds=_float(env, "JOBS_RESULT_TTL_SECONDS", 86_400.0, 1.0, 365 * 86_400.0),
        jobs_duplicate_window_seconds=_float(env, "JOBS_DUPLICATE_WINDOW_SECONDS", 600.0, 1.0, 7 * 86_400.0),
        job_reply_prefixes=_reply_prefixes(env),
    )


_TOKEN = re.compile(r"[A-Za-z0-9_$-]{1,128}")


def _reply_prefixes(env: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """JOB_REPLY_PREFIXES: `ACCOUNT=prefix[|prefix...],ACCOUNT2=prefix`, e.g.
    `TENANT_A=_INBOX_client,TENANT_B=_INBOX_client2` (deploy/nats/permissions.conf)."""
    raw = (env.get("JOB_REPLY_PREFIXES") or "").strip()
    out: dict[str, tuple[str, ...]] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        account, eq, prefixes = item.partition("=")
        names = tuple(p.strip() for p in prefixes.split("|") if p.strip())
        if not eq or not _TOKEN.fullmatch(account.strip()) or not names or not all(
                _TOKEN.fullmatch(p) and p.startswith("_INBOX") for p in names):
            raise ValueError("JOB_REPLY_PREFIXES must be ACCOUNT=prefix[|prefix],... with each prefix one "
                             f"subject token starting with _INBOX, got {item!r}")
        out[account.strip()] = out.get(account.strip(), ()) + names
    return out
