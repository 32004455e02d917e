"""The warm parent: imports numpy/pandas/talib once, then forks locked-down one-shot children.

It never runs strategy code itself. Control messages from the node (SOCK_SEQPACKET):
  b"S" + u32 n [+ u8 prewarm]   fork n more children; prewarm 0: they skip the prewarm job
Messages to the node:
  b"H" + json         hello: pid and the isolation layers in force
  b"R" + i32 pid      a child is ready; SCM_RIGHTS carries its channel and pidfd
  b"X" + i32 pid + i32 wait status
"""

from __future__ import annotations

import os
import sys

# Must precede the numpy import: OpenBLAS spawns threads otherwise, and seccomp denies clone.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import array  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import selectors  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402

CONTROL_FD_ENV = "SANDBOX_CONTROL_FD"

# The zygote's first lines: enter the namespaces while the process still has one thread. Only
# sandbox/namespaces.py (standard library only) is loaded, by path, before that: importing the
# `sandbox` package imports pandas, whose allocator starts a background thread, and
# unshare(CLONE_NEWUSER) refuses a multithreaded caller.
_LAUNCH = """\
import importlib.util, os, sys
spec = importlib.util.spec_from_file_location("sandbox.namespaces", {path!r})
namespaces = importlib.util.module_from_spec(spec)
sys.modules["sandbox.namespaces"] = namespaces
spec.loader.exec_module(namespaces)
namespaces.enter_once(frozenset(x.strip() for x in os.environ.get("SANDBOX_DISABLE", "").split(",") if x.strip()))
from sandbox.zygote import main
main()
"""


def launch_command() -> list[str]:
    """The command that starts a zygote (its environment and control fd come from the pool)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "namespaces.py")
    return [sys.executable, "-c", _LAUNCH.format(path=path)]


def _send(control: socket.socket, payload: bytes, fds: list[int] | None = None) -> None:
    if fds:
        control.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        control.send(payload)


# What each ready child runs once before its real job (sandbox/serve.py): a crossover of two
# rolling means, an EWM, a TA-Lib indicator and a per-bar Series return, the paths most strategies
# take, so a run finds those pages already copied (a trivial `return 'BUY'` prewarm left an SMA
# 20/50 run ~600 copy-on-write faults to take on the request path; this one leaves ~125).
PREWARM_SOURCE = (
    "import talib\n"
    "def strategy(data):\n"
    "    close = data['close']\n"
    "    fast = close.rolling(5).mean()\n"
    "    slow = close.rolling(20).mean()\n"
    "    trend = close.ewm(span=20).mean()\n"
    "    indicator('rsi', talib.RSI(close.to_numpy(), 14))\n"
    "    above = ((fast > slow) & (close > trend)).astype('int8')\n"
    "    return above.diff().fillna(0)\n"
)


def _warm_up() -> "Job":
    """Exercise the libraries once so lazy imports and caches are in place before forking.

    Returns the job (PREWARM_SOURCE on 300 bars) that each idle child runs once before its real
    one, so the copy-on-write faults of a first run are paid ahead of demand rather than by a
    request.
    """
    from contracts import BarArrays, BacktestOptions
    from .compiler import compile_strategy
    from .protocol import Job, OutputLimits
    from . import runtime

    import numpy as np
    import talib  # noqa: F401

    n = 300
    ts = (np.arange(n, dtype=np.int64) + 19_000) * 86_400_000_000_000
    close = 100 + np.cumsum(np.sin(np.arange(n) / 7.0))
    bars = BarArrays.from_numpy(ts, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(n))
    source = (
        "import numpy as np\nimport pandas as pd\nimport talib\nimport math, statistics, datetime\n"
        "def strategy(data):\n"
        "    fast = data['close'].rolling(5).mean()\n"
        "    slow = data['close'].ewm(span=20).mean()\n"
        "    rsi = talib.RSI(data['close'].to_numpy(), 14)\n"
        "    indicator('rsi', rsi)\n"
        "    log('warm', statistics.mean([1, 2]), math.sqrt(4), datetime.date(2024, 1, 1))\n"
        "    return np.where(fast > slow, 'BUY', 'SELL')\n"
    )
    code = compile_strategy(source).to_bytes()
    for kind in ("execute", "backtest"):
        runtime.run(Job(kind=kind, code=code, bars=bars, symbol="WARM", timeframe="1d", parameters={},
                        timeout_ms=10_000, memory_mb=256, limits=OutputLimits(), options=BacktestOptions()))
    prewarm = Job(kind="execute", code=compile_strategy(PREWARM_SOURCE).to_bytes(), bars=bars, symbol="WARM",
                  timeframe="1d", parameters={}, timeout_ms=10_000, memory_mb=256, limits=OutputLimits())
    runtime.run(prewarm)  # its lazy imports and caches too, here once rather than in every child
    return prewarm


def main() -> None:
    control = socket.socket(fileno=int(os.environ.pop(CONTROL_FD_ENV)))
    disabled = frozenset(x.strip() for x in os.environ.get("SANDBOX_DISABLE", "").split(",") if x.strip())
    max_memory_mb = int(os.environ.get("SANDBOX_MAX_MEMORY_MB", "512"))
    max_cpu = int(os.environ.get("SANDBOX_MAX_CPU_SECONDS", "31"))

    from . import hugepages, lockdown

    entered = lockdown.enter_namespaces(disabled)  # entered by the launcher, before any thread

    prewarm_job = _warm_up()
    if os.environ.get("SANDBOX_PREWARM", "1") == "0":
        prewarm_job = None
    from .runtime import run  # noqa: F401  (imported: children inherit it)
    from .serve import serve
    from . import timezones

    timezones.preload()  # every zone in memory: the children (and soon we) have no files
    plan = lockdown.detect(max_memory_mb, max_cpu, entered, disabled)
    devnull = os.open(os.devnull, os.O_RDWR)
    # Nothing here reads the environment any more, and every child must start with none: cleared
    # once here, a child's own `os.environ.clear()` (lockdown.apply, kept) has nothing left to do.
    os.environ.clear()
    gc.collect()
    gc.freeze()  # children must not touch (copy) the parent's objects during collection
    hugepages.collapse_heap()  # fewer page-table entries for each fork to copy and each exit to free
    vm_baseline = lockdown.vm_bytes()
    # From here on the zygote sees only the empty root and holds no capability its children do
    # not need: the node's files and credentials are out of its reach too.
    lockdown.lock_zygote(plan)

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)

    hello = {"pid": os.getpid(), "layers": [
        {"name": layer.name, "active": layer.active, "detail": layer.detail} for layer in plan.layers
    ]}
    _send(control, b"H" + json.dumps(hello).encode())

    sel = selectors.DefaultSelector()
    sel.register(control, selectors.EVENT_READ, "control")
    sel.register(wake_r, selectors.EVENT_READ, "signal")
    children: set[int] = set()

    def spawn(prewarm: bool) -> None:
        node_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                sel.close()
                baseline = lockdown.apply(plan, child_end.fileno(), devnull, vm_baseline)
                serve(lockdown.CHANNEL_FD, baseline, prewarm_job if prewarm else None)
            except BaseException:  # noqa: BLE001 - a child that cannot lock down must not run
                code = 70
            os._exit(code)
        child_end.close()
        pidfd = os.pidfd_open(pid)
        children.add(pid)
        try:
            _send(control, b"R" + struct.pack("<i", pid), [node_end.fileno(), pidfd])
        finally:
            node_end.close()
            os.close(pidfd)

    def reap() -> None:
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            children.discard(pid)
            _send(control, b"X" + struct.pack("<ii", pid, status))

    try:
        _serve(sel, control, wake_r, spawn, reap)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the node went away mid-message: same as EOF
    _shutdown(children)


def _shutdown(children: set[int]) -> None:
    """The node is gone: so are we, and our children with us (they also have PDEATHSIG)."""
    for pid in children:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone already; and every child has PDEATHSIG in any case
    sys.exit(0)


def _serve(sel: selectors.BaseSelector, control: socket.socket, wake_r: int, spawn, reap) -> None:
    """Fork on request, report exits, until the node closes the control channel."""
    while True:
        for key, _ in sel.select():
            if key.data == "signal":
                os.read(wake_r, 4096)
                reap()
                continue
            try:
                msg = control.recv(64)
            except ConnectionResetError:
                msg = b""
            if not msg:
                return
            if msg[:1] == b"S":
                (count,) = struct.unpack("<I", msg[1:5])
                prewarm = msg[5:6] != b"\x00"  # the node's cores are all busy: no prewarm
                for _ in range(count):
                    spawn(prewarm)
                reap()


if __name__ == "__main__":
    main()
