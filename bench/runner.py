"""One benchmark run: set up (or reach) the broker and node, measure every case, return the JSON.

Load model: closed loop. At concurrency c, c client tasks on one NATS connection each send a
request, await its reply, and send the next, until the phase's request count or issuing-time
budget runs out; requests in flight then are awaited and counted. Latency is client-side,
from just before `nc.request` to the reply's arrival (perf_counter_ns), successful replies only;
failures are counted by error code. Throughput = successful replies / phase wall time.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime, timezone
from typing import Callable

import nats
import nats.errors
import numpy as np

from contracts import BarArrays, subjects

from . import cases as case_defs
from . import forkfloor, inprocess, openloop, ratios, saturation
from .memory import ChildSampler
from .cpu import CpuMeter
from .procs import Proc, find_zygote, machine, spawn, wait_for_line
from .profiles import Profile
from .report import evaluate_targets
from .stats import ratio, summarize

SERIES = ("BENCH", "1m")
# how long a phase's count of sandbox children started waits for the pool to settle (children_started)
SETTLE_COUNT_S = 3.0


class Unavailable(Exception):
    pass


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, nats.errors.NoRespondersError):
        return "NO_RESPONDERS"
    if isinstance(exc, (nats.errors.TimeoutError, asyncio.TimeoutError)):
        return "CLIENT_TIMEOUT"
    return type(exc).__name__


async def run_phase(nc, subject: str, make: Callable[[int], bytes], check: case_defs.Check,
                    headers: dict | None, concurrency: int, count: int, seconds: float,
                    timeout: float, start_index: int = 0, node_time: bool = True) -> tuple[dict, int]:
    """Closed-loop phase; returns (stats, next request index)."""
    latencies: list[int] = []
    node_ms: list[float] = []
    errors: Counter = Counter()
    count = max(count, concurrency)
    issued = 0
    clock = time.perf_counter_ns
    request = nc.request
    t_start = time.perf_counter()
    deadline = t_start + seconds

    first = None

    async def worker() -> None:
        nonlocal issued, first
        while issued < count and time.perf_counter() < deadline:
            payload = make(start_index + issued)
            issued += 1
            t0 = clock()
            try:
                msg = await request(subject, payload, timeout=timeout, headers=headers)
            except Exception as exc:  # noqa: BLE001 - counted, never fatal
                errors[_error_code(exc)] += 1
                continue
            elapsed = clock() - t0
            if first is None:
                first = elapsed
            code, server_ms = check(msg.data)
            if code is None:
                latencies.append(elapsed)
                if server_ms is not None:
                    node_ms.append(server_ms)
            else:
                errors[code] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t_start
    stats = summarize(latencies, wall, concurrency, errors)
    stats["first_ms"] = round(first / 1e6, 4) if first is not None else None
    if node_time and node_ms:
        # the node's own time (execution_time_ms of the replies) and what the rest costs
        stats["node_p50_ms"] = round(float(np.median(node_ms)), 4)
        if stats["p50_ms"] is not None:
            stats["outside_node_p50_ms"] = round(stats["p50_ms"] - stats["node_p50_ms"], 4)
    return stats, start_index + issued


async def paired_phase(nc, a, b, headers: dict | None, pairs: int, seconds: float, timeout: float,
                       start_index: int) -> tuple[dict, int]:
    """Alternate requests of case `a` and reference case `b` at concurrency 1, so both see the
    same machine noise; returns both summaries, their p50 difference and the median of
    per-pair differences (a_i - b_i)."""
    lat: dict[str, list[int]] = {"a": [], "b": []}
    errors: Counter = Counter()
    diffs: list[int] = []
    clock = time.perf_counter_ns
    deadline = time.perf_counter() + seconds
    index = start_index
    t_start = time.perf_counter()
    done = 0
    while done < pairs and time.perf_counter() < deadline:
        got = {}
        for key, case in (("b", b), ("a", a)) if done % 2 else (("a", a), ("b", b)):
            t0 = clock()
            try:
                msg = await nc.request(case.subject, case.make_payload(index), timeout=timeout, headers=headers)
            except Exception as exc:  # noqa: BLE001
                errors[f"{key}:{_error_code(exc)}"] += 1
                continue
            finally:
                index += 1
            elapsed = clock() - t0
            code, _server_ms = case.check(msg.data)
            if code is None:
                lat[key].append(elapsed)
                got[key] = elapsed
            else:
                errors[f"{key}:{code}"] += 1
        if len(got) == 2:
            diffs.append(got["a"] - got["b"])
        done += 1
    wall = time.perf_counter() - t_start
    sa = summarize(lat["a"], wall, 1)
    sb = summarize(lat["b"], wall, 1)
    out = {
        "pairs": len(diffs), "case": a.name, "reference": b.name,
        "p50_ms": sa["p50_ms"], "reference_p50_ms": sb["p50_ms"],
        "p50_diff_ms": round(sa["p50_ms"] - sb["p50_ms"], 4) if sa["p50_ms"] is not None and sb["p50_ms"] is not None else None,
        "p50_ratio": ratio(sa["p50_ms"], sb["p50_ms"]),
        "median_pair_diff_ms": round(float(np.median(diffs)) / 1e6, 4) if diffs else None,
        "errors": dict(errors),
    }
    return out, index


def bench_bars(n: int) -> BarArrays:
    cols = case_defs.random_walk(n, seed=11)
    ts = (case_defs.START_MS + np.arange(n, dtype=np.int64) * case_defs.MINUTE_MS) * 1_000_000
    return BarArrays.from_numpy(ts, **cols)


def series_ref(n: int) -> dict:
    return {"symbol": SERIES[0], "timeframe": SERIES[1], "start": case_defs.START_MS,
            "end": case_defs.START_MS + (n - 1) * case_defs.MINUTE_MS}


async def load_bars(nc, n: int) -> dict:
    """Store the benchmark series in BARS (idempotent); the load time is reported, not measured."""
    from backtest.store import BarStore

    store = BarStore(nc.jetstream())
    t0 = time.perf_counter()
    report = await store.load(SERIES[0], SERIES[1], bench_bars(n))
    return {"bars": n, "stored_bars": report.bars, "skipped_bars": report.skipped_bars,
            "seconds": round(time.perf_counter() - t0, 3)}


async def children_started(nc, node_id: str | None, settle_s: float = 0.0) -> int | None:
    """The node's count of sandbox children started so far (Health.pool.started), from its own
    health subject; None when it cannot be read.

    `settle_s` > 0: first wait, up to that long, until the pool has no run in flight and its ready
    children are back at target, so the replacements a phase's runs asked for are counted in that
    phase (a fresh run's replacement is forked after its reply, and lands after the client has it).
    """
    if not node_id:
        return None
    deadline = time.monotonic() + settle_s
    while True:
        try:
            msg = await nc.request(subjects.node_health(node_id), b"{}", timeout=5.0)
            pool = json.loads(msg.data)["pool"]
            started = int(pool["started"])
        except Exception:  # noqa: BLE001 - a figure missing from the JSON, not a failed run
            return None
        settled = pool.get("busy", 0) == 0 and pool.get("ready", 0) >= pool.get("target", 0)
        if settled or time.monotonic() >= deadline:
            return started
        await asyncio.sleep(0.02)


async def wait_healthy(nc, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = "no reply"
    while time.monotonic() < deadline:
        try:
            msg = await nc.request(subjects.HEALTH, b"{}", timeout=2.0)
            health = json.loads(msg.data)
            if health.get("status") == "ok":
                return health
            last = f"status {health.get('status')}"
        except Exception as exc:  # noqa: BLE001
            last = _error_code(exc)
        await asyncio.sleep(0.1)
    raise TimeoutError(f"node not healthy within {timeout}s ({last})")


async def run(profile: Profile, *, nats_url: str | None = None, node_pid: int | None = None,
              encoding: str = subjects.JSON, node_env: dict[str, str] | None = None,
              only: tuple[str, ...] | None = None, log: Callable[[str], None] = print) -> dict:
    """Measure every case of `profile`; returns the JSON document (see BENCHMARKS.md)."""
    started = time.perf_counter()
    result: dict = {
        "format": "strategy-exec-bench/1",
        "profile": profile.name,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": profile.as_dict(),
        "setup": {},
        "cases": {},
    }
    procs: list[Proc] = []
    responders: inprocess.Responders | None = None
    server = None
    nc = None
    reply_file = None
    try:
        # -- broker and node ------------------------------------------------------------------
        setup = result["setup"]
        setup["encoding"] = encoding
        if nats_url is None:
            from node.embedded import EmbeddedServer

            server = EmbeddedServer().start()
            nats_url = server.url
            if _wants_inprocess(only):
                responders = inprocess.spawn_all(nats_url)  # import pandas while the node starts
                procs.extend(responders.procs)
            env = {"NATS_URL": nats_url, **case_defs.WARM_NODE_ENV, **(node_env or {})}
            node = spawn("node", ["-m", "node", "run"], env)
            procs.append(node)
            wait_for_line(node, "ready on", 120)
            node_pid = node.pid
            setup.update(mode="managed", node="subprocess: python -m node run", node_env=env,
                         nats_server="embedded nats-server (JetStream), own process")
        else:
            setup.update(mode="external", node=f"running node (pid {node_pid or 'unknown'})")
            if _wants_inprocess(only):
                responders = inprocess.spawn_all(nats_url)
                procs.extend(responders.procs)
        setup["nats_url"] = nats_url
        nc = await nats.connect(nats_url, name="bench-client", max_reconnect_attempts=3,
                                pending_size=64 * 1024 * 1024)
        health = await wait_healthy(nc, 60)
        setup["node_id"] = health.get("node_id")
        setup["node_limits"] = health.get("limits")
        setup["isolation_active"] = [x["name"] for x in health.get("isolation", []) if x.get("active")]
        zygote_pid, how = find_zygote(node_pid)
        setup["zygote"] = {"pid": zygote_pid, "found": how}
        headers = {subjects.CONTENT_TYPE: encoding} if encoding == subjects.MSGPACK else None

        # -- the echo floor replies with a real trivial execute reply --------------------------
        trivial_req = case_defs.encoder(encoding)(
            {"code": case_defs.TRIVIAL, "bars": case_defs.columnar_bars(profile.bars),
             "symbol": "BENCH", "timeframe": "1d"})
        real = await nc.request(subjects.EXECUTE, trivial_req, timeout=30, headers=headers)
        fd, reply_file = tempfile.mkstemp(prefix="bench-echo-reply-")
        os.write(fd, real.data)
        os.close(fd)
        echo_subject = f"bench.echo.{uuid.uuid4().hex[:8]}"
        echo = spawn("echo", ["-m", "bench.echo", nats_url, echo_subject, reply_file,
                              (real.headers or {}).get("Content-Type", "")], {})
        procs.append(echo)
        wait_for_line(echo, "echo ready", 30)
        setup["echo"] = ("separate process, nats-py on uvloop: request = the trivial execute payload, "
                         f"reply = a real trivial ExecuteResult ({len(real.data)} bytes) with its headers")
        setup["reply_bytes_trivial"] = len(real.data)
        if responders is not None:
            try:
                inprocess.wait_ready(responders)
                same = await inprocess.same_answers(nc, profile.bars, encoding, headers, responders)
            except Exception as exc:  # noqa: BLE001 - the baseline is missing from this run, said so
                setup["inprocess"] = {"status": f"unavailable: {type(exc).__name__}: {str(exc)[-500:]}"}
                responders = None
            else:
                setup["inprocess"] = {"status": "ok", "label": inprocess.label(), "pids": responders.pids,
                                      "threads": inprocess.THREADS, "one_process_subject": responders.one,
                                      "two_process_subject": responders.two, "matches_node": same}
            log(f"in-process baseline (INSECURE, bench only): {setup['inprocess']}")

        # -- the fork floor, in its own process, before any case loads the machine -------------
        if only is None or "forkfloor" in only:
            log("fork floor ...")
            result["forkfloor"] = await forkfloor.run_subprocess(profile)
            if zygote_pid:
                result["forkfloor"]["zygote_rssanon_mb"] = _status_mb(zygote_pid, "RssAnon")
            log(f"fork floor: {forkfloor.summary_line(result['forkfloor'])}")

        # -- bars for backtests -----------------------------------------------------------------
        bars_problem = None
        wanted = [c for c in (*case_defs.CASE_NAMES, *inprocess.CASE_NAMES) if only is None or c in only
                  or (c in inprocess.CASE_NAMES and "inprocess" in only)]
        if "backtest" in wanted or "sweep" in wanted:
            try:
                setup["bars_load"] = await load_bars(nc, max(profile.backtest_bars, profile.sweep_bars))
                log(f"BARS: {setup['bars_load']}")
            except Exception as exc:  # noqa: BLE001
                bars_problem = f"could not load BARS: {type(exc).__name__}: {exc}"

        meter = CpuMeter({"client": os.getpid(), "nats_server": server.proc.pid if server and server.proc else None,
                          "node": node_pid, "zygote": zygote_pid, "echo": echo.pid,
                          "inprocess": responders.pids if responders else None})
        all_cases = case_defs.build(profile, encoding, echo_subject, series_ref(profile.backtest_bars),
                                    series_ref(profile.sweep_bars))
        by_name = {c.name: c for c in all_cases}
        if responders is not None:  # right after the echo: the baseline, on the node's own bytes
            baseline = inprocess.build(profile, encoding, responders, by_name)
            all_cases[1:1] = baseline
            by_name.update((c.name, c) for c in baseline)
        index = 0
        for case in all_cases:
            if case.name not in wanted:
                continue
            entry = {"title": case.title, "subject": case.subject, "request_bytes": case.request_bytes,
                     "status": "ok", "levels": {}, "memory": None}
            if case.compare_to:
                entry["cached_case"] = case.compare_to
            if case.extra:
                entry.update(case.extra)
            result["cases"][case.name] = entry
            log(f"-- {case.name}: {case.title}  (t={time.perf_counter() - started:.1f}s)")
            timeout = profile.heavy_timeout_s if case.heavy else profile.request_timeout_s
            levels = profile.heavy_concurrency if case.heavy else profile.concurrency
            count = profile.heavy_requests if case.heavy else profile.requests
            seconds = profile.heavy_seconds if case.heavy else profile.seconds
            warm = profile.heavy_warmup if case.heavy else profile.warmup
            try:
                if case.heavy and bars_problem:
                    raise Unavailable(bars_problem)
                stats, index = await run_phase(nc, case.subject, case.make_payload, case.check, headers,
                                               1, warm, 3600.0, timeout, index, case.node_time)
                if stats["ok"] == 0:
                    raise Unavailable(", ".join(f"{k} x{v}" for k, v in stats["error_codes"].items()))
                entry["warmup"] = {"requests": stats["requests"], "first_ms": stats["first_ms"],
                                   "p50_ms": stats["p50_ms"]}
                for c in levels:
                    await asyncio.sleep(profile.settle_s)
                    started_before = await children_started(nc, setup.get("node_id"))
                    before = meter.snapshot()
                    stats, index = await run_phase(nc, case.subject, case.make_payload, case.check, headers,
                                                   c, count, seconds, timeout, index, case.node_time)
                    after = meter.snapshot()
                    started_after = await children_started(nc, setup.get("node_id"), SETTLE_COUNT_S)
                    if started_before is not None and started_after is not None and stats["requests"]:
                        # sandbox children the node's pool took from the zygote during the phase: a
                        # fresh run's replacement, a new warm worker, or a warm run that fell back
                        # to a fresh child (its tenant's workers busy past the wait)
                        stats["children_started"] = started_after - started_before
                        stats["children_started_per_request"] = round(
                            (started_after - started_before) / stats["requests"], 4)
                    stats["cpu_ms_per_request"] = meter.per_request_ms(before, after, stats["requests"])
                    stats["machine_cpu_share"] = meter.machine_share(before, after)
                    entry["levels"][str(c)] = stats
                    log(_line(case.name, stats))
                ref = by_name.get(case.pair_with) if case.pair_with else None
                if ref is not None and result["cases"].get(ref.name, {}).get("status") == "ok":
                    await asyncio.sleep(profile.settle_s)
                    entry["paired"], index = await paired_phase(nc, case, ref, headers, count, seconds,
                                                                timeout, index)
                    log(f"   paired with {ref.name}: {entry['paired']}")
                if case.memory and zygote_pid:
                    entry["memory"] = await probe_memory(nc, case, zygote_pid, headers, profile, timeout, index)
                    index += 1_000_000
                    log(f"   memory: {entry['memory']}")
                elif case.memory:
                    entry["memory"] = {"status": f"unavailable: {how}"}
            except Unavailable as exc:
                entry["status"] = f"unavailable: {exc}"
                entry["levels"] = {}
                log(f"   {entry['status']}")
        # -- issue 18: interleaved c=1 comparisons with the in-process baseline, open loop -------
        result["comparisons"] = {}
        for name, ref in ratios.COMPARISON_PAIRS:
            if all(result["cases"].get(n, {}).get("status") == "ok" for n in (name, ref)):
                await asyncio.sleep(profile.settle_s)
                comp, index = await paired_phase(nc, by_name[name], by_name[ref], headers, profile.requests,
                                                 profile.seconds, profile.request_timeout_s, index)
                result["comparisons"][f"{name}~{ref}"] = comp
                log(f"-- {name} interleaved with {ref} at c=1: p50 {comp['p50_ms']} / {comp['reference_p50_ms']} ms"
                    f" = {comp['p50_ratio']}")
        result["saturation"] = {}
        if only is None or "saturation" in only:
            result["saturation"], index = await _saturation(nc, by_name, result, profile, headers, index, node_pid,
                                                            zygote_pid, responders, log)
        _derive(result)  # peaks, for the open loop's 50 % rows
        if only is None or "openloop" in only:
            log(f"-- open loop ({profile.openloop_arrivals} arrivals)  (t={time.perf_counter() - started:.1f}s)")
            result["openloop"], index = await openloop.run_section(
                nc, by_name, result, profile, headers, index, log,
                started=lambda: children_started(nc, setup.get("node_id"), SETTLE_COUNT_S))
        troubled = [n for n, e in result["cases"].items()
                    if e["status"] != "ok" or any(lv["errors"] for lv in e["levels"].values())]
        node_proc = next((p for p in procs if p.name == "node"), None)
        if troubled and node_proc is not None:
            result["setup"]["node_log_tail"] = node_proc.tail(4000)
        _derive(result)
        result["targets"] = evaluate_targets(result)
        result["ratios"] = ratios.evaluate_ratios(result)
        result["comparison"] = ratios.comparison(result)
        if node_pid:
            result["setup"]["node_rss_mb_end"] = _rss_mb(node_pid)
        result["machine"]["loadavg_end"] = list(os.getloadavg())
    finally:
        if nc is not None:
            try:
                await nc.drain()
            except Exception:  # noqa: BLE001
                pass
        for proc in reversed(procs):
            proc.stop()
        if server is not None:
            server.close()
        if reply_file:
            os.unlink(reply_file)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    return result


async def _saturation(nc, by_name: dict, result: dict, profile: Profile, headers: dict | None, index: int,
                      node_pid: int | None, zygote_pid: int | None, responders, log) -> tuple[dict, int]:
    """Issue 18's throughput pairs, interleaved at each system's best concurrency (saturation.py)."""
    out: dict = {}
    node_groups, base_groups = saturation.groups_for(node_pid, zygote_pid, responders.pids if responders else None)
    node_id = result["setup"].get("node_id")

    async def burst(case, concurrency: int, requests: int, at: int) -> tuple[dict, int]:
        return await run_phase(nc, case.subject, case.make_payload, case.check, headers, concurrency, requests,
                               profile.seconds, profile.request_timeout_s, at, node_time=False)

    for name, ref in saturation.PAIRS:
        a, b = (result["cases"].get(n) or {} for n in (name, ref))
        if not (a.get("status") == "ok" and a.get("levels") and b.get("status") == "ok" and b.get("levels")):
            continue
        level_a, level_b = ratios.warm_level(a)[0], ratios.best_level(b)
        if level_a is None or level_b is None:
            continue
        await asyncio.sleep(profile.settle_s)
        comp, index = await saturation.interleaved(
            burst, by_name[name], by_name[ref], int(level_a), int(level_b), profile.saturation_rounds,
            profile.saturation_requests, index, node_groups, base_groups,
            started=lambda: children_started(nc, node_id))
        out[f"{name}~{ref}"] = comp
        log(f"-- {name} and {ref} interleaved at saturation (c={level_a} / c={level_b}, "
            f"{comp['rounds']} x {comp['requests_per_burst']}): {comp['rps']} / {comp['reference_rps']} req/s "
            f"= {comp['rps_ratio']} (round median {comp['round_ratio_median']}); node CPU "
            f"{comp['cpu_ms_per_request'].get('node')} ms per request")
    return out, index


async def probe_memory(nc, case, zygote_pid: int, headers, profile: Profile, timeout: float,
                       index: int) -> dict:
    make = case.memory_payload if case.memory == "hold" else case.make_payload
    n = profile.heavy_memory_requests if case.heavy else profile.memory_requests
    sampler = ChildSampler(zygote_pid)
    sampler.start()
    try:
        stats, _ = await run_phase(nc, case.subject, make, case.check, headers, 1, n, 3600.0, timeout, index)
        await asyncio.sleep(0.05)
    finally:
        out = sampler.stop()
    out["method"] = "hold variant" if case.memory == "hold" else "sampled during the case's own requests"
    out["probe_p50_ms"] = stats["p50_ms"]
    if stats["errors"]:
        out["errors"] = stats["error_codes"]
    return out


def _status_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _rss_mb(pid: int) -> float | None:
    return _status_mb(pid, "VmRSS")


def _wants_inprocess(only: tuple[str, ...] | None) -> bool:
    return only is None or "inprocess" in only or any(c in only for c in inprocess.CASE_NAMES)


def _line(name: str, s: dict) -> str:
    if s["p50_ms"] is None:
        return f"   c={s['concurrency']:<3} no successful replies: {s['error_codes']}"
    errs = f"  errors {s['error_codes']}" if s["errors"] else ""
    if s.get("node_p50_ms") is not None:
        errs += f"  (node {s['node_p50_ms']:.3f} ms)"
    share = s.get("machine_cpu_share") or {}
    if share:
        errs += f"  [machine busy {share['busy']:.0%}, others {share['others']:.0%}]"
    return (f"   c={s['concurrency']:<3} n={s['ok']:<5} p50 {s['p50_ms']:8.3f}  p90 {s['p90_ms']:8.3f}  "
            f"p99 {s['p99_ms']:8.3f}  max {s['max_ms']:8.3f} ms  {s['throughput_rps']:8.1f}/s{errs}")


def _derive(result: dict) -> None:
    """Ratios to the echo at concurrency 1, first-run minus cached p50, peak throughput."""
    cases = result["cases"]
    echo = cases.get("echo", {}).get("levels", {}).get("1", {})
    echo_p50 = echo.get("p50_ms")
    for name, entry in cases.items():
        levels = entry.get("levels") or {}
        one = levels.get("1", {})
        entry["p50_ratio_vs_echo"] = ratio(one.get("p50_ms"), echo_p50)
        paired = entry.get("paired") or {}
        if paired.get("reference") == "echo":
            entry["p50_ratio_vs_echo_paired"] = paired.get("p50_ratio")
        rates = [lv["throughput_rps"] for lv in levels.values() if lv.get("throughput_rps") is not None]
        entry["peak_throughput_rps"] = max(rates) if rates else None
        # What the machine could sustain if this case had every core to itself: cores / CPU per
        # request (all processes) at the busiest level measured. Robust to other users of the host.
        busiest = levels.get(str(max((int(c) for c in levels), default=0))) or {}
        total = (busiest.get("cpu_ms_per_request") or {}).get("total")
        entry["cpu_bound_capacity_rps"] = (round((os.cpu_count() or 1) * 1000.0 / total, 1)
                                           if total else None)
    for name, entry in cases.items():
        ref = entry.get("cached_case")
        if ref is None or ref not in cases:
            continue
        # the interleaved measurement when there is one: both halves saw the same noise
        paired = entry.get("paired") or {}
        if paired.get("p50_diff_ms") is not None:
            entry["p50_minus_cached_ms"] = paired["p50_diff_ms"]
            continue
        a = (entry.get("levels") or {}).get("1", {}).get("p50_ms")
        b = (cases[ref].get("levels") or {}).get("1", {}).get("p50_ms")
        entry["p50_minus_cached_ms"] = round(a - b, 4) if a is not None and b is not None else None
