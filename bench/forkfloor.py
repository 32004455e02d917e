"""The fork floor: what one fork + exit of a zygote-like parent costs, and one copy-on-write fault.

`python -m bench.forkfloor [--forks N] [--fault-pages K] [--fault-rounds R] [--zygote-like]`
prints one JSON object. Run by `python -m bench` in its own process, in the same run as the node
it is compared with (the fresh-mode target is zygote + child CPU per run <= 2.5x this floor).

* **Parent**: a fresh interpreter with numpy, pandas and TA-Lib imported (one BLAS thread, as
  in the zygote), `gc.collect()` + `gc.freeze()` as the zygote does before it forks. With
  `--zygote-like` the same parent then also imports the sandbox runtime and runs the zygote's
  own warm-up (`sandbox.zygote._warm_up`), and the fork floor is measured a second time: the
  heap the real zygote forks from, without its lockdown or any request.
* **Fork + exit**: N times, sequentially: `os.fork()`; the child calls `os._exit(0)` at once;
  the parent `waitpid`s it. CPU per fork+exit = the parent's own CPU (getrusage(RUSAGE_SELF):
  fork copies the page tables, plus the copy-on-write faults the parent itself takes after the
  fork) plus the children's (getrusage(RUSAGE_CHILDREN) of the reaped children: exit tears their
  address space down), divided by N; microsecond resolution, unlike /proc's clock ticks. Wall
  per fork+exit is from before `fork()` to `waitpid()` returning (median and p90).
* **Copy-on-write fault**: the parent maps a private anonymous buffer of K pages
  (MADV_NOHUGEPAGE, so faults are 4 KiB ones) and writes every page; a forked child then writes
  one byte per page (K faults) and writes them again (no faults: the loop's own cost), timing
  both with its process CPU clock (ns) and counting minor faults. Fault cost = (first pass -
  second pass) / faults. R children; the median is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import resource
import statistics
import sys
import time

PAGE = mmap.PAGESIZE


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def _anon_mb() -> dict[str, float]:
    out = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "RssAnon"):
                    out[f"{key.lower()}_mb"] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        pass
    return out


def fork_exit(forks: int, warmup: int = 5) -> dict:
    """CPU and wall of `forks` sequential fork + immediate exit + reap."""
    for _ in range(warmup):  # first forks also fault in the parent's own fork path
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    gc.disable()
    walls: list[int] = []
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    for _ in range(forks):
        start = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        walls.append(time.perf_counter_ns() - start)
    wall = time.perf_counter() - t0
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    gc.enable()
    parent_ms = (_cpu(self1) - _cpu(self0)) * 1000 / forks
    child_ms = (_cpu(kids1) - _cpu(kids0)) * 1000 / forks
    walls.sort()
    return {
        "forks": forks,
        "cpu_ms_per_fork": round(parent_ms + child_ms, 4),
        "parent_cpu_ms_per_fork": round(parent_ms, 4),
        "child_cpu_ms_per_fork": round(child_ms, 4),
        "wall_ms_p50": round(walls[len(walls) // 2] / 1e6, 4),
        "wall_ms_p90": round(walls[min(len(walls) - 1, int(len(walls) * 0.9))] / 1e6, 4),
        "wall_ms_mean": round(wall * 1000 / forks, 4),
        "parent_minor_faults_per_fork": round((self1.ru_minflt - self0.ru_minflt) / forks, 1),
        "child_minor_faults_per_fork": round((kids1.ru_minflt - kids0.ru_minflt) / forks, 1),
        **_anon_mb(),
    }


def cow_fault(pages: int, rounds: int) -> dict:
    """Cost of one 4 KiB copy-on-write fault in a forked child (median of `rounds` children)."""
    size = pages * PAGE
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        buf.madvise(mmap.MADV_NOHUGEPAGE)
    view = memoryview(buf)
    for off in range(0, size, PAGE):  # resident and dirty in the parent: the child's writes are CoW
        view[off] = 1
    samples = []
    for r in range(rounds):
        rd, wr = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(rd)
            clock = time.process_time_ns
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0 = clock()
            for off in range(0, size, PAGE):
                view[off] = 2
            c1 = clock()
            f1 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for off in range(0, size, PAGE):
                view[off] = 3
            c2 = clock()
            f2 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            os.write(wr, json.dumps([c1 - c0, c2 - c1, f1 - f0, f2 - f1]).encode())
            os._exit(0)
        os.close(wr)
        raw = b""
        while chunk := os.read(rd, 4096):
            raw += chunk
        os.close(rd)
        os.waitpid(pid, 0)
        first, second, faults, faults_again = json.loads(raw)
        if faults > 0:
            samples.append({"us_per_fault": (first - second) / faults / 1000, "faults": faults,
                            "faults_second_pass": faults_again, "first_pass_ms": first / 1e6,
                            "second_pass_ms": second / 1e6})
    view.release()
    buf.close()
    if not samples:
        return {"pages": pages, "rounds": rounds, "us_per_fault": None}
    costs = sorted(s["us_per_fault"] for s in samples)
    return {
        "pages": pages, "rounds": rounds,
        "us_per_fault": round(statistics.median(costs), 4),
        "us_per_fault_min": round(costs[0], 4), "us_per_fault_max": round(costs[-1], 4),
        "faults_per_round": int(statistics.median(s["faults"] for s in samples)),
        "faults_second_pass": int(max(s["faults_second_pass"] for s in samples)),
    }


def thp_mode() -> str | None:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            text = fh.read()
    except OSError:
        return None
    return text[text.find("[") + 1:text.find("]")] if "[" in text else text.strip()


def measure(forks: int, pages: int, rounds: int, zygote_like: bool) -> dict:
    # As in the zygote, before numpy loads: one BLAS thread.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ[var] = "1"
    t0 = time.perf_counter()
    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import talib  # noqa: F401

    imports_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()
    out = {
        "parent": "numpy, pandas, talib imported; gc.freeze()",
        "imports_s": round(imports_s, 3),
        "thp": thp_mode(),
        "page_bytes": PAGE,
        "fork_exit": fork_exit(forks),
        "cow_fault": cow_fault(pages, rounds),
    }
    if zygote_like:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from sandbox import runtime  # noqa: F401
        from sandbox.zygote import _warm_up

        _warm_up()
        gc.collect()
        gc.freeze()
        out["zygote_like"] = {
            "parent": "as above plus sandbox.runtime imported and the zygote's _warm_up() run",
            "fork_exit": fork_exit(forks),
        }
    return out


async def run_subprocess(profile, timeout: float = 300.0) -> dict:
    """Run the floor in its own fresh interpreter (as `python -m bench` does); the JSON, with a
    `status` of "ok" or why it is unavailable."""
    import asyncio

    from .procs import ROOT, _python_env

    args = ["-m", "bench.forkfloor", "--forks", str(profile.forkfloor_forks),
            "--fault-pages", str(profile.forkfloor_fault_pages), "--fault-rounds", str(profile.forkfloor_fault_rounds)]
    if profile.forkfloor_zygote_like:
        args.append("--zygote-like")
    proc = await asyncio.create_subprocess_exec(sys.executable, *args, cwd=str(ROOT), env=_python_env({}),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        return {"status": f"unavailable: no result within {timeout:g} s"}
    if proc.returncode != 0:
        return {"status": f"unavailable: exit {proc.returncode}: {err.decode(errors='replace')[-500:]}"}
    data = json.loads(out)
    data["status"] = "ok"
    return data


def summary_line(floor: dict) -> str:
    if floor.get("status") != "ok":
        return floor.get("status", "?")
    fe, cow = floor["fork_exit"], floor["cow_fault"]
    text = (f"{fe['cpu_ms_per_fork']:.3f} ms CPU per fork+exit (parent {fe['parent_cpu_ms_per_fork']:.3f}, child "
            f"{fe['child_cpu_ms_per_fork']:.3f}), wall p50 {fe['wall_ms_p50']:.3f} ms; "
            f"copy-on-write fault {cow['us_per_fault']} us")
    if "zygote_like" in floor:
        text += f"; zygote-like parent {floor['zygote_like']['fork_exit']['cpu_ms_per_fork']:.3f} ms"
    return text


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.forkfloor", description=__doc__.split("\n\n")[0])
    p.add_argument("--forks", type=int, default=200)
    p.add_argument("--fault-pages", type=int, default=4096, help="pages written per child (4096 = 16 MiB)")
    p.add_argument("--fault-rounds", type=int, default=5)
    p.add_argument("--zygote-like", action="store_true", help="also measure after the zygote's own warm-up")
    args = p.parse_args(argv)
    print(json.dumps(measure(args.forks, args.fault_pages, args.fault_rounds, args.zygote_like)))


if __name__ == "__main__":
    main()
