"""Where the time of one execute goes, stage by stage (a diagnostic, not part of the table).

`python -m bench.breakdown [--bars 1000] [--runs 200] [--strategy trivial|sma]`

Node side (in this process, the node's own functions on the same request bytes): decode,
compile-cache lookup, bars → BarArrays, Job build (incl. marshal of the code), Job encode,
Outcome decode, ExecuteResult build, reply encode.

Child side: this process turns itself into a zygote the way `sandbox/zygote.py` does (same
warm-up, `gc.freeze`, same lockdown plan), then forks one-shot children that run the real
`lockdown.apply` and `sandbox.runtime.run` with timers wrapped around its pieces (monkeypatched
here only). Each child sends its timings and resource usage back on its channel. Per child:
fork (parent side), child start latency, lockdown, job decode, the runtime's stages, outcome
encode, and the exit/reap time (address-space teardown) and minor page faults (copy-on-write).
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import gc  # noqa: E402
import resource  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import msgspec  # noqa: E402

clock = time.perf_counter_ns


def _timer(store: dict, name: str, fn):
    def wrapped(*args, **kwargs):
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            store[name] = store.get(name, 0) + (clock() - t0)
    wrapped.__wrapped__ = fn
    return wrapped


def node_side(request: bytes, runs: int) -> dict[str, float]:
    """µs per stage of the node's execute handler, minus the sandbox round trip."""
    from contracts import ExecuteRequest, ExecuteResult, decode, encode
    from node.config import Settings
    from node.jobs import check_language, execute_job
    from sandbox.compiler import CompileCache
    from sandbox.protocol import frame, job_encoder, outcome_decoder
    from sandbox.runtime import run as runtime_run

    settings = Settings.from_env({})
    cache = CompileCache(64)
    req = decode(request, ExecuteRequest)
    compiled, _ = cache.get(req.code)
    job = execute_job(req, settings, compiled, 10_000)
    outcome_bytes = job_encoder.encode(runtime_run(job))
    t: dict[str, list[int]] = defaultdict(list)
    for _ in range(runs):
        t0 = clock()
        req = decode(request, ExecuteRequest)
        t1 = clock()
        check_language(req.language)
        compiled, _hit = cache.get(req.code)
        t2 = clock()
        code_bytes = compiled.to_bytes()
        t3 = clock()
        job = execute_job(req, settings, compiled, 10_000)
        t4 = clock()
        body = frame(job_encoder.encode(job))
        t5 = clock()
        outcome = outcome_decoder.decode(outcome_bytes)
        t6 = clock()
        result = ExecuteResult(success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
                               performance=outcome.performance, result=outcome.result, logs=outcome.logs,
                               error=outcome.error)
        data = encode(result)
        t7 = clock()
        t["decode ExecuteRequest (msgspec, JSON)"].append(t1 - t0)
        t["compile cache lookup (sha256 of source)"].append(t2 - t1)
        t["  of which CompiledStrategy.to_bytes (marshal)"].append(t3 - t2)
        t["execute_job (bars -> BarArrays, limits, to_bytes)"].append(t4 - t3)
        t["Job encode + frame (msgpack)"].append(t5 - t4)
        t["Outcome decode"].append(t6 - t5)
        t["ExecuteResult build + encode (JSON)"].append(t7 - t6)
    out = {k: statistics.median(v) / 1000 for k, v in t.items()}
    out["(sizes) request / job frame / outcome / reply bytes"] = f"{len(request)} / {len(body)} / {len(outcome_bytes)} / {len(data)}"  # type: ignore[assignment]
    _ = code_bytes
    return out


def warm_node_side(request: bytes, kind: str, runs: int) -> dict[str, float]:
    """µs per stage of the node's own work for a warm run (node/raw_execute.py): the request's
    small fields decoded, the bars left as raw bytes for the worker; and what the worker adds."""
    from contracts import ExecuteResult, encode
    from node.raw_execute import head_of
    from node.config import Settings
    from node.jobs import check_language, check_parameters, run_limits
    from sandbox.compiler import CompileCache
    from sandbox.protocol import Job, OutputLimits, frame, job_encoder, outcome_decoder
    from sandbox.request_bars import bars_of_request
    from sandbox.runtime import run as runtime_run

    settings = Settings.from_env({})
    cache = CompileCache(64)
    t: dict[str, list[int]] = defaultdict(list)
    outcome_bytes = b""
    for _ in range(runs):
        t0 = clock()
        head = head_of(request, kind)
        t1 = clock()
        check_language(head.language)
        compiled, _hit = cache.get(head.code)
        _, memory_mb = run_limits(head, settings)
        check_parameters(head.parameters)
        job = Job(kind="execute", code=compiled.to_bytes(), bars=None, symbol=head.symbol,
                  timeframe=head.timeframe, parameters=head.parameters, timeout_ms=10_000,
                  memory_mb=memory_mb, limits=OutputLimits(), request=request, request_kind=kind)
        t2 = clock()
        body = frame(job_encoder.encode(job))
        t3 = clock()
        bars = bars_of_request(request, kind)
        t4 = clock()
        if not outcome_bytes:
            outcome_bytes = job_encoder.encode(runtime_run(msgspec.structs.replace(job, bars=bars, request=None)))
        t5 = clock()
        outcome = outcome_decoder.decode(outcome_bytes)
        result = ExecuteResult(success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
                               performance=outcome.performance, result=outcome.result, logs=outcome.logs,
                               error=outcome.error)
        data = encode(result, kind)
        t6 = clock()
        t["node: head decode (bars skipped as raw bytes)"].append(t1 - t0)
        t["node: checks, compile-cache lookup, Job build"].append(t2 - t1)
        t["node: Job encode + frame (request bytes inside)"].append(t3 - t2)
        t["node: Outcome decode + reply build + encode"].append(t6 - t5)
        t["worker: request decode + bars -> arrays + checks"].append(t4 - t3)
    out = {k: statistics.median(v) / 1000 for k, v in t.items()}
    out["node total (excluding NATS I/O)"] = sum(v for k, v in out.items() if k.startswith("node:"))
    out["(sizes) request / job frame / outcome / reply bytes"] = f"{len(request)} / {len(body)} / {len(outcome_bytes)} / {len(data)}"  # type: ignore[assignment]
    return out


def collapse_anon_to_huge_pages() -> str:
    """Experiment: back the zygote's anonymous memory with 2 MB pages (MADV_COLLAPSE, Linux 6.1+),
    so fork copies a few PMDs instead of ~13k PTEs and exit unmaps as few."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    MADV_HUGEPAGE, MADV_COLLAPSE = 14, 25
    done = failed = 0
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            name = parts[5] if len(parts) > 5 else ""
            if name not in ("", "[heap]") or "w" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            lo2 = (lo + (1 << 21) - 1) & ~((1 << 21) - 1)
            hi2 = hi & ~((1 << 21) - 1)
            if hi2 <= lo2:
                continue
            libc.madvise(lo2, hi2 - lo2, MADV_HUGEPAGE)
            if libc.madvise(lo2, hi2 - lo2, MADV_COLLAPSE) == 0:
                done += (hi2 - lo2) >> 20
            else:
                failed += (hi2 - lo2) >> 20
    return f"collapsed {done} MB into huge pages ({failed} MB failed)"


def bare_fork_exit(runs: int) -> dict[str, float]:
    """fork + immediate _exit from this process: the floor a fresh-process-per-run pays."""
    rows: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        t0 = clock()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        t1 = clock()
        _pid, _status, usage = os.wait4(pid, 0)
        t2 = clock()
        rows["bare fork(): parent side"].append((t1 - t0) / 1000)
        rows["bare fork() -> child exited and reaped"].append((t2 - t0) / 1000)
        rows["bare child CPU user+system"].append((usage.ru_utime + usage.ru_stime) * 1e6)
        rows["bare child minor faults (count)"].append(usage.ru_minflt)
    return {k: statistics.median(v) for k, v in rows.items()}


def child_side(job_bytes: bytes, runs: int, thp: bool = False, prewarm: str | None = None) -> dict[str, float]:
    """Fork `runs` children from a zygote-like parent; median µs per stage."""
    from sandbox import lockdown, zygote
    from sandbox import runtime
    from sandbox.protocol import HEADER, frame, job_decoder, job_encoder

    zygote_prewarm = zygote._warm_up()  # newer zygotes return the job each child runs before its own
    empty_dir = tempfile.mkdtemp(prefix="bench-breakdown-root-")
    os.chmod(empty_dir, 0o555)
    plan = lockdown.detect(512, 31, (False, "not entered by the breakdown"), frozenset(), empty_dir)
    devnull = os.open(os.devnull, os.O_RDWR)

    stages: dict[str, int] = {}
    for mod, name in ((lockdown.seccomp, "install"), (lockdown.landlock, "restrict_self"),
                      (lockdown, "_libc"), (lockdown, "_vm_bytes"), (os, "closerange"), (os, "chroot"),
                      (resource, "setrlimit")):
        if hasattr(mod, name):
            setattr(mod, name, _timer(stages, f"lockdown: {mod.__name__.rsplit('.', 1)[-1]}.{name}",
                                      getattr(mod, name)))
    for name in ("frame_of", "build_globals", "run_backtest", "json_safe"):
        if hasattr(runtime, name):
            setattr(runtime, name, _timer(stages, name, getattr(runtime, name)))
    Run = runtime.Run
    for name in ("__init__", "_globals", "execute", "_call_strategy", "codes", "signals", "performance"):
        if hasattr(Run, name):
            setattr(Run, name, _timer(stages, f"Run.{name}", getattr(Run, name)))
    warm_job = zygote_prewarm if prewarm == "zygote" else job_decoder.decode(job_bytes)
    gc.collect()
    gc.freeze()
    if thp:
        print("  THP experiment:", collapse_anon_to_huge_pages())

    rows: dict[str, list[float]] = defaultdict(list)
    rows.update({k: [v] for k, v in bare_fork_exit(min(runs, 50)).items()})
    for _ in range(runs):
        node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        t_fork = clock()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                t_start = clock()
                flt0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                baseline = lockdown.apply(plan, child_end.fileno(), devnull)
                if prewarm:  # experiment: a ready child takes its copy-on-write faults before the job
                    runtime.run(warm_job)
                    for key in [k for k in stages if not k.startswith("lockdown:")]:
                        del stages[key]  # keep the lockdown's own timers, drop the prewarm run's
                t_locked = clock()
                flt1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                fd = lockdown.CHANNEL_FD
                (size,) = HEADER.unpack(os.read(fd, HEADER.size))
                data = b""
                while len(data) < size:
                    data += os.read(fd, size - len(data))
                t_read = clock()
                job = job_decoder.decode(data)
                lockdown.limit_run(baseline, job.memory_mb, job.timeout_ms / 1000.0)
                t_decoded = clock()
                outcome = runtime.run(job)
                t_ran = clock()
                body = frame(job_encoder.encode(outcome))
                t_encoded = clock()
                flt2 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                report = msgspec.msgpack.encode({
                    "t_start": t_start, "t_locked": t_locked, "t_read": t_read, "t_decoded": t_decoded,
                    "t_ran": t_ran, "t_encoded": t_encoded, "stages": stages,
                    "flt_lockdown": flt1 - flt0, "flt_run": flt2 - flt1, "ok": outcome.success,
                })
                os.write(fd, HEADER.pack(len(body)) + body + HEADER.pack(len(report)) + report)
                t_done = clock()
                os.write(fd, t_done.to_bytes(8, "little"))
            except BaseException:  # noqa: BLE001
                code = 70
            os._exit(code)
        t_forked = clock()
        child_end.close()
        node_end.sendall(frame(job_bytes))
        t_sent = clock()
        buf = b""
        while True:
            chunk = node_end.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
        t_eof = clock()
        _pid, status, usage = os.wait4(pid, 0)
        t_reaped = clock()
        node_end.close()
        (n1,) = HEADER.unpack(buf[:4])
        rest = buf[4 + n1:]
        (n2,) = HEADER.unpack(rest[:4])
        r = msgspec.msgpack.decode(rest[4:4 + n2])
        t_done = int.from_bytes(rest[4 + n2:12 + n2], "little")
        if status != 0 or not r["ok"]:
            raise RuntimeError(f"child failed: status {status}, ok {r['ok']}")
        us = 1 / 1000
        rows["fork() in the parent (page tables copied)"].append((t_forked - t_fork) * us)
        rows["child: fork() called -> child runs its first line"].append((r["t_start"] - t_fork) * us)
        rows["child: lockdown.apply"].append((r["t_locked"] - r["t_start"]) * us)
        rows["child: wait for job + read (parent sends after fork)"].append((r["t_read"] - r["t_locked"]) * us)
        rows["child: Job decode + limit_run"].append((r["t_decoded"] - r["t_read"]) * us)
        rows["child: runtime.run total"].append((r["t_ran"] - r["t_decoded"]) * us)
        for name, ns in sorted(r["stages"].items()):
            rows[f"child:   {name}"].append(ns * us)
        rows["child: Outcome encode + frame"].append((r["t_encoded"] - r["t_ran"]) * us)
        rows["child: write reply -> exit -> parent sees EOF"].append((t_eof - t_done) * us)
        rows["parent: EOF -> wait4 reaped"].append((t_reaped - t_eof) * us)
        rows["end to end: fork -> reaped (wall)"].append((t_reaped - t_fork) * us)
        rows["child CPU user (rusage)"].append(usage.ru_utime * 1e6)
        rows["child CPU system (rusage)"].append(usage.ru_stime * 1e6)
        rows["child minor faults: lockdown (count)"].append(r["flt_lockdown"])
        rows["child minor faults: run+encode (count)"].append(r["flt_run"])
        rows["child minor faults: total (rusage count)"].append(usage.ru_minflt)
        _ = t_sent
    os.rmdir(empty_dir)
    out = {k: statistics.median(v) for k, v in rows.items()}
    # The same runtime.run in this (warm, never-forked-into) process: intrinsic compute, no
    # copy-on-write faults, caches hot. The gap to the child figures is what forking costs.
    job = job_decoder.decode(job_bytes)
    warm: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        stages.clear()
        t0 = clock()
        runtime.run(job)
        warm["in-process warm: runtime.run total"].append((clock() - t0) / 1000)
        for name, ns in stages.items():
            warm[f"in-process warm:   {name}"].append(ns / 1000)
    out.update({k: statistics.median(v) for k, v in sorted(warm.items())})
    return out


async def live_split(request: bytes, runs: int, pace_s: float) -> dict[str, float]:
    """An in-process Node (real nats-server, real zygote) with timers around its stages; the
    client in the same event loop sends `runs` requests one at a time, `pace_s` apart.

    Shares one event loop between client and node (unlike `python -m bench`), so read it as a
    split of one request's wall time, not as the end-to-end figure.
    """
    import asyncio

    import nats

    import node.service as service_mod
    import sandbox.pool as pool_mod
    from node.config import Settings
    from node.embedded import EmbeddedServer
    from node.endpoints import Endpoints

    marks: dict[str, int] = {}
    ready_at_acquire: list[int] = []

    def mark(name: str) -> None:
        marks[name] = clock()

    def wrap_async(cls, name: str, before: str, after: str, extra=None):
        fn = getattr(cls, name)

        async def wrapped(self, *args, **kwargs):
            mark(before)
            if extra:
                extra(self)
            try:
                return await fn(self, *args, **kwargs)
            finally:
                mark(after)
        setattr(cls, name, wrapped)

    class Timed:
        def __init__(self, inner, before: str, after: str, method: str) -> None:
            self.inner, self.before, self.after, self.method = inner, before, after, method

        def __getattr__(self, attr):
            if attr != self.method:
                return getattr(self.inner, attr)

            def call(*args, **kwargs):
                mark(self.before)
                try:
                    return getattr(self.inner, attr)(*args, **kwargs)
                finally:
                    mark(self.after)
            return call

    wrap_async(Endpoints, "execute", "exec_in", "exec_out")
    wrap_async(pool_mod.SandboxPool, "acquire_child", "acquire_in", "acquire_out",
               lambda pool: ready_at_acquire.append(len(pool._ready)))
    wrap_async(service_mod.Node, "_respond", "respond_in", "respond_out")
    pool_mod.job_encoder = Timed(pool_mod.job_encoder, "job_encode_in", "job_encode_out", "encode")
    pool_mod.outcome_decoder = Timed(pool_mod.outcome_decoder, "outcome_decode_in", "outcome_decode_out", "decode")

    server = EmbeddedServer().start()
    node = service_mod.Node(Settings.from_env({"NODE_ID": "breakdown", "LOG_LEVEL": "WARNING"}), server.url)
    await node.start()
    nc = await nats.connect(server.url)
    rows: dict[str, list[float]] = defaultdict(list)
    try:
        for _ in range(20):
            await nc.request("strategy.v1.execute", request, timeout=30)
        started0, t_begin = node.pool.started, time.monotonic()
        ready_at_acquire.clear()
        for _ in range(runs):
            marks.clear()
            t0 = clock()
            await nc.request("strategy.v1.execute", request, timeout=30)
            t1 = clock()
            m = marks
            us = 1 / 1000
            rows["client send -> node handler entered (NATS, loop)"].append((m["exec_in"] - t0) * us)
            rows["handler: decode, compile cache, Job build"].append((m["acquire_in"] - m["exec_in"]) * us)
            rows["pool: wait for a ready child"].append((m["acquire_out"] - m["acquire_in"]) * us)
            rows["pool: Job encode (msgpack)"].append((m["job_encode_out"] - m["job_encode_in"]) * us)
            rows["pool: send Job -> child runs -> Outcome read (IPC + child)"].append(
                (m["outcome_decode_in"] - m["job_encode_out"]) * us)
            rows["pool: Outcome decode"].append((m["outcome_decode_out"] - m["outcome_decode_in"]) * us)
            rows["handler: after Outcome (kill/close child, result built)"].append(
                (m["exec_out"] - m["outcome_decode_out"]) * us)
            rows["node: handler return -> respond (telemetry, scope)"].append((m["respond_in"] - m["exec_out"]) * us)
            rows["node: respond (encode reply, publish)"].append((m["respond_out"] - m["respond_in"]) * us)
            rows["respond done -> client has the reply (NATS, loop)"].append((t1 - m["respond_out"]) * us)
            rows["end to end (client)"].append((t1 - t0) * us)
            await asyncio.sleep(pace_s)
        elapsed = time.monotonic() - t_begin
        out = {k: statistics.median(v) for k, v in rows.items()}
        out["children forked per second (refill rate)"] = (node.pool.started - started0) / elapsed
        out["ready children at acquire (median count)"] = statistics.median(ready_at_acquire)
        out["acquires that found no ready child (%)"] = 100 * sum(1 for r in ready_at_acquire if r == 0) / len(ready_at_acquire)
        return out
    finally:
        await nc.drain()
        await node.stop()
        server.close()


def main(argv: list[str] | None = None) -> None:
    from . import cases

    p = argparse.ArgumentParser(prog="python -m bench.breakdown", description=__doc__)
    p.add_argument("--bars", type=int, default=1000)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--strategy", choices=("trivial", "sma"), default="trivial")
    p.add_argument("--prewarm", choices=("same", "zygote"), help="experiment: each ready child runs a job "
                   "after lockdown, before it reads the real one: the same job, or the zygote's own prewarm job")
    p.add_argument("--live", action="store_true", help="also split one request's wall time inside a "
                                                       "live in-process node (real NATS and zygote)")
    p.add_argument("--pace", type=float, default=0.02, help="--live: seconds between requests")
    p.add_argument("--thp", action="store_true", help="experiment: collapse the zygote-like parent's "
                                                      "anonymous memory into 2 MB pages before forking")
    p.add_argument("--node-only", action="store_true", help="only the node-side stages (no children)")
    args = p.parse_args(argv)
    code = cases.TRIVIAL if args.strategy == "trivial" else cases.SMA
    request = msgspec.json.encode({"code": code, "bars": cases.columnar_bars(args.bars),
                                   "symbol": "BENCH", "timeframe": "1d"})
    print(f"== node side, {args.strategy}, {args.bars} bars: median µs per request over {args.runs} runs")
    for name, value in node_side(request, args.runs).items():
        print(f"  {name:<55} {value:>10.1f}" if isinstance(value, float) else f"  {name:<55} {value:>10}")

    for kind, encoded in (("application/json", request),
                          ("application/msgpack", msgspec.msgpack.encode(msgspec.json.decode(request)))):
        print(f"== node side, warm path ({kind}; bars decoded by the worker), {args.strategy}: "
              f"median µs per request over {args.runs} runs")
        for name, value in warm_node_side(encoded, kind, args.runs).items():
            print(f"  {name:<55} {value:>10.1f}" if isinstance(value, float) else f"  {name:<55} {value:>10}")
    if args.node_only:
        return

    if args.live:
        import asyncio

        print(f"== live node, {args.strategy}: median µs per request over {args.runs} requests, "
              f"{args.pace * 1000:.0f} ms apart")
        for name, value in asyncio.run(live_split(request, args.runs, args.pace)).items():
            print(f"  {name:<60} {value:>10.1f}")
        return

    from contracts import ExecuteRequest, decode
    from node.config import Settings
    from node.jobs import execute_job
    from sandbox.compiler import CompileCache
    from sandbox.protocol import job_encoder

    req = decode(request, ExecuteRequest)
    compiled, _ = CompileCache(4).get(req.code)
    job_bytes = job_encoder.encode(execute_job(req, Settings.from_env({}), compiled, 10_000))
    print(f"== child side, {args.strategy}: median over {args.runs} forked children (µs; faults are counts)")
    for name, value in child_side(job_bytes, args.runs, args.thp, args.prewarm).items():
        print(f"  {name:<55} {value:>10.1f}")


if __name__ == "__main__":
    main()
