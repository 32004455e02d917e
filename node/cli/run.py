"""`strategy-node run`: its help, which lists every environment variable the node reads.

tests/node/test_cli_help.py checks this list against the README's settings table and the
variables node/config.py reads, so the three cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

ENVIRONMENT: list[tuple[str, str]] = [
    ("NATS_URL", "NATS server(s) to join; unset: start an embedded nats-server (JetStream on)"),
    ("EMBEDDED_NATS_PORT", "port of the embedded server (default 4222; 0 picks a free one); a nats-server "
                           "already there is joined as another node, anything else is refused"),
    ("EMBEDDED_NATS_STORE", "the embedded server's data directory: jobs, results and bars survive restarts "
                            "(default $XDG_DATA_HOME/strategy-node/nats, i.e. ~/.local/share/strategy-node/nats)"),
    ("MAX_WORKERS", "executions running at once (default 2 x cores)"),
    ("MAX_QUEUE", "admitted requests waiting for a worker; beyond it OVERLOADED (default 64 x workers)"),
    ("MAX_INFLIGHT_BYTES", "request bytes admitted on the node at once"),
    ("MAX_TIMEOUT_SECONDS", "largest timeout_ms a request may ask for (default 30)"),
    ("MAX_MEMORY_MB", "largest memory_mb a request may ask for (default 512)"),
    ("DEFAULT_TIMEOUT_MS", "when a request gives none (default 10000)"),
    ("DEFAULT_MEMORY_MB", "when a request gives none (default 256)"),
    ("SANDBOX_READY", "locked-down children kept forked ahead of demand (default MAX_WORKERS)"),
    ("SANDBOX_PREWARM", "1/0: each ready child runs a trusted job first (default 1)"),
    ("SANDBOX_DISABLE", "comma list of isolation layers to switch off (netns,seccomp,chroot,landlock,uid)"),
    ("DRAIN_TIMEOUT_SECONDS", "how long SIGTERM waits for admitted work (default 30)"),
    ("NATS_DISCONNECTED_EXIT_SECONDS", "exit when NATS stays unreachable this long"),
    ("LOG_LEVEL", "DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)"),
    ("LOG_FORMAT", "json for JSON log lines"),
    ("ENVIRONMENT", "development (default) or production (JSON logs)"),
    ("NODE_ID", "reported in every reply (default hostname + random)"),
    ("NODE_ROLE", "requests, jobs or all (default all)"),
    ("TRUST_BODY_USER_ID", "closed networks only: a request's body user_id is its tenant when NATS proves none "
                           "(default false)"),
    ("HEARTBEAT_FILE", "rewritten every second with the NATS connection state for `health --local` (default /tmp/strategy-node.heartbeat; a second "
                       "node on the machine uses FILE.<node id>)"),
    ("NATS_CREDS", "NATS credentials file (or NATS_NKEY_SEED, NATS_USER/NATS_PASSWORD, NATS_TOKEN)"),
    ("NATS_NKEY_SEED", "NATS nkey seed file"),
    ("NATS_USER", "NATS user (with NATS_PASSWORD)"),
    ("NATS_PASSWORD", "NATS password"),
    ("NATS_TOKEN", "NATS token"),
    ("NATS_TLS_CA", "TLS: CA file (NATS_TLS_CERT, NATS_TLS_KEY for a client certificate)"),
    ("NATS_TLS_CERT", "TLS client certificate"),
    ("NATS_TLS_KEY", "TLS client key"),
    ("NATS_INBOX_PREFIX", "inbox prefix for replies"),
    ("JOBS_REPLICAS", "replicas of the job/result streams (default 1)"),
    ("JOBS_ACK_WAIT_SECONDS", "durable jobs: ack wait (default 30)"),
    ("JOBS_MAX_DELIVER", "durable jobs: deliveries before the dead-letter subject (default 5)"),
    ("JOBS_BACKOFF_SECONDS", "durable jobs: comma list of redelivery delays (default doubling)"),
    ("JOBS_RESULT_TTL_SECONDS", "how long job results are kept (default 86400)"),
    ("JOBS_DUPLICATE_WINDOW_SECONDS", "how long job ids are deduplicated (default 600)"),
    ("JOB_REPLY_PREFIXES", "ACCOUNT=_INBOX_x[|...],...: the inboxes a tenant's jobs may reply to"),
    ("SWEEP_CONCURRENCY", "grid points in flight per sweep (default 32)"),
    ("REPLAY_CACHE_MB", "replayed bar series kept per node (default 128)"),
    ("TENANT_WARM_RUNS", "opt-in warm workers: runs per tenant worker (default 0: off)"),
    ("TENANT_WARM_WORKERS", "warm workers per tenant (default 2)"),
    ("TENANT_WARM_MAX", "warm workers on the node (default MAX_WORKERS)"),
    ("TENANT_WARM_IDLE_SECONDS", "an idle warm worker is killed after this (default 60)"),
    ("SECRETS_KEY_FILE", "hosted-strategy secrets: file of key-encryption keys `<id>:<base64 32 bytes>`, newest last"),
    ("SECRETS_KEY", "the same keys as a variable (SECRETS_KEY_FILE preferred); unset: secrets refused"),
    ("MAX_STRATEGIES_PER_TENANT", "hosted strategies: strategy names one tenant may keep (default 200)"),
    ("MAX_VERSIONS_PER_STRATEGY", "versions kept per strategy; beyond it the oldest no deployment runs are dropped "
                                  "(default 100)"),
    ("MAX_DEPLOYMENTS_PER_TENANT", "deployments one tenant may keep (default 100)"),
    ("MAX_SECRETS_PER_TENANT", "secret names one tenant may keep (default 100)"),
    ("OTEL_*", "OpenTelemetry exporters (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, ...); none by default"),
]


def epilog() -> str:
    width = max(len(name) for name, _ in ENVIRONMENT)
    lines = ["environment variables (the node is configured by these only):"]
    lines += [f"  {name:<{width}}  {meaning}" for name, meaning in ENVIRONMENT]
    return "\n".join(lines)


def register(sub: Any) -> argparse.ArgumentParser:
    return sub.add_parser(
        "run", help="serve strategy.v1.* (embedded nats-server when NATS_URL is unset)",
        description="Serve strategy.v1.* as one node of the strategy-exec queue group. Without NATS_URL it "
                    "starts an embedded nats-server with JetStream on nats://127.0.0.1:4222 (or joins one "
                    "already there). Stop with Ctrl-C / SIGTERM: it finishes admitted work, then drains.",
        epilog=epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
