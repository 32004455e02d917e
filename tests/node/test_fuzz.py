"""10,000 malformed or random messages at every subject a node serves, and at the job queue.

Payloads come from hypothesis strategies (random bytes, random JSON and msgpack structures,
near-valid requests with wrong field types), generated once and sent concurrently in batches to
a node subprocess. Every request must get a reply with a clear error code, never INTERNAL (or a valid reply:
health, or a random request that happens to be valid); every job must get its reply on its
reply subject; the node must still be alive and serving afterwards.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts import ErrorCode, encode, subjects
from node.embedded import EmbeddedServer
from tests.node.test_faults import NodeProc, cleanup, connect, node_health, wait_consuming  # noqa: F401
from tests.support import columnar_bars

TOTAL = 10_000
BATCH = 250
CODES = {code.value for code in ErrorCode}
MSGPACK = {"Content-Type": subjects.MSGPACK}

FIELDS = ["language", "bars", "market_data", "source", "parameters", "grid", "options", "timeout_ms",
          "memory_mb", "symbol", "timeframe", "request_id", "symbols", "rank_by", "code"]
leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) \
    | st.integers(min_value=-2**70, max_value=2**70)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
codes = st.sampled_from([
    "def strategy(data): return 'BUY'", "def strategy(data):\n    return 1/0", "import os\nos.system('id')",
    "def strategy(data) return", "open('/etc/passwd').read()", "",
]) | st.text(max_size=60) | st.integers(65_000, 70_000).map(lambda n: "x" * n)  # past the code limit
bars = st.just(columnar_bars(5)) | st.fixed_dictionaries(
    {k: st.lists(st.floats() | st.integers() | st.text(max_size=5), max_size=3)
     for k in ("timestamp", "open", "high", "low", "close")})
# a request with a code field and up to three other contract fields holding anything
near_valid = st.builds(lambda code, extra: {"code": code, **extra}, codes | values,
                       st.dictionaries(st.sampled_from(FIELDS), values | bars, max_size=3))


def _json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


def _msgpack(value) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except OverflowError:  # integers past 64 bits have no msgpack form
        return _json(value)


payloads = st.one_of(
    st.tuples(st.binary(min_size=1, max_size=300), st.none()),
    st.tuples(values.map(_json), st.none()),
    st.tuples(near_valid.map(_json), st.none()),
    st.tuples(near_valid.map(_json), st.none()),
    st.tuples(near_valid.map(_msgpack), st.just(MSGPACK)),
    st.tuples(st.binary(max_size=100), st.just(MSGPACK)),
    st.tuples(near_valid.map(_json), st.fixed_dictionaries({"Content-Type": st.text(max_size=30)})),
)


def generate(count: int) -> list[tuple[bytes, dict | None]]:
    out: list[tuple[bytes, dict | None]] = []
    per = 5  # small examples: hypothesis refuses to draw very large ones

    @settings(max_examples=math.ceil(count / per), database=None, derandomize=True, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.lists(payloads, min_size=per, max_size=per))
    def collect(batch):
        out.extend(batch)

    collect()
    return out[:count]


def decoded(data: bytes, headers: dict | None):
    if headers and headers.get("Content-Type") == subjects.MSGPACK:
        return msgspec.msgpack.decode(data)
    return json.loads(data)


def unclear(subject: str, data: bytes, headers: dict | None) -> str | None:
    """Why a reply is not a clear answer, or None when it is."""
    try:
        reply = decoded(data, headers)
    except Exception:  # noqa: BLE001
        return f"undecodable reply {data[:80]!r}"
    if subject.startswith(subjects.HEALTH):
        return None if reply.get("status") in ("ok", "degraded", "draining") else f"bad health {reply}"
    error = reply.get("error")
    if error is None:
        verdicts = [reply.get(key) for key in ("success", "valid", "ok")]  # ok: hosting control replies
        return None if any(v is not None for v in verdicts) else f"no verdict {reply}"
    message = error.get("message") or ""
    if error.get("code") not in CODES or not message:
        return f"unclear error {error}"
    if error.get("code") == ErrorCode.INTERNAL:
        return f"INTERNAL for client input: {message[:200]}"  # client input is never the node's fault
    if "Traceback" in message or "/work/" in message or 'File "' in message:
        return f"leaks internals: {message[:200]}"
    return None


async def test_ten_thousand_random_messages_get_clear_answers_and_the_node_survives(tmp_path, cleanup):
    server = cleanup.add(EmbeddedServer(store_dir=str(tmp_path / "js")).start())
    node = cleanup.add(NodeProc(tmp_path, "fuzzed", server.url, NODE_ROLE="all", MAX_QUEUE="5000",
                                MAX_TIMEOUT_SECONDS="10"))
    nc = cleanup.add(await connect(server.url))
    await wait_consuming(nc, node)
    info = json.loads((await nc.request(f"$SRV.INFO.{subjects.SERVICE_NAME}", b"", timeout=5)).data)
    endpoints = sorted(e["subject"] for e in info["endpoints"])
    assert {subjects.EXECUTE, subjects.VALIDATE, subjects.HEALTH} <= set(endpoints)

    # every payload goes to every endpoint and to the job queue
    targets = len(endpoints) + 1
    messages = generate(math.ceil(TOTAL / targets))
    jobs = len(messages)
    problems: list[str] = []
    codes: dict[str, int] = {}

    def tally(subject: str, data: bytes, headers: dict | None) -> None:
        why = unclear(subject, data, headers)
        if why:
            problems.append(f"{subject}: {why}")
            return
        try:
            code = (decoded(data, headers).get("error") or {}).get("code", "none")
        except AttributeError:
            code = "none"
        codes[code] = codes.get(code, 0) + 1

    async def ask(subject: str, data: bytes, headers: dict | None) -> None:
        try:
            msg = await nc.request(subject, data, timeout=30, headers=headers)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{subject}: no answer ({type(exc).__name__}) to {data[:60]!r}")
            return
        tally(subject, msg.data, {"Content-Type": (msg.headers or {}).get("Content-Type")})

    started = time.monotonic()
    requests = [(subject, data, headers) for subject in endpoints for data, headers in messages]
    for start in range(0, len(requests), BATCH):
        await asyncio.gather(*(ask(*r) for r in requests[start:start + BATCH]))

    requests_s = time.monotonic() - started
    # jobs: published to the queue with a reply subject each
    inbox = f"_INBOX.fuzzjobs.{uuid.uuid4().hex}"
    replies: dict[int, tuple[bytes, dict | None]] = {}
    all_replied = asyncio.Event()

    async def on_reply(msg):
        replies[int(msg.subject.rsplit(".", 1)[1])] = (msg.data, {"Content-Type": (msg.headers or {}).get("Content-Type")})
        if len(replies) == jobs:
            all_replied.set()
    await nc.subscribe(f"{inbox}.>", cb=on_reply)
    js = nc.jetstream(timeout=10)
    for start in range(0, jobs, BATCH):
        acks = []
        for i in range(start, min(start + BATCH, jobs)):
            data, headers = messages[i]
            headers = dict(headers or {})
            headers["Strategy-Reply-To"] = f"{inbox}.{i}"
            if i % 20 == 1:
                headers["Nats-Msg-Id"] = f"not a.valid>id {i}"
            elif i % 20 == 3:
                headers["Strategy-Job-Id"] = f"not a.valid>id {i}" if i % 40 == 3 else "x" * 129
            elif i % 20 == 4:  # two ids that disagree
                headers["Strategy-Job-Id"], headers["Nats-Msg-Id"] = f"fuzz-a-{i}", f"fuzz-b-{i}"
            elif i % 20 == 5:
                headers["Strategy-Job-Id"] = f"fuzz-{i}-{uuid.uuid4().hex[:8]}"
            elif i % 20 != 2:  # and some jobs without any id
                headers["Nats-Msg-Id"] = f"fuzz-{i}-{uuid.uuid4().hex[:8]}"
            acks.append(js.publish(f"strategy.jobs.{'backtest' if i % 3 == 0 else 'execute'}", data, headers=headers))
        await asyncio.gather(*acks)
    try:
        await asyncio.wait_for(all_replied.wait(), 90)
    except asyncio.TimeoutError:
        problems.append(f"only {len(replies)} of {jobs} jobs were answered")
    for data, headers in replies.values():
        tally("strategy.jobs", data, headers)
    jobs_s = time.monotonic() - started - requests_s

    assert problems == [], problems[:20]
    assert node.proc.poll() is None
    assert (await node_health(nc, "fuzzed"))["status"] == "ok"
    reply = json.loads((await nc.request(subjects.EXECUTE, encode(
        {"code": "def strategy(d): return 'BUY'", "bars": columnar_bars(5)}), timeout=10)).data)
    assert reply["success"] is True
    print(f"\n[fuzz] sent={len(requests) + jobs} ({jobs} payloads x {len(endpoints)} endpoints + job queue); "
          f"requests {requests_s:.1f}s, jobs {jobs_s:.1f}s; answers by code: {dict(sorted(codes.items()))}")
