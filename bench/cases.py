"""What is measured: strategies, request payloads (pre-encoded) and reply checks per case.

All payloads speak the public wire contract (contracts/*): JSON by default, msgpack with
`--encoding msgpack` (then the `Content-Type: application/msgpack` header is sent). Payloads are
encoded once, before a phase; the cases that need a new source per request splice a counter into
a pre-encoded payload (a `# bench <token> <n>` comment at the end of the code), so the client's
per-request cost is the same for every case.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import msgspec
import numpy as np

from contracts import ErrorInfo, subjects

from .profiles import Profile

TRIVIAL = "def strategy(data):\n    return 'BUY'\n"

# SMA 20/50 crossover, vectorized: +1 on the bar the fast SMA crosses above the slow one, -1 on
# the bar it crosses below, 0 elsewhere. One source for execute, backtest and sweep; the sweep's
# grid sets `fast`/`slow` through `params`.
SMA = (
    "def strategy(data):\n"
    "    close = data['close']\n"
    "    fast = close.rolling(params.get('fast', 20)).mean()\n"
    "    slow = close.rolling(params.get('slow', 50)).mean()\n"
    "    above = (fast > slow).astype('int8')\n"
    "    return above.diff().fillna(0)\n"
)

# Memory-probe variants: the same work, then a busy loop so a sampler sees the live state.
_HOLD = "    n = 0\n    for i in range({iters}):\n        n = n + 1\n"
TRIVIAL_HOLD = "def strategy(data):\n" + _HOLD + "    return 'BUY'\n"
SMA_HOLD = SMA.replace("    return above", _HOLD + "    return above")

WARM_TENANT = "bench-tenant"
# What the bench's own node runs with unless --node-env says otherwise: warm workers for requests
# that carry a user_id (only the warm_* cases do; every other case takes the fresh-process path).
# The bench's server has no accounts, so the node is told to trust the body's user_id
# (node/identity.py: otherwise no request has a verified tenant and none would run warm).
WARM_NODE_ENV = {"TENANT_WARM_RUNS": "100000", "TENANT_WARM_WORKERS": "2", "TRUST_BODY_USER_ID": "true"}

DAY_MS = 86_400_000
MINUTE_MS = 60_000
START_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z


def random_walk(n: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.concatenate([[close[0]], close[:-1]])
    return {
        "open": open_.round(4), "high": (np.maximum(open_, close) * 1.002).round(4),
        "low": (np.minimum(open_, close) * 0.998).round(4), "close": close.round(4),
        "volume": rng.integers(1_000, 5_000, n).astype(np.float64),
    }


def columnar_bars(n: int, seed: int = 7) -> dict[str, list]:
    """The `bars` object of an ExecuteRequest: daily bars, epoch-ms timestamps."""
    cols = random_walk(n, seed)
    return {"timestamp": [START_MS + i * DAY_MS for i in range(n)], **{k: v.tolist() for k, v in cols.items()}}


# -- reply checks ------------------------------------------------------------------------------
class _Success(msgspec.Struct):
    success: bool = False
    error: ErrorInfo | None = None
    execution_time_ms: float | None = None


class _Valid(msgspec.Struct):
    valid: bool = False
    error: ErrorInfo | None = None
    execution_time_ms: float | None = None


Check = Callable[[bytes], "tuple[str | None, float | None]"]


def checker(kind: str, encoding: str, ok_field: str) -> Check:
    """(None, node ms) for a successful reply, else (its error code, node ms).

    Decodes only the fields named (msgspec skips the rest). `execution_time_ms` is the node's own
    time for the request (decode to reply built): the client latency minus it is transport,
    queueing before the handler and the reply's encode/send.
    """
    type_ = _Valid if ok_field == "valid" else _Success
    decoder = msgspec.msgpack.Decoder(type_) if encoding == subjects.MSGPACK else msgspec.json.Decoder(type_)

    def check(data: bytes) -> tuple[str | None, float | None]:
        try:
            reply = decoder.decode(data)
        except msgspec.DecodeError:
            return "UNDECODABLE_REPLY", None
        if getattr(reply, ok_field):
            return None, reply.execution_time_ms
        return (str(reply.error.code) if reply.error is not None else "FAILED"), reply.execution_time_ms

    return check


# -- payloads ----------------------------------------------------------------------------------
def encoder(encoding: str) -> Callable[[Any], bytes]:
    return msgspec.msgpack.encode if encoding == subjects.MSGPACK else msgspec.json.encode


MARK = "#@@BENCH-UNIQUE@@"


def spliced(request: dict, encoding: str, token: str) -> Callable[[int], bytes]:
    """Payload factory: request i gets `# bench <token> <i>` appended to its code.

    With msgpack the code is a length-prefixed string, so the payload is re-encoded per request
    (the bars dominate either way); with JSON a pre-encoded payload is split around a marker.
    """
    enc = encoder(encoding)
    if encoding == subjects.MSGPACK:
        base = dict(request)
        code = base["code"]

        def make(i: int) -> bytes:
            base["code"] = f"{code}# bench {token} {i}\n"
            return enc(base)

        return make
    marked = dict(request, code=request["code"] + MARK)
    head, tail = enc(marked).split(MARK.encode(), 1)
    pre = head + f"# bench {token} ".encode()

    def make(i: int) -> bytes:
        return pre + str(i).encode() + b"\\n" + tail

    return make


def fixed(payload: bytes) -> Callable[[int], bytes]:
    return lambda _i: payload


@dataclass
class Case:
    name: str
    title: str
    subject: str
    make_payload: Callable[[int], bytes]
    check: Check
    heavy: bool = False
    node_time: bool = True  # the reply's execution_time_ms is the node's (not the echo's canned one)
    memory: str | None = None  # "hold": probe with memory_payload; "sample": probe the case itself
    memory_payload: Callable[[int], bytes] | None = None  # the hold variant
    compare_to: str | None = None  # report p50 minus this case's p50 (first-run cases)
    pair_with: str | None = None  # also measure interleaved with this case at concurrency 1
    request_bytes: int = 0
    extra: dict = field(default_factory=dict)


def build(profile: Profile, encoding: str, echo_subject: str, bars_ref: dict, sweep_ref: dict) -> list[Case]:
    """The cases in run order (cached runs before the first-run cases that are compared to them)."""
    enc = encoder(encoding)
    token = uuid.uuid4().hex[:8]  # new sources even against a long-running node
    bars = columnar_bars(profile.bars)
    execute_ok = checker("execute", encoding, "success")
    valid_ok = checker("validate", encoding, "valid")

    def execute(code: str) -> dict:
        return {"code": code, "bars": bars, "symbol": "BENCH", "timeframe": "1d"}

    trivial = enc(execute(TRIVIAL))
    sma = enc(execute(SMA))
    hold = profile.hold_iterations
    cases = [
        Case("echo", "raw NATS echo, same payload (floor)", echo_subject, fixed(trivial), execute_ok,
             node_time=False, request_bytes=len(trivial)),
        Case("trivial", f"execute trivial, {profile.bars} bars, warm", subjects.EXECUTE, fixed(trivial),
             execute_ok, memory="hold", memory_payload=fixed(enc(execute(TRIVIAL_HOLD.format(iters=hold)))),
             pair_with="echo", request_bytes=len(trivial)),
        Case("sma", f"execute SMA 20/50, {profile.bars} bars, warm", subjects.EXECUTE, fixed(sma), execute_ok,
             memory="hold", memory_payload=fixed(enc(execute(SMA_HOLD.format(iters=hold)))), pair_with="echo",
             request_bytes=len(sma)),
        Case("first_run_trivial", "execute trivial, new source each request", subjects.EXECUTE,
             spliced(execute(TRIVIAL), encoding, token), execute_ok,
             compare_to="trivial", pair_with="trivial", request_bytes=len(trivial)),
        Case("first_run_sma", "execute SMA, new source each request", subjects.EXECUTE,
             spliced(execute(SMA), encoding, token), execute_ok,
             compare_to="sma", pair_with="sma", request_bytes=len(sma)),
        # The opt-in warm mode (TENANT_WARM_RUNS on the node): the same requests with a user_id
        # run in that tenant's warm worker instead of a fresh child.
        Case("warm_trivial", f"execute trivial, {profile.bars} bars, tenant's warm worker", subjects.EXECUTE,
             fixed(enc({**execute(TRIVIAL), "user_id": WARM_TENANT})), execute_ok, pair_with="echo",
             request_bytes=len(trivial)),
        Case("warm_sma", f"execute SMA 20/50, {profile.bars} bars, tenant's warm worker", subjects.EXECUTE,
             fixed(enc({**execute(SMA), "user_id": WARM_TENANT})), execute_ok, pair_with="echo",
             request_bytes=len(sma)),
        Case("validate", "validate SMA source, cached", subjects.VALIDATE, fixed(enc({"code": SMA})), valid_ok,
             request_bytes=len(enc({"code": SMA}))),
        Case("validate_new", "validate SMA, new source each request", subjects.VALIDATE,
             spliced({"code": SMA}, encoding, token + "v"), valid_ok,
             compare_to="validate", pair_with="validate", request_bytes=len(enc({"code": SMA}))),
    ]
    backtest_ok = checker("backtest", encoding, "success")
    bt = enc({"code": SMA, "source": bars_ref, "timeout_ms": 30_000})
    cases.append(Case("backtest", f"backtest SMA 20/50, {profile.backtest_bars:,} bars from BARS",
                      subjects.BACKTEST, fixed(bt), backtest_ok, heavy=True, memory="sample",
                      request_bytes=len(bt)))
    grid = {"fast": list(profile.sweep_fast), "slow": list(profile.sweep_slow)}
    sw = enc({"code": SMA, "source": sweep_ref, "grid": grid, "timeout_ms": 30_000})
    cases.append(Case("sweep", f"sweep {profile.sweep_pairs} pairs x {profile.sweep_bars:,} bars from BARS",
                      subjects.BACKTEST, fixed(sw), backtest_ok, heavy=True, memory="sample",
                      request_bytes=len(sw)))
    return cases


CASE_NAMES = ("echo", "trivial", "sma", "first_run_trivial", "first_run_sma", "warm_trivial", "warm_sma",
              "validate", "validate_new", "backtest", "sweep")
