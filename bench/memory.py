"""Private memory of sandbox children, sampled from /proc while they run.

Method: a thread polls the zygote's direct children (`/proc/<zygote>/task/*/children`) every
`interval` seconds and reads each child's `/proc/<pid>/smaps_rollup`; a child's private memory
is Private_Clean + Private_Dirty (pages mapped by that process alone: what it copied on write
from the zygote plus what it allocated; pages still shared with the zygote do not count).
Per child the largest sample is kept. Children that vanish during the probe served a request
(each child serves exactly one and exits): their maxima are the per-execution figures. Children
still alive at the end are idle ready children: their figure is the fixed cost of a forked,
locked-down child before any work arrives.

To make sure a sample lands while the strategy's state is alive, the execute cases are probed
with a "hold" variant of their strategy: the same work, then a busy loop of a few hundred ms
before returning (see cases.py). Backtests and sweeps run long enough to be sampled as they are.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from .procs import children_of


def smaps_rollup(pid: int) -> dict[str, int] | None:
    """kB values of /proc/<pid>/smaps_rollup, or None if the process is gone or unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    out: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            out[parts[0][:-1]] = int(parts[1])
    return out or None


def private_kb(rollup: dict[str, int]) -> int:
    return rollup.get("Private_Clean", 0) + rollup.get("Private_Dirty", 0)


class ChildSampler(threading.Thread):
    def __init__(self, zygote_pid: int, interval: float = 0.002) -> None:
        super().__init__(name="bench-memory-sampler", daemon=True)
        self.zygote_pid = zygote_pid
        self.interval = interval
        self._stop_event = threading.Event()
        self.peak: dict[int, dict[str, int]] = {}  # pid -> rollup at its largest private sample
        self.samples = 0
        self.alive_at_end: set[int] = set()

    def start(self) -> None:
        """Sample once before the thread runs, so the ready children that will serve the phase are
        known even when a loaded host schedules the thread late (the phase may be over by then)."""
        self._sample()
        super().start()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._sample()
            time.sleep(self.interval)

    def _sample(self) -> None:
        for pid in children_of(self.zygote_pid):
            rollup = smaps_rollup(pid)
            if rollup is None:
                continue
            self.samples += 1
            best = self.peak.get(pid)
            if best is None or private_kb(rollup) > private_kb(best):
                self.peak[pid] = rollup

    def stop(self) -> dict:
        self._stop_event.set()
        self.join(5)
        self.alive_at_end = set(children_of(self.zygote_pid))
        return self.result()

    def result(self) -> dict:
        used = sorted(private_kb(r) for p, r in self.peak.items() if p not in self.alive_at_end)
        idle = sorted(private_kb(r) for p, r in self.peak.items() if p in self.alive_at_end)
        used_rss = sorted(r.get("Rss", 0) for p, r in self.peak.items() if p not in self.alive_at_end)

        def mb(values: list[int], q: float) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, int(q * len(values)))] / 1024, 2)

        return {
            "private_mb_p50": mb(used, 0.5),
            "private_mb_max": mb(used, 1.0),
            "rss_mb_p50": mb(used_rss, 0.5),
            "idle_child_private_mb": mb(idle, 0.5),
            "children_sampled": len(used),
            "samples": self.samples,
        }
