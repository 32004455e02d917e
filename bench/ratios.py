"""Issue 18's targets as ratios to figures measured in the same run.

Absolute times do not hold on a shared VM; ratios to a baseline measured minutes apart in the
same run do. The baselines:

* the **fork floor** (bench/forkfloor.py): CPU of one fork + exit of a parent with numpy, pandas
  and TA-Lib imported;
* the **in-process baseline** (bench/inprocess.py, an INSECURE design kept only to compare
  with): the same requests run with RestrictedPython inside the responder's own process, in one
  process (`inprocess_*`) and in two (`inprocess2_*`).

"System CPU per request" is the CPU of the processes that serve the request, at the highest
closed-loop concurrency (where the per-request figure is steadiest): node + zygote + sandbox
children for the node's cases, the responder processes for the in-process cases, the echo
process for the echo. The client and nats-server are the same for every system and left out.

A warm case is read at the highest-throughput level whose runs stayed warm: the bench counts
the sandbox children the node started during each phase (Health.pool.started, before and
after), and a warm run whose tenant's workers stay busy past their wait runs in a fresh child
instead; a level where more than 5 % of the requests did so measures a mix, not warm mode. If
every level did, the busiest is used and the row says how many fell back.

The c=1 latency ratio prefers the interleaved measurement (`comparisons`: the two systems
alternate request by request, so both see the same background load) over two separate phases.
So do the warm throughput ratio and the warm node CPU (`saturation`, bench/saturation.py: bursts
of the warm node and of the two-process baseline in turn, each at its own best concurrency from
the separate phases, CPU from the scheduler's nanosecond clock), when that measurement stayed
warm; the separate phases' figures are still in the row's `how`.
"""

from __future__ import annotations

from typing import Any

from .stats import ratio

# (id, what, kind, args, op, target)
RATIO_TARGETS = (
    ("fresh_cpu_vs_floor_trivial", "fresh run, trivial: zygote + child CPU per run / fork floor CPU per fork+exit",
     "cpu_vs_floor", ("trivial",), "<=", 2.5),
    ("fresh_cpu_vs_floor_sma", "fresh run, SMA: zygote + child CPU per run / fork floor CPU per fork+exit",
     "cpu_vs_floor", ("sma",), "<=", 2.5),
    ("fresh_p50_20rps_trivial", "fresh run, trivial: p50 at 20 req/s open loop / in-process p50 at 20 req/s",
     "openloop_p50", ("trivial", "inprocess_trivial", "20"), "<=", 2.0),
    ("fresh_p50_20rps_sma", "fresh run, SMA: p50 at 20 req/s open loop / in-process p50 at 20 req/s",
     "openloop_p50", ("sma", "inprocess_sma", "20"), "<=", 2.0),
    ("warm_node_cpu_trivial", "warm, trivial: node CPU per request (ms, not a ratio)",
     "node_cpu", ("warm_trivial",), "<=", 0.3),
    ("warm_node_cpu_sma", "warm, SMA: node CPU per request (ms, not a ratio)",
     "node_cpu", ("warm_sma",), "<=", 0.3),
    ("warm_rps_vs_inprocess2_trivial", "warm, trivial: max req/s / in-process 2-process max req/s",
     "peak_rps", ("warm_trivial", "inprocess2_trivial"), ">=", 1.0),
    ("warm_rps_vs_inprocess2_sma", "warm, SMA: max req/s / in-process 2-process max req/s",
     "peak_rps", ("warm_sma", "inprocess2_sma"), ">=", 1.0),
    ("warm_p50_vs_inprocess_trivial", "warm, trivial: p50 c=1 / in-process p50 c=1",
     "p50_c1", ("warm_trivial", "inprocess_trivial"), "<=", 1.1),
    ("warm_p50_vs_inprocess_sma", "warm, SMA: p50 c=1 / in-process p50 c=1",
     "p50_c1", ("warm_sma", "inprocess_sma"), "<=", 1.1),
)

# Pairs measured interleaved at concurrency 1 (case, reference). Not the fresh node: after each
# reply it refills its ready child, and that background work would land on the baseline's
# request that follows; its c=1 ratio comes from the two separate c=1 phases.
COMPARISON_PAIRS = (("warm_trivial", "inprocess_trivial"), ("warm_sma", "inprocess_sma"))


def _ok(result: dict, name: str) -> dict | None:
    entry = result.get("cases", {}).get(name)
    return entry if entry is not None and entry.get("status", "ok") == "ok" and entry.get("levels") else None


def busiest(entry: dict) -> dict:
    levels = entry.get("levels") or {}
    return levels.get(str(max((int(c) for c in levels), default=0))) or {}


# A warm level is judged as warm when at most this share of its requests took a fresh child
# (a tenant's workers busy past their wait: the run falls back to a fresh process).
WARM_FALLBACK_MAX = 0.05


def warm_level(entry: dict) -> tuple[str | None, str]:
    """The level a warm case is judged at: the highest-throughput level whose runs stayed warm
    (children started per request <= WARM_FALLBACK_MAX); else the busiest level, said so."""
    levels = entry.get("levels") or {}
    warm = [(lv.get("throughput_rps") or 0.0, c) for c, lv in levels.items()
            if lv.get("children_started_per_request") is not None
            and lv["children_started_per_request"] <= WARM_FALLBACK_MAX]
    if warm:
        return max(warm)[1], "the busiest level whose runs stayed warm"
    top = str(max((int(c) for c in levels), default=0)) if levels else None
    share = (levels.get(top) or {}).get("children_started_per_request") if top else None
    if share is None:
        return top, "busiest level (fresh fallbacks unknown)"
    return top, f"busiest level; {share:.0%} of its requests took a fresh child (warm workers busy past the wait)"


def best_level(entry: dict) -> str | None:
    """The level with the highest throughput."""
    levels = entry.get("levels") or {}
    rated = [(lv.get("throughput_rps") or 0.0, c) for c, lv in levels.items()]
    return max(rated)[1] if rated else None


def saturated(result: dict, case: str) -> dict | None:
    """The interleaved saturation measurement of warm case `case`, if it ran and stayed warm."""
    for comp in (result.get("saturation") or {}).values():
        if comp.get("case") != case or comp.get("rps_ratio") is None:
            continue
        share = comp.get("children_started_per_request")
        if share is not None and share > WARM_FALLBACK_MAX:
            return None
        return comp
    return None


def warm_peak_rps(result: dict, name: str) -> tuple[float | None, str]:
    entry = _ok(result, name)
    if entry is None:
        return None, ""
    level, why = warm_level(entry)
    return (entry["levels"].get(level) or {}).get("throughput_rps") if level else None, f"c={level}: {why}"


def system_cpu_ms(result: dict, name: str) -> float | None:
    """CPU ms per request of the processes serving case `name`, at its busiest level (a warm
    case: at its `warm_level`)."""
    entry = _ok(result, name)
    if entry is None:
        return None
    level = warm_level(entry)[0] if name.startswith("warm_") else None
    cpu = ((entry["levels"].get(level) if level else busiest(entry)) or {}).get("cpu_ms_per_request") or {}
    if name.startswith("inprocess"):
        parts = ("inprocess",)
    elif name == "echo":
        parts = ("echo",)
    else:
        parts = ("node", "zygote", "sandbox_children")
    values = [cpu.get(p) for p in parts]
    if any(v is None for v in values):
        return None
    return round(sum(values), 4)


def fresh_cpu_ms(result: dict, name: str) -> float | None:
    """Zygote + sandbox children CPU ms per request (what a fresh child costs), busiest level."""
    entry = _ok(result, name)
    if entry is None:
        return None
    cpu = busiest(entry).get("cpu_ms_per_request") or {}
    if cpu.get("zygote") is None or cpu.get("sandbox_children") is None:
        return None
    return round(cpu["zygote"] + cpu["sandbox_children"], 4)


def p50_c1(result: dict, name: str) -> float | None:
    entry = _ok(result, name)
    return None if entry is None else (entry["levels"].get("1") or {}).get("p50_ms")


def paired(result: dict, case: str, reference: str) -> dict | None:
    comp = (result.get("comparisons") or {}).get(f"{case}~{reference}")
    return comp if comp and comp.get("p50_ratio") is not None else None


def openloop_row(result: dict, system: str, row: str) -> dict:
    rows = (((result.get("openloop") or {}).get("systems") or {}).get(system) or {}).get("rows") or {}
    return rows.get(row) or {}


def openloop_p50(result: dict, system: str, row: str) -> float | None:
    return openloop_row(result, system, row).get("p50_ms")


def kept_up(row: dict) -> bool:
    """Did the replies come back at (nearly) the offered rate? A system that cannot keep up
    queues, and its latency at that rate grows with the phase's length."""
    achieved, offered = row.get("achieved_rps"), row.get("offered_rps")
    return achieved is None or offered is None or achieved >= 0.85 * offered


def _evaluate(result: dict, kind: str, args: tuple) -> dict[str, Any]:
    """{measured, reference, ratio, how} for one target."""
    if kind == "cpu_vs_floor":
        floor = (((result.get("forkfloor") or {}).get("fork_exit")) or {}).get("cpu_ms_per_fork")
        value = fresh_cpu_ms(result, args[0])
        return {"measured": value, "reference": floor, "ratio": ratio(value, floor),
                "how": f"{args[0]}: zygote + sandbox children CPU ms per request (busiest level) / fork floor"}
    if kind == "openloop_p50":
        rows = [openloop_row(result, name, args[2]) for name in args[:2]]
        value, ref = (r.get("p50_ms") for r in rows)
        how = f"open loop {args[2]} req/s p50: {args[0]} / {args[1]}"
        for name, r in zip(args[:2], rows):
            if r and not kept_up(r):
                how += f"; {name} did not keep up (replies at {r['achieved_rps']}/s)"
        return {"measured": value, "reference": ref, "ratio": ratio(value, ref), "how": how}
    if kind == "node_cpu":
        entry = _ok(result, args[0])
        if entry is None:
            return {"measured": None, "reference": None, "ratio": None, "how": ""}
        level, why = warm_level(entry)
        value = ((entry["levels"].get(level) or {}).get("cpu_ms_per_request") or {}).get("node")
        how = f"{args[0]}: node process CPU ms per request at c={level} ({why})"
        comp = saturated(result, args[0])
        if comp is not None and comp["cpu_ms_per_request"].get("node") is not None:
            separate = value
            value = comp["cpu_ms_per_request"]["node"]
            how = (f"{args[0]}: node process CPU ms per request, scheduler clock, over the interleaved "
                   f"saturation bursts ({comp['ok']} requests at c={comp['concurrency']}); "
                   f"the separate phase's /proc ticks: {separate}")
        return {"measured": value, "reference": None, "ratio": value, "how": how}
    if kind == "peak_rps":
        value, why = warm_peak_rps(result, args[0])
        b = _ok(result, args[1])
        ref = None if b is None else b.get("peak_throughput_rps")
        how = f"closed-loop req/s: {args[0]} ({why}) / {args[1]} (best level)"
        comp = saturated(result, args[0])
        if comp is not None and comp.get("reference") == args[1]:
            how = (f"interleaved at saturation ({comp['rounds']} rounds x {comp['requests_per_burst']} requests, "
                   f"c={comp['concurrency']} / c={comp['reference_concurrency']}; per-round median "
                   f"{comp['round_ratio_median']}); the separate phases: {value} / {ref} = {ratio(value, ref)}")
            value, ref = comp["rps"], comp["reference_rps"]
            return {"measured": value, "reference": ref, "ratio": comp["rps_ratio"], "how": how}
        return {"measured": value, "reference": ref, "ratio": ratio(value, ref), "how": how}
    if kind == "p50_c1":
        comp = paired(result, *args)
        if comp is not None:
            return {"measured": comp["p50_ms"], "reference": comp["reference_p50_ms"], "ratio": comp["p50_ratio"],
                    "how": f"interleaved at c=1 ({comp['pairs']} pairs): {args[0]} / {args[1]}"}
        value, ref = p50_c1(result, args[0]), p50_c1(result, args[1])
        return {"measured": value, "reference": ref, "ratio": ratio(value, ref),
                "how": f"closed loop c=1 p50, separate phases: {args[0]} / {args[1]}"}
    raise ValueError(kind)


def evaluate_ratios(result: dict) -> list[dict]:
    comparable = result.get("sizes", {}).get("bars") == 1_000
    out = []
    for tid, what, kind, args, op, target in RATIO_TARGETS:
        row = {"id": tid, "what": what, "op": op, "target": target, **_evaluate(result, kind, args), "met": None}
        if row["ratio"] is None:
            row["note"] = "not measured in this run"
        elif not comparable:
            row["note"] = f"not comparable: {result.get('profile')} sizes"
        else:
            row["met"] = row["ratio"] <= target if op == "<=" else row["ratio"] >= target
        out.append(row)
    return out


def comparison(result: dict) -> list[dict]:
    """The issue's side-by-side table: fresh and warm against the in-process baseline."""
    rows = []
    for system, prefix in (("fresh process per run (default)", ""), ("tenant warm worker (opt-in)", "warm_")):
        for what in ("trivial", "sma"):
            case, base, base2 = prefix + what, f"inprocess_{what}", f"inprocess2_{what}"
            comp = paired(result, case, base)
            a, b, b2 = _ok(result, case), _ok(result, base), _ok(result, base2)
            peak = lambda e: None if e is None else e.get("peak_throughput_rps")  # noqa: E731
            top = warm_peak_rps(result, case)[0] if prefix else peak(a)
            sat = saturated(result, case) if prefix else None
            rps2 = sat["rps_ratio"] if sat is not None else ratio(top, peak(b2))
            rows.append({
                "system": system, "strategy": what, "case": case,
                "p50_c1_ratio": comp["p50_ratio"] if comp else ratio(p50_c1(result, case), p50_c1(result, base)),
                "p50_c1_paired": comp is not None,
                "rps_ratio_vs_1proc": ratio(top, peak(b)),
                "rps_ratio_vs_2proc": rps2,
                "rps_vs_2proc_interleaved": sat is not None,
                "cpu_ms": system_cpu_ms(result, case), "baseline_cpu_ms": system_cpu_ms(result, base),
                "cpu_ratio": ratio(system_cpu_ms(result, case), system_cpu_ms(result, base)),
                "p50_20rps_ratio": ratio(openloop_p50(result, case, "20"), openloop_p50(result, base, "20")),
            })
    return rows
