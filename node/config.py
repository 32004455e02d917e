"""Node settings from environment variables; one frozen object read once at start."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Mapping

from contracts import limits as contract_limits


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class Settings:
    nats_url: str | None = None
    max_workers: int = 4
    max_queue: int = 256
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
    embedded_port: int = 4222
    embedded_store: str | None = None
    role: str = "all"
    heartbeat_file: str = "/tmp/strategy-node.heartbeat"

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
            embedded_port=_int(env, "EMBEDDED_NATS_PORT", 4222, 0, 65535),
            embedded_store=env.get("EMBEDDED_NATS_STORE") or None,
            role=role,
            heartbeat_file=env.get("HEARTBEAT_FILE") or "/tmp/strategy-node.heartbeat",
        )
