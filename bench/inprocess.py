"""The INSECURE BASELINE cases: the in-process design, in one responder process and in two.

What they measure is `bench/inprocess_server.py`: RestrictedPython compiled (cached by source
hash) and executed in a thread pool inside the responder's own process, with no isolation; the
same contracts, the same Job and the same `sandbox.runtime.run` as the node's children, so the
work per request is the same and only the isolation differs. Not a product path: it exists so
every target can be stated as a ratio to it.

Two responder processes are started. Process A subscribes to the one-process subject and, in
the queue group `bench-inprocess`, to the two-process subject; process B only to the latter. So
`inprocess_*` cases reach exactly one process, and `inprocess2_*` cases are spread over two by
the queue group, the way a fleet of such services would share load.

The request bytes are the node's own trivial and SMA request bytes (`bench.cases`), built the
same way; the runner checks they are byte-identical before it measures.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import msgspec

from contracts import subjects

from . import cases as case_defs
from .procs import Proc, spawn, wait_for_line
from .profiles import Profile

QUEUE = "bench-inprocess"
THREADS = 4  # the node's MAX_WORKERS on 2 cores: the same concurrency budget

# case name -> (node case with the same request bytes, processes)
CASES = {
    "inprocess_trivial": ("trivial", 1),
    "inprocess_sma": ("sma", 1),
    "inprocess2_trivial": ("trivial", 2),
    "inprocess2_sma": ("sma", 2),
}
CASE_NAMES = tuple(CASES)


@dataclass
class Responders:
    procs: list[Proc]
    one: str  # subject served by one process
    two: str  # subject served by two processes (queue group)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def subject(self, processes: int) -> str:
        return self.one if processes == 1 else self.two


def spawn_all(nats_url: str, threads: int = THREADS) -> Responders:
    """Start both responder processes without waiting (they import pandas etc. meanwhile)."""
    token = uuid.uuid4().hex[:8]
    one = f"bench.inprocess.{token}.one.execute"
    two = f"bench.inprocess.{token}.two.execute"
    procs = [
        spawn("inprocess-a", ["-m", "bench.inprocess_server", nats_url, "--threads", str(threads),
                              one, f"{two}:{QUEUE}"], {}),
        spawn("inprocess-b", ["-m", "bench.inprocess_server", nats_url, "--threads", str(threads),
                              f"{two}:{QUEUE}"], {}),
    ]
    return Responders(procs, one, two)


def wait_ready(responders: Responders, timeout: float = 120.0) -> None:
    for proc in responders.procs:
        wait_for_line(proc, "inprocess ready", timeout)


def start(nats_url: str, threads: int = THREADS, timeout: float = 120.0) -> Responders:
    """Start both responders and wait until they serve (stopped again if one does not come up)."""
    responders = spawn_all(nats_url, threads)
    try:
        wait_ready(responders, timeout)
    except BaseException:
        for proc in responders.procs:
            proc.stop()
        raise
    return responders


def build(profile: Profile, encoding: str, responders: Responders,
          node_cases: dict[str, case_defs.Case]) -> list[case_defs.Case]:
    """One Case per in-process system, carrying the node case's own payload factory."""
    check = case_defs.checker("execute", encoding, "success")
    out = []
    for name, (base, processes) in CASES.items():
        node_case = node_cases[base]
        what = "trivial" if base == "trivial" else "SMA 20/50"
        out.append(case_defs.Case(
            name, f"INSECURE BASELINE in-process {what}, {profile.bars} bars, {processes} process"
                  f"{'es' if processes > 1 else ''} x {THREADS} threads",
            responders.subject(processes), node_case.make_payload, check,
            request_bytes=node_case.request_bytes,
            extra={"baseline_of": base, "processes": processes, "threads": THREADS, "insecure_baseline": True},
        ))
    return out


def label() -> str:
    from .inprocess_server import LABEL  # the responder's stack (pandas, sandbox): only when used

    return LABEL


ANSWER_FIELDS = ("success", "signals", "indicators", "performance", "result", "logs", "error")


async def same_answers(nc, bars: int, encoding: str, headers: dict | None, responders: Responders) -> dict:
    """Does the baseline answer the node's trivial and SMA requests with the same signals,
    indicators, metrics, result, logs and error as the node (everything but timing and ids)?
    {"trivial": True, "sma": True}, or which fields differ."""
    decode = msgspec.msgpack.decode if encoding == subjects.MSGPACK else msgspec.json.decode
    out: dict = {}
    for name, code in (("trivial", case_defs.TRIVIAL), ("sma", case_defs.SMA)):
        payload = case_defs.encoder(encoding)({"code": code, "bars": case_defs.columnar_bars(bars),
                                               "symbol": "BENCH", "timeframe": "1d"})
        node = decode((await nc.request(subjects.EXECUTE, payload, timeout=30, headers=headers)).data)
        base = decode((await nc.request(responders.one, payload, timeout=30, headers=headers)).data)
        differ = [f for f in ANSWER_FIELDS if node.get(f) != base.get(f)]
        out[name] = True if not differ else f"differs in {', '.join(differ)}"
    return out
