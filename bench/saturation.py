"""Two systems' closed-loop maximum measured interleaved, so both see the same host.

The closed-loop phases of two cases run a minute or more apart. On a shared VM the host's speed
moves 2-3x within minutes, so a throughput ratio of two separate phases partly measures when
each one ran (issue 18's quick runs: the same tree gave the warm node 0.58x and 0.98x of the
in-process baseline within ten minutes). Here the two take turns instead: `rounds` rounds, each
a burst of `requests` requests at each system's own best concurrency (read from its separate
phases), the order alternating between rounds so neither always follows the other.

* throughput = successful replies / the bursts' summed wall time, per system; the ratio of the
  two, and the median of the per-round ratios beside it;
* CPU per request from the scheduler's clock of each process (`/proc/PID/task/*/schedstat`,
  nanoseconds, every thread), not from /proc's 10 ms ticks: the node process, its live sandbox
  children (the tenant's warm workers), the in-process responders;
* sandbox children the node started during its bursts (from its health subject), so a warm
  measurement that fell back to fresh children says so.
"""

from __future__ import annotations

import os
from collections import Counter
from statistics import median
from typing import Awaitable, Callable

from .procs import children_of
from .stats import ratio

# (warm node case, in-process two-process case): issue 18's throughput target
PAIRS = (("warm_trivial", "inprocess2_trivial"), ("warm_sma", "inprocess2_sma"))


def sched_ns(pid: int) -> int | None:
    """CPU time the scheduler has charged to every thread of `pid`, in ns (None: gone)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total


def _cpu(groups: dict[str, Callable[[], list[int]]]) -> dict[str, dict[int, int]]:
    out = {}
    for name, pids in groups.items():
        out[name] = {p: ns for p in pids() if (ns := sched_ns(p)) is not None}
    return out


def _spent(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]]) -> dict[str, int]:
    """ns per group between two snapshots, over the processes alive at both (a process started
    in between counts from its start; one that ended in between is not counted)."""
    out = {}
    for name, now in after.items():
        then = before.get(name, {})
        out[name] = sum(ns - then.get(pid, 0) for pid, ns in now.items())
    return out


def groups_for(node_pid: int | None, zygote_pid: int | None,
               responders: list[int] | None) -> tuple[dict, dict]:
    """What CPU counts for the node's side and for the baseline's side."""
    node: dict[str, Callable[[], list[int]]] = {}
    if node_pid:
        node["node"] = lambda: [node_pid]
    if zygote_pid:
        node["sandbox_children"] = lambda: children_of(zygote_pid)
    base: dict[str, Callable[[], list[int]]] = {}
    if responders:
        base["inprocess"] = lambda: list(responders)
    return node, base


async def interleaved(run_burst: Callable[..., Awaitable[tuple[dict, int]]], a, b, concurrency_a: int,
                      concurrency_b: int, rounds: int, requests: int, index: int,
                      cpu_a: dict, cpu_b: dict,
                      started: Callable[[], Awaitable[int | None]] | None = None) -> tuple[dict, int]:
    """Alternate bursts of case `a` (the node) and case `b` (the baseline); `run_burst(case,
    concurrency, requests, index)` runs one closed-loop burst and returns (stats, next index)."""
    sides = {"a": (a, concurrency_a, cpu_a), "b": (b, concurrency_b, cpu_b)}
    ok = {"a": 0, "b": 0}
    wall = {"a": 0.0, "b": 0.0}
    errors: Counter = Counter()
    cpu_ns = {"a": Counter(), "b": Counter()}
    round_ratios: list[float] = []
    started_total: int | None = 0
    for r in range(rounds):
        rates = {}
        for key in ("a", "b") if r % 2 == 0 else ("b", "a"):
            case, concurrency, groups = sides[key]
            first = await started() if (key == "a" and started is not None) else None
            before = _cpu(groups)
            stats, index = await run_burst(case, concurrency, requests, index)
            after = _cpu(groups)
            if key == "a" and started is not None:
                last = await started()
                if first is None or last is None or started_total is None:
                    started_total = None
                else:
                    started_total += last - first
            cpu_ns[key].update(_spent(before, after))
            ok[key] += stats["ok"]
            wall[key] += stats["wall_s"]
            errors.update({f"{key}:{code}": n for code, n in (stats.get("error_codes") or {}).items()})
            rates[key] = stats["ok"] / stats["wall_s"] if stats["wall_s"] > 0 else None
        if rates.get("a") and rates.get("b"):
            round_ratios.append(rates["a"] / rates["b"])
    rps = {k: round(ok[k] / wall[k], 2) if wall[k] > 0 else None for k in ok}
    per_request = {k: {name: round(ns / 1e6 / ok[k], 4) for name, ns in cpu_ns[k].items()} if ok[k] else {}
                   for k in ok}
    return {
        "case": a.name, "reference": b.name, "rounds": rounds, "requests_per_burst": requests,
        "concurrency": concurrency_a, "reference_concurrency": concurrency_b,
        "ok": ok["a"], "reference_ok": ok["b"],
        "rps": rps["a"], "reference_rps": rps["b"], "rps_ratio": ratio(rps["a"], rps["b"]),
        "round_ratios": [round(x, 3) for x in round_ratios],
        "round_ratio_median": round(median(round_ratios), 3) if round_ratios else None,
        "cpu_ms_per_request": per_request["a"], "reference_cpu_ms_per_request": per_request["b"],
        "cpu_clock": "schedstat (ns, all threads)",
        "children_started": started_total,
        "children_started_per_request": (round(started_total / ok["a"], 4)
                                         if started_total is not None and ok["a"] else None),
        "errors": dict(errors),
    }, index
