"""The processes of a run and what /proc says about them.

Managed mode starts, in this order, each in its own process (own interpreter, own event loop):
  nats-server (JetStream on, fresh store dir)  <- node.embedded.EmbeddedServer
  the node: `python -m node run` with NATS_URL  (its zygote `python -m sandbox.zygote` is its child)
  the echo responder: `python -m bench.echo`
The client (this process) is the fourth; all share the machine's cores, as they would on a
2-core node host with the broker alongside. Only processes started here are ever stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
ROOT = Path(__file__).resolve().parent.parent


# -- /proc helpers ---------------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: split after the last ')'
    return raw[raw.rfind(b")") + 2:].decode().split()


def cpu_seconds(pid: int) -> dict[str, float] | None:
    """utime+stime of the process itself and of its reaped children (cutime+cstime)."""
    f = _stat_fields(pid)
    if f is None:
        return None
    # fields after ')': state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return {"self": (int(f[11]) + int(f[12])) / CLK_TCK, "children": (int(f[13]) + int(f[14])) / CLK_TCK}


def parent_pid(pid: int) -> int | None:
    f = _stat_fields(pid)
    return int(f[1]) if f else None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    """Direct children via /proc/<pid>/task/*/children (cheap; no /proc scan)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        out.extend(int(x) for x in text.split())
    return out


def find_zygote(node_pid: int | None) -> tuple[int | None, str]:
    """The node's zygote: its child running `-m sandbox.zygote`; without a node pid, the only one."""
    if node_pid is not None:
        for child in children_of(node_pid):
            if "sandbox.zygote" in cmdline(child):
                return child, f"child of node pid {node_pid}"
        return None, f"node pid {node_pid} has no sandbox.zygote child"
    found = [int(p) for p in os.listdir("/proc") if p.isdigit() and "sandbox.zygote" in cmdline(int(p))]
    if len(found) == 1:
        return found[0], "the only sandbox.zygote process on this host"
    return None, f"{len(found)} sandbox.zygote processes on this host; pass --node-pid"


def machine() -> dict:
    info: dict = {"nproc": os.cpu_count(), "python": sys.version.split()[0], "platform": sys.platform}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["mem_total_mb"] = int(line.split()[1]) // 1024
    except OSError:
        pass
    info["kernel"] = os.uname().release
    info["loadavg"] = list(os.getloadavg())
    return info


# -- managed processes -----------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, n: int = 2000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass


def _python_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def spawn(name: str, args: list[str], env: dict[str, str]) -> Proc:
    fd, log_path = tempfile.mkstemp(prefix=f"bench-{name}-", suffix=".log")
    popen = subprocess.Popen([sys.executable, *args], env=_python_env(env), cwd=str(ROOT),
                             stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True)
    os.close(fd)
    return Proc(name, popen, log_path)


def wait_for_line(proc: Proc, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in proc.tail(100_000):
            return
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: {proc.tail()}")
        time.sleep(0.02)
    raise TimeoutError(f"{proc.name} not ready within {timeout}s: {proc.tail()}")


async def until_stopped() -> None:
    """Return on SIGTERM or SIGINT: how a responder process the bench started waits out its life."""
    import asyncio

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
