"""The JetStream pieces of hosted strategies, declared idempotently by every node.

Key-Value (file storage; every change of a key is an event a client can watch):

* STRATEGIES: `<tenant>.<name>.<version:08d>` -> StrategyVersion (msgpack), written once with
  `create` (a version is immutable; two concurrent puts get two versions). Key-Value rather
  than Object Store: a source is at most 64 KiB (contracts.limits.MAX_CODE_CHARS), well inside
  one message, and Key-Value gives what the registry needs: an atomic create per version,
  listing by subject filter (`<tenant>.<name>.>`), and watches; Object Store would add chunking
  and a second metadata stream for no gain at this size.
* DEPLOYMENTS: `<tenant>.<deployment>` -> Deployment (JSON), updated with compare-and-set.
* DEPLOYMENT_STATUS: `<tenant>.<deployment>` -> DeploymentStatus (JSON), history 10: watch it.
* DEPLOYMENT_STATE: `<tenant>.<deployment>` -> the strategy's `state` (JSON, <= 64 KiB).
* DEPLOYMENT_RUNS: `<tenant>.<deployment>.<run token>` -> RunRecord (JSON), max_age retention.
* DEPLOYMENT_LOCKS: overlap locks `<tenant>.<deployment>[.queued]`, short max_age (file storage,
  so they and their bucket survive a server restart).
* SECRETS: `<tenant>.<name>` -> an AEAD envelope (node/hosting/secrets.py), never a clear value.

Streams:

* STRATEGY_TRIGGERS (work queue, `strategy.triggers.<tenant>.<deployment>`): deduplicated by
  `Nats-Msg-Id` = trigger id; one shared pull consumer `strategy-triggers`.
* SIGNALS (`signals.<tenant>.<deployment>.<symbol>`, limits + max_age): deduplicated by trigger id.
* STRATEGY_LOGS (`strategy.logs.<tenant>.<deployment>`, max_age retention).
* The fan-out reads BARS (backtest/store.py) through the shared durable consumer
  `strategy-fanout` (deliver new), so each bar chunk is fanned out by one node.
"""

from __future__ import annotations

import logging
from typing import Any

import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from contracts import subjects

from .. import nats_internals
from ..config import Settings
from ..durable import _differs

log = logging.getLogger("node.hosting")

STRATEGIES = "STRATEGIES"
DEPLOYMENTS = "DEPLOYMENTS"
STATUS = "DEPLOYMENT_STATUS"
STATE = "DEPLOYMENT_STATE"
RUNS = "DEPLOYMENT_RUNS"
LOCKS = "DEPLOYMENT_LOCKS"
SECRETS = "SECRETS"
TRIGGERS_STREAM = "STRATEGY_TRIGGERS"
SIGNALS_STREAM = "SIGNALS"
LOGS_STREAM = "STRATEGY_LOGS"
TRIGGER_CONSUMER = "strategy-triggers"
FANOUT_CONSUMER = "strategy-fanout"

RETENTION_S = 7 * 86_400.0  # run records, signals and logs age out after a week
DUPLICATE_WINDOW_S = 600.0  # longer than any redelivery of a trigger


def lock_ttl(settings: Settings) -> float:
    """A run holds its overlap lock at most this long (the longest run, plus room)."""
    return settings.max_timeout_seconds + 5.0


def bucket_configs(settings: Settings, max_payload: int) -> list[KeyValueConfig]:
    replicas = settings.jobs_replicas
    common = dict(storage=StorageType.FILE, replicas=replicas, max_value_size=max_payload)
    return [
        KeyValueConfig(bucket=STRATEGIES, description="strategy versions: <tenant>.<name>.<version>",
                       history=1, **common),
        # history: every revision a deployment's `history` shows (64: the most Key-Value keeps)
        KeyValueConfig(bucket=DEPLOYMENTS, description="deployments: <tenant>.<deployment>", history=64, **common),
        KeyValueConfig(bucket=STATUS, description="deployment status (watchable)", history=10, **common),
        KeyValueConfig(bucket=STATE, description="deployment state mappings", history=1, **common),
        KeyValueConfig(bucket=RUNS, description="run records by trigger", history=1, ttl=RETENTION_S, **common),
        KeyValueConfig(bucket=SECRETS, description="tenant secrets: AEAD envelopes <tenant>.<name>", history=1,
                       **common),
        KeyValueConfig(bucket=LOCKS, description="overlap locks of running deployments", history=1,
                       # file, not memory: a memory bucket is gone after a server restart, and
                       # every skip/queue_one run would fail on its lock until a node restarted
                       ttl=lock_ttl(settings), storage=StorageType.FILE, replicas=replicas),
    ]


def stream_configs(settings: Settings) -> list[StreamConfig]:
    replicas = settings.jobs_replicas
    return [
        StreamConfig(name=TRIGGERS_STREAM, subjects=[f"{subjects.TRIGGERS}.>"],
                     retention=RetentionPolicy.WORK_QUEUE, storage=StorageType.FILE, num_replicas=replicas,
                     duplicate_window=DUPLICATE_WINDOW_S,
                     description="one run of a deployment per message (trigger id = Nats-Msg-Id)"),
        StreamConfig(name=SIGNALS_STREAM, subjects=[f"{subjects.SIGNALS}.>"], retention=RetentionPolicy.LIMITS,
                     storage=StorageType.FILE, num_replicas=replicas, max_age=RETENTION_S,
                     duplicate_window=DUPLICATE_WINDOW_S,
                     description="signals of hosted runs: signals.<tenant>.<deployment>.<symbol>"),
        StreamConfig(name=LOGS_STREAM, subjects=[f"{subjects.LOGS}.>"], retention=RetentionPolicy.LIMITS,
                     storage=StorageType.FILE, num_replicas=replicas, max_age=RETENTION_S,
                     duplicate_window=DUPLICATE_WINDOW_S,
                     description="logs of hosted runs: strategy.logs.<tenant>.<deployment>"),
    ]


def trigger_consumer(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        name=TRIGGER_CONSUMER, durable_name=TRIGGER_CONSUMER, description="Shared by every strategy node",
        deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.jobs_ack_wait_seconds, max_deliver=settings.jobs_max_deliver,
        filter_subject=f"{subjects.TRIGGERS}.>", max_ack_pending=10_000,
    )


def fanout_consumer(settings: Settings) -> ConsumerConfig:
    return ConsumerConfig(
        name=FANOUT_CONSUMER, durable_name=FANOUT_CONSUMER,
        description="Fans each new bar chunk out to the deployments on its series (shared by every node)",
        deliver_policy=DeliverPolicy.NEW, ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.jobs_ack_wait_seconds, max_deliver=-1,
        filter_subject="bars.>", max_ack_pending=10_000,
    )


async def ensure_stream(js: Any, want: StreamConfig) -> None:
    try:
        info = await js.stream_info(want.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(want)
            return
        except nats.js.errors.BadRequestError:
            info = await js.stream_info(want.name)  # a peer created it first
    if _differs(info.config, want):
        try:
            await js.update_stream(want)
        except nats.js.errors.APIError as exc:
            log.warning("stream %s keeps its existing configuration: %s", want.name, exc.description)


async def ensure_bucket(js: Any, config: KeyValueConfig) -> Any:
    try:
        kv = await js.key_value(config.bucket)
    except nats.js.errors.BucketNotFoundError:
        kv = None
    if kv is not None:
        await _keep_history(js, kv, config)
        return kv
    try:
        return await js.create_key_value(config)
    except nats.js.errors.BadRequestError:
        return await js.key_value(config.bucket)  # a peer created it first


async def _keep_history(js: Any, kv: Any, config: KeyValueConfig) -> None:
    """A bucket made by an older release with less history keeps `config.history` from now on."""
    info = await js.stream_info(nats_internals.kv_parts(kv).stream)
    if (info.config.max_msgs_per_subject or 0) < config.history:
        info.config.max_msgs_per_subject = config.history
        try:
            await js.update_stream(info.config)
        except nats.js.errors.APIError as exc:
            log.warning("bucket %s keeps history %s: %s", config.bucket, info.config.max_msgs_per_subject,
                        exc.description)


async def ensure_consumer(js: Any, stream: str, config: ConsumerConfig) -> None:
    try:
        await js.add_consumer(stream, config=config)
    except nats.js.errors.BadRequestError as exc:
        log.warning("consumer %s kept its existing configuration: %s", config.durable_name, exc.description)
        await js.consumer_info(stream, config.durable_name)


async def keys(kv: Any, pattern: str) -> list[str]:
    """Keys matching a subject pattern (`<tenant>.<name>.>`), from the server's own count of
    the bucket's subjects (one stream-info request with a subject filter).

    Not nats-py's `kv.keys(filters=...)`, which reads every key of the bucket and matches
    substrings, nor a watch, whose end-of-initial-values marker can arrive before a value
    already delivered. Keys whose last entry is a delete or purge marker are listed too: callers
    read each key and skip the deleted ones.
    """
    js, stream, prefix = nats_internals.kv_parts(kv)
    info = await js.stream_info(stream, subjects_filter=prefix + pattern)
    return [subject[len(prefix):] for subject in (info.state.subjects or {})]
