"""What crosses between the node and a sandbox child: a Job in, an Outcome out.

A one-shot child serves one Job and exits. A tenant's warm worker (sandbox/warm.py) is a child
told `keep=True`: after each Outcome it scrubs its process and sends a `Scrubbed` report, then
reads the next Job, until the node closes its channel.

Frames are a 4-byte little-endian length and a msgpack body; bars travel as raw column bytes
(`BarArrays`), never as per-value Python lists, or (1 MB and more, sealed by the node) as a
memfd passed with the frame's first bytes (`Job.shared_bars`, sandbox/shm.py).
"""

from __future__ import annotations

import struct
from typing import Any, Literal

import msgspec

from contracts import BacktestOptions, BarArrays, ErrorInfo, Performance, Signal
from backtest.refdata_bundle import RefBundle

from .shm import SharedBars

HEADER = struct.Struct("<I")
MAX_FRAME = 1 << 30

Kind = Literal["execute", "backtest", "classify"]


class OutputLimits(msgspec.Struct, array_like=True):
    signals: int = 10_000
    indicators: int = 64
    indicator_points: int = 2_000_000
    log_lines: int = 1_000
    log_bytes: int = 256 * 1024
    result_bytes: int = 1024 * 1024
    state_bytes: int = 64 * 1024  # a hosted run's `state` as JSON (contracts.hosting.MAX_STATE_BYTES)


class Job(msgspec.Struct, array_like=True):
    kind: Kind
    code: bytes  # CompiledStrategy.to_bytes()
    bars: BarArrays | None
    symbol: str
    timeframe: str
    parameters: dict[str, Any]
    timeout_ms: int
    memory_mb: int
    limits: OutputLimits
    options: BacktestOptions | None = None
    universe: dict[str, BarArrays] | None = None  # symbol -> bars, for classify accessors
    # kind "backtest" only: a sweep chunk, one backtest per parameter set (each replaces
    # `parameters`), run one after another in this one child; see runtime.run_points.
    points: list[dict[str, Any]] | None = None
    keep: bool = False  # a warm worker: wait for another job after this one instead of exiting
    # kind "backtest" only: walk the strategy bar by bar without the full-series probe call.
    # The node sends this to a fresh child after a probe answered `Outcome.walk`, so the walk
    # never shares a process with a call that saw every bar (runtime.Run._walk).
    walk: bool = False
    # Reference data for the accessors (security master, facts, sector members, index names),
    # fetched by the node before the run: plain data only (backtest.refdata_bundle).
    refdata: RefBundle | None = None
    # Hosted runs (node/hosting/): the deployment's persisted `state` mapping, handed in as the
    # strategy's global `state` and handed back in `Outcome.state` (None: no state for this run).
    state: dict[str, Any] | None = None
    # Hosted runs: the deployment's plain environment and the clear values of the secrets it
    # names, handed in as the read-only mappings `env` and `secrets` (None: not a hosted run).
    env: dict[str, str] | None = None
    secrets: dict[str, str] | None = None
    # A warm run (node/raw_execute.py): the request's bytes as the client sent them, in the
    # request's encoding ("application/json" or "application/msgpack"). The worker decodes
    # its bars itself (sandbox/request_bars.py), off the node's event loop; `bars` is None.
    request: bytes | None = None
    request_kind: str = ""
    # The bars are in the sealed memfd passed with this frame (sandbox/shm.py), not in `bars`.
    shared_bars: SharedBars | None = None


class PointOutcome(msgspec.Struct, array_like=True):
    """One parameter set of a sweep chunk."""

    performance: Performance | None = None
    error: ErrorInfo | None = None
    signals_count: int = 0
    walk: bool = False  # the probe returned one signal: the node walks this point in a fresh child


class Outcome(msgspec.Struct, array_like=True):
    success: bool
    signals: list[Signal] = []
    indicators: dict[str, list[float | None]] = {}
    performance: Performance | None = None
    result: Any = None
    logs: list[str] = []
    error: ErrorInfo | None = None
    signals_count: int = 0
    run_ms: float = 0.0
    points: list[PointOutcome] | None = None  # a sweep chunk's results, in order (may stop short)
    cpu_ms: float = 0.0  # the process's CPU time so far (a warm worker's budget is its lifetime's)
    # A backtest's probe returned one signal for the last bar: nothing else here is a result; the
    # node runs the job again with `walk=True` in a fresh child (never in this process).
    walk: bool = False
    # The `state` mapping after the run (JSON-safe, at most `state_bytes`), when the job had one.
    state: Any = None
    # The job's `request` did not decode or its bars failed the checks (sandbox/request_bars.py):
    # nothing ran; the node answers with the error its own checks give for those bytes.
    invalid_request: bool = False
    bar_count: int = 0  # bars decoded from the job's `request` (0 for any other job)


class Scrubbed(msgspec.Struct, array_like=True):
    """What a warm worker sends after a run's Outcome, once it has scrubbed its process
    (sandbox.hygiene): the node hands it another run only when `clean`; otherwise, or without
    this report within the run's deadline, it retires the worker."""

    clean: bool
    cpu_ms: float  # the process's CPU time after the scrub (its lifetime budget, as Outcome.cpu_ms)
    failure: str | None = None  # why the process could not be shown clean


job_encoder = msgspec.msgpack.Encoder()
job_decoder = msgspec.msgpack.Decoder(Job)
outcome_decoder = msgspec.msgpack.Decoder(Outcome)
scrubbed_decoder = msgspec.msgpack.Decoder(Scrubbed)


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body
