"""CPU seconds per process of the bench between two snapshots, and the machine's busy share."""

from __future__ import annotations

import os
import time

from .procs import CLK_TCK, children_of, cpu_seconds


class CpuMeter:
    """CPU seconds per process between two snapshots.

    Sandbox children count through the zygote: the reaped ones through its cutime+cstime, the
    live ones (ready children, warm workers) through their own utime+stime. The children's CPU of
    a phase is reaped(after - before) + live(after) - live(before), which also holds for a child
    alive at the first snapshot and reaped by the second.
    """

    def __init__(self, pids: dict[str, int | list[int] | None]) -> None:
        # a name may stand for several processes (the two in-process responders): summed
        self.pids = {k: v for k, v in pids.items() if v}

    def snapshot(self) -> dict[str, dict[str, float]]:
        out = {}
        for name, pid in self.pids.items():
            if isinstance(pid, list):
                each = [cpu_seconds(p) for p in pid]
                if all(c is not None for c in each):
                    out[name] = {"self": sum(c["self"] for c in each), "children": sum(c["children"] for c in each)}
                continue
            cpu = cpu_seconds(pid)
            if cpu is not None:
                out[name] = cpu
        out["_machine"] = {"busy": machine_busy_seconds(), "wall": time.monotonic()}
        zygote = self.pids.get("zygote")
        if isinstance(zygote, int):
            out["_live_children"] = {"cpu": sum((cpu_seconds(c) or {"self": 0.0})["self"]
                                                for c in children_of(zygote))}
        return out

    @staticmethod
    def _children(before: dict, after: dict) -> float:
        if "zygote" not in before or "zygote" not in after:
            return 0.0
        reaped = after["zygote"]["children"] - before["zygote"]["children"]
        live = after.get("_live_children", {}).get("cpu", 0.0) - before.get("_live_children", {}).get("cpu", 0.0)
        return reaped + live

    def machine_share(self, before: dict, after: dict) -> dict[str, float]:
        """Share of the machine's CPU capacity (all cores) used during the phase: in total, by the
        benchmark's processes, and by everything else (other users of the host)."""
        wall = after["_machine"]["wall"] - before["_machine"]["wall"]
        capacity = wall * (os.cpu_count() or 1)
        if wall < 0.5:  # /proc counts in clock ticks (10 ms): too coarse for a short phase
            return {}
        busy = after["_machine"]["busy"] - before["_machine"]["busy"]
        ours = sum(after[n]["self"] - before[n]["self"] for n in after if n in before and not n.startswith("_"))
        ours += self._children(before, after)
        clamp = lambda x: round(min(1.0, max(0.0, x)), 3)  # noqa: E731
        return {"busy": clamp(busy / capacity), "bench": clamp(ours / capacity),
                "others": clamp((busy - ours) / capacity)}

    def per_request_ms(self, before: dict, after: dict, requests: int) -> dict[str, float]:
        if requests <= 0:
            return {}
        out: dict[str, float] = {}
        for name in after:
            if name not in before or name.startswith("_"):
                continue
            out[name] = round((after[name]["self"] - before[name]["self"]) * 1000 / requests, 3)
            if name == "zygote":
                out["sandbox_children"] = round(self._children(before, after) * 1000 / requests, 3)
        out["total"] = round(sum(out.values()), 3)
        return out


def machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine since boot (/proc/stat)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK
