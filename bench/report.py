"""The printed table and the design's targets beside the measured numbers."""

from __future__ import annotations

from typing import Any

from .profiles import FULL

# (id, what, case, how to read the measurement, comparison, target, unit)
TARGETS = (
    ("trivial_p50", "execute trivial 1k bars, p50 (c=1)", "trivial", ("level", "1", "p50_ms"), "<=", 0.5, "ms"),
    ("trivial_p99", "execute trivial 1k bars, p99 (c=1)", "trivial", ("level", "1", "p99_ms"), "<=", 2.0, "ms"),
    ("trivial_vs_echo", "execute trivial p50 / raw echo p50 (c=1)", "trivial", ("key", "p50_ratio_vs_echo"),
     "<=", 3.0, "x"),
    ("sma_p50", "execute SMA 20/50 1k bars, p50 (c=1)", "sma", ("level", "1", "p50_ms"), "<=", 1.5, "ms"),
    ("sma_p99", "execute SMA 20/50 1k bars, p99 (c=1)", "sma", ("level", "1", "p99_ms"), "<=", 4.0, "ms"),
    ("first_run", "first run of a new source minus cached, p50 (SMA)", "first_run_sma",
     ("key", "p50_minus_cached_ms"), "<=", 5.0, "ms"),
    ("trivial_rps", "throughput trivial (best of 1/16/64 in flight)", "trivial", ("key", "peak_throughput_rps"),
     ">=", 400.0, "req/s"),
    ("sma_rps", "throughput SMA (best of 1/16/64 in flight)", "sma", ("key", "peak_throughput_rps"),
     ">=", 200.0, "req/s"),
    ("warm_trivial_p50", "execute trivial, tenant's warm worker (opt-in mode), p50 (c=1)", "warm_trivial",
     ("level", "1", "p50_ms"), "<=", 0.5, "ms"),
    ("warm_trivial_p99", "execute trivial, tenant's warm worker, p99 (c=1)", "warm_trivial",
     ("level", "1", "p99_ms"), "<=", 2.0, "ms"),
    ("warm_trivial_vs_echo", "execute trivial, tenant's warm worker, p50 / raw echo p50", "warm_trivial",
     ("key", "p50_ratio_vs_echo"), "<=", 3.0, "x"),
    ("warm_sma_p50", "execute SMA, tenant's warm worker, p50 (c=1)", "warm_sma", ("level", "1", "p50_ms"),
     "<=", 1.5, "ms"),
    ("warm_sma_p99", "execute SMA, tenant's warm worker, p99 (c=1)", "warm_sma", ("level", "1", "p99_ms"),
     "<=", 4.0, "ms"),
    ("warm_sma_rps", "throughput SMA, tenant's warm worker (opt-in mode; best of 1/16/64)", "warm_sma",
     ("key", "peak_throughput_rps"), ">=", 2000.0, "req/s"),
    ("memory_trivial", "private memory per execution, trivial (p50 of children)", "trivial",
     ("memory", "private_mb_p50"), "<=", 10.0, "MB"),
    ("memory_sma", "private memory per execution, SMA (p50 of children)", "sma",
     ("memory", "private_mb_p50"), "<=", 10.0, "MB"),
    ("backtest_1m", "backtest SMA over 1,000,000 bars from BARS, p50 (c=1)", "backtest",
     ("level", "1", "p50_ms"), "<=", 300.0, "ms"),
    ("sweep_100x100k", "sweep 100 pairs x 100,000 bars, p50 (c=1)", "sweep", ("level", "1", "p50_ms"),
     "<=", 1000.0, "ms"),
    # issue 14's tighter targets for the same two cases
    ("backtest_1m_issue14", "backtest SMA over 1,000,000 bars from BARS, p50 (c=1), issue 14", "backtest",
     ("level", "1", "p50_ms"), "<=", 120.0, "ms"),
    ("sweep_100x100k_issue14", "sweep 100 pairs x 100,000 bars, p50 (c=1), issue 14", "sweep",
     ("level", "1", "p50_ms"), "<=", 400.0, "ms"),
)


def _read(entry: dict, how: tuple) -> Any:
    if how[0] == "level":
        return ((entry.get("levels") or {}).get(how[1]) or {}).get(how[2])
    if how[0] == "memory":
        return (entry.get("memory") or {}).get(how[1])
    return entry.get(how[1])


def evaluate_targets(result: dict) -> list[dict]:
    sizes = result.get("sizes", {})
    comparable = {
        "backtest": sizes.get("backtest_bars") == FULL.backtest_bars,
        "sweep": sizes.get("sweep_bars") == FULL.sweep_bars and sizes.get("sweep_pairs") == FULL.sweep_pairs,
    }
    execute_comparable = sizes.get("bars") == FULL.bars
    out = []
    for tid, what, case, how, op, target, unit in TARGETS:
        entry = result["cases"].get(case)
        row = {"id": tid, "what": what, "target": target, "op": op, "unit": unit, "measured": None, "pass": None}
        if entry is None:
            row["note"] = "case not run"
        elif entry.get("status", "ok") != "ok":
            row["note"] = entry["status"]
        else:
            value = _read(entry, how)
            row["measured"] = value
            if value is not None:
                row["pass"] = value <= target if op == "<=" else value >= target
            if not comparable.get(case, execute_comparable):
                row["note"] = f"not comparable: {result.get('profile')} sizes"
                row["pass"] = None
        out.append(row)
    return out


def _fmt(value: Any, width: int, digits: int = 3) -> str:
    if value is None:
        return "-".rjust(width)
    if isinstance(value, float):
        return f"{value:{width}.{digits}f}"
    return str(value).rjust(width)


def table(result: dict) -> str:
    """Markdown table: one row per case and concurrency."""
    lines = [
        "| case | in flight | p50 ms | p90 ms | p99 ms | max ms | req/s | p50 / echo | private MB/exec | "
        "node p50 ms | host CPU used by others | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, entry in result["cases"].items():
        if entry.get("status", "ok") != "ok":
            lines.append(f"| {name} | - | - | - | - | - | - | - | - | - | - | {entry['status']} |")
            continue
        first = True
        for c, s in entry["levels"].items():
            mem = entry.get("memory") or {}
            extra = ""
            if first and entry.get("p50_minus_cached_ms") is not None:
                extra = f" ({entry['p50_minus_cached_ms']:+.2f} ms vs {entry.get('cached_case')})"
            errors = ", ".join(f"{k}x{v}" for k, v in s.get("error_codes", {}).items()) or ""
            others = (s.get("machine_cpu_share") or {}).get("others")
            others_text = f"{others:.0%}" if others is not None else "-"
            lines.append(
                f"| {name + extra if first else ''} | {c} | {_fmt(s['p50_ms'], 0)} | {_fmt(s['p90_ms'], 0)} | "
                f"{_fmt(s['p99_ms'], 0)} | {_fmt(s['max_ms'], 0)} | {_fmt(s['throughput_rps'], 0, 1)} | "
                f"{_fmt(entry.get('p50_ratio_vs_echo'), 0, 2) if first else ''} | "
                f"{_fmt(mem.get('private_mb_p50'), 0, 2) if first and mem else ''} | "
                f"{_fmt(s.get('node_p50_ms'), 0)} | {others_text} | {errors} |"
            )
            first = False
    return "\n".join(lines)


def targets_table(result: dict) -> str:
    lines = ["| target | design | measured | met |", "|---|---:|---:|---|"]
    for row in result.get("targets", []):
        measured = "-" if row["measured"] is None else f"{row['measured']:.3f} {row['unit']}".replace(".000 ", " ")
        met = {True: "yes", False: "**no**", None: "-"}[row["pass"]]
        if row.get("note"):
            met += f" ({row['note']})"
        lines.append(f"| {row['what']} | {row['op']} {row['target']:g} {row['unit']} | {measured} | {met} |")
    return "\n".join(lines)


def cpu_table(result: dict, level: str | None = None) -> str:
    """CPU ms per request by process at one concurrency level: where a request's cost goes."""
    if level is None:
        level = str(max(result.get("sizes", {}).get("concurrency", [1])))  # where capacity is read
    names = ("client", "nats_server", "echo", "inprocess", "node", "zygote", "sandbox_children", "total")
    lines = [f"| CPU ms per request (c={level}) | " + " | ".join(names) + " | CPU-bound capacity req/s |",
             "|---|" + "---:|" * (len(names) + 1)]
    for case, entry in result["cases"].items():
        cpu = ((entry.get("levels") or {}).get(level) or {}).get("cpu_ms_per_request")
        if not cpu:
            continue
        lines.append(f"| {case} | " + " | ".join(_fmt(cpu.get(n), 0, 3) for n in names)
                     + f" | {_fmt(entry.get('cpu_bound_capacity_rps'), 0, 1)} |")
    return "\n".join(lines)


def paired_table(result: dict) -> str:
    """Interleaved measurements at concurrency 1: the case and its reference alternate."""
    lines = ["| case | reference | pairs | p50 ms | reference p50 ms | p50 difference ms | median pair difference ms "
             "| p50 ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, entry in result["cases"].items():
        p = entry.get("paired")
        if not p:
            continue
        lines.append(f"| {name} | {p['reference']} | {p['pairs']} | {_fmt(p['p50_ms'], 0)} | "
                     f"{_fmt(p['reference_p50_ms'], 0)} | {_fmt(p['p50_diff_ms'], 0)} | "
                     f"{_fmt(p['median_pair_diff_ms'], 0)} | {_fmt(p['p50_ratio'], 0, 2)} |")
    return "\n".join(lines)


def memory_table(result: dict) -> str:
    lines = ["| case | private MB p50 | private MB max | RSS MB p50 | idle ready child private MB | children | method |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for case, entry in result["cases"].items():
        mem = entry.get("memory")
        if not mem:
            continue
        if "status" in mem:
            lines.append(f"| {case} | - | - | - | - | - | {mem['status']} |")
            continue
        lines.append(f"| {case} | {_fmt(mem.get('private_mb_p50'), 0, 2)} | {_fmt(mem.get('private_mb_max'), 0, 2)} | "
                     f"{_fmt(mem.get('rss_mb_p50'), 0, 1)} | {_fmt(mem.get('idle_child_private_mb'), 0, 2)} | "
                     f"{mem.get('children_sampled', '-')} | {mem.get('method', '-')} |")
    return "\n".join(lines)


def floor_text(result: dict) -> str:
    floor = result.get("forkfloor")
    if not floor:
        return ""
    if floor.get("status") != "ok":
        return f"fork floor: {floor.get('status')}"
    lines = ["| fork floor (parent: numpy, pandas, TA-Lib imported; gc.freeze) | value |", "|---|---:|"]
    fe, cow = floor["fork_exit"], floor["cow_fault"]
    lines += [
        f"| CPU per fork + exit (parent + child), ms | {fe['cpu_ms_per_fork']:.3f} |",
        f"| &nbsp;&nbsp;parent (fork) / child (exit), ms | {fe['parent_cpu_ms_per_fork']:.3f} / "
        f"{fe['child_cpu_ms_per_fork']:.3f} |",
        f"| wall per fork + exit + reap, p50 / p90 ms | {fe['wall_ms_p50']:.3f} / {fe['wall_ms_p90']:.3f} |",
        f"| minor faults per fork: parent / child | {fe['parent_minor_faults_per_fork']:g} / "
        f"{fe['child_minor_faults_per_fork']:g} |",
        f"| parent anonymous memory (RssAnon) MB; the node's zygote | {fe.get('rssanon_mb', '-')}; "
        f"{floor.get('zygote_rssanon_mb', '-')} |",
        f"| copy-on-write fault (4 KiB), us (median of {cow['rounds']} children x {cow['pages']} pages) | "
        f"{_fmt(cow.get('us_per_fault'), 0, 3)} |",
    ]
    zl = (floor.get("zygote_like") or {}).get("fork_exit")
    if zl:
        lines.append(f"| zygote-like parent (+ sandbox runtime and the zygote's warm-up): CPU per fork + exit, ms "
                     f"| {zl['cpu_ms_per_fork']:.3f} |")
    lines.append(f"| forks measured; transparent huge pages | {fe['forks']}; {floor.get('thp')} |")
    return "\n".join(lines)


def comparisons_table(result: dict) -> str:
    comps = result.get("comparisons") or {}
    if not comps:
        return ""
    lines = ["| interleaved at c=1 | pairs | p50 ms | in-process p50 ms | ratio | median pair difference ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for c in comps.values():
        lines.append(f"| {c['case']} vs {c['reference']} | {c['pairs']} | {_fmt(c['p50_ms'], 0)} | "
                     f"{_fmt(c['reference_p50_ms'], 0)} | {_fmt(c['p50_ratio'], 0, 2)} | "
                     f"{_fmt(c['median_pair_diff_ms'], 0)} |")
    return "\n".join(lines)


def saturation_table(result: dict) -> str:
    comps = result.get("saturation") or {}
    if not comps:
        return ""
    lines = ["| interleaved at saturation | rounds x requests | in flight | req/s | in-process req/s | ratio | "
             "per-round median | node CPU ms/req | workers CPU ms/req | in-process CPU ms/req | "
             "fresh children per request | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for c in comps.values():
        cpu, ref_cpu = c.get("cpu_ms_per_request") or {}, c.get("reference_cpu_ms_per_request") or {}
        errors = ", ".join(f"{k}x{v}" for k, v in (c.get("errors") or {}).items())
        lines.append(f"| {c['case']} vs {c['reference']} | {c['rounds']} x {c['requests_per_burst']} | "
                     f"{c['concurrency']} / {c['reference_concurrency']} | {_fmt(c['rps'], 0, 1)} | "
                     f"{_fmt(c['reference_rps'], 0, 1)} | {_fmt(c['rps_ratio'], 0, 2)} | "
                     f"{_fmt(c['round_ratio_median'], 0, 2)} | {_fmt(cpu.get('node'), 0)} | "
                     f"{_fmt(cpu.get('sandbox_children'), 0)} | {_fmt(ref_cpu.get('inprocess'), 0)} | "
                     f"{_fmt(c.get('children_started_per_request'), 0, 4)} | {errors} |")
    return "\n".join(lines)


def openloop_table(result: dict) -> str:
    section = result.get("openloop")
    if not section or not section.get("systems"):
        return ""
    lines = [f"| open loop ({section['arrivals']} arrivals, sender never waits) | offered req/s | achieved req/s | "
             "n | p50 ms | p90 ms | p99 ms | max ms | node p50 ms | send lag p99 ms | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for system, entry in section["systems"].items():
        first = True
        for key, s in entry["rows"].items():
            label = system if first else ""
            rate = f"{s['offered_rps']:g}" + (" (50 % of max)" if key == "half_max" else "")
            errors = ", ".join(f"{k}x{v}" for k, v in s.get("error_codes", {}).items())
            lines.append(f"| {label} | {rate} | {_fmt(s.get('achieved_rps'), 0, 1)} | {s['ok']} | "
                         f"{_fmt(s['p50_ms'], 0)} | {_fmt(s['p90_ms'], 0)} | {_fmt(s['p99_ms'], 0)} | "
                         f"{_fmt(s['max_ms'], 0)} | {_fmt(s.get('node_p50_ms'), 0)} | "
                         f"{_fmt(s.get('send_lag_ms_p99'), 0, 2)} | {errors} |")
            first = False
    return "\n".join(lines)


def ratios_table(result: dict) -> str:
    rows = result.get("ratios") or []
    if not rows:
        return ""
    baseline = (result.get("setup") or {}).get("inprocess") or {}
    lines = [f"in-process baseline: {baseline['status']}", ""] if baseline.get("status", "ok") != "ok" else []
    lines += ["| target (issue 18) | measured | reference | ratio | target | met | read as |",
              "|---|---:|---:|---:|---:|---|---|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: "-"}[r["met"]]
        if r.get("note"):
            met += f" ({r['note']})"
        lines.append(f"| {r['what']} | {_fmt(r['measured'], 0)} | {_fmt(r['reference'], 0)} | "
                     f"{_fmt(r['ratio'], 0, 2)} | {r['op']} {r['target']:g} | {met} | {r.get('how', '')} |")
    return "\n".join(lines)


def comparison_table(result: dict) -> str:
    rows = result.get("comparison") or []
    if not rows:
        return ""
    lines = ["| vs the in-process baseline (INSECURE) | p50 c=1 | p50 at 20 req/s | max req/s vs 1 process | "
             "max req/s vs 2 processes | system CPU per request |", "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        x = lambda v: "-" if v is None else f"{v:.2f}x"  # noqa: E731
        cpu = x(r["cpu_ratio"])
        if r.get("cpu_ms") is not None and r.get("baseline_cpu_ms") is not None:
            cpu += f" ({r['cpu_ms']:.2f} / {r['baseline_cpu_ms']:.2f} ms)"
        lines.append(f"| {r['system']}, {r['strategy']} | {x(r['p50_c1_ratio'])} | {x(r['p50_20rps_ratio'])} | "
                     f"{x(r['rps_ratio_vs_1proc'])} | {x(r['rps_ratio_vs_2proc'])} | {cpu} |")
    return "\n".join(lines)


def render(result: dict) -> str:
    m = result["machine"]
    head = (f"profile {result['profile']}  |  {m.get('nproc')} cores {m.get('cpu_model', '?')}, "
            f"{m.get('mem_total_mb', '?')} MB, Python {m.get('python')}  |  load {m.get('loadavg')} -> "
            f"{m.get('loadavg_end')}  |  wall {result.get('wall_s')} s")
    parts = [head, table(result), paired_table(result), targets_table(result), cpu_table(result),
             memory_table(result), floor_text(result), comparisons_table(result), saturation_table(result),
             openloop_table(result),
             ratios_table(result), comparison_table(result)]
    return "\n\n".join(p for p in parts if p)
