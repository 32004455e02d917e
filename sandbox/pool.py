"""The node's handle on the sandbox: a zygote process and the ready one-shot children it forks.

The node only ever talks to children over their own socket; it enforces the wall-clock deadline
with SIGKILL through a pidfd (no pid-reuse race) and turns every way a child can end into an
error code. If the zygote dies, the pool starts a new one.
"""

from __future__ import annotations

import array
import asyncio
import collections
import json
import logging
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Hashable

from contracts import ErrorCode, ErrorInfo, IsolationLayer, PoolState

from . import shm
from .protocol import HEADER, MAX_FRAME, Job, Outcome, frame, job_encoder, outcome_decoder
from .warm import TenantWorkers, WarmPolicy
from .zygote import CONTROL_FD_ENV
from .zygote import launch_command as zygote_launch_command

log = logging.getLogger("sandbox.pool")

_SIGNAL_ERRORS = {
    signal.SIGXCPU: (ErrorCode.TIMEOUT, "the strategy used up its CPU time"),
    signal.SIGSYS: (ErrorCode.SECURITY_VIOLATION, "the strategy made a forbidden system call"),
    signal.SIGSEGV: (ErrorCode.RUNTIME_ERROR, "the strategy's process crashed (segmentation fault)"),
    signal.SIGBUS: (ErrorCode.RUNTIME_ERROR, "the strategy's process crashed (bus error)"),
    signal.SIGABRT: (ErrorCode.RUNTIME_ERROR, "the strategy's process aborted"),
    signal.SIGFPE: (ErrorCode.RUNTIME_ERROR, "the strategy's process crashed (arithmetic fault)"),
    signal.SIGKILL: (ErrorCode.MEMORY_LIMIT, "the strategy's process was killed (out of memory)"),
}


_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class SandboxUnavailable(Exception):
    pass


@dataclass
class _Child:
    pid: int
    sock: socket.socket
    pidfd: int
    exited: asyncio.Future  # the wait status, from the zygote's exit report

    def alive(self) -> bool:
        """A pidfd turns readable when its process has exited (a warm worker may die idle)."""
        if self.exited.done():
            return False
        try:
            return not select.select([self.pidfd], [], [], 0)[0]
        except (OSError, ValueError):
            return False

    def kill(self) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass

    def close(self) -> None:
        self.sock.close()
        try:
            os.close(self.pidfd)
        except OSError:
            pass


def exit_error(status: int | None, deadline_hit: bool, timeout_ms: int) -> ErrorInfo:
    """Map how a child ended without an outcome to the error its caller sees."""
    if deadline_hit:
        return ErrorInfo(code=ErrorCode.TIMEOUT, message=f"the strategy did not finish within {timeout_ms} ms")
    if status is None:
        return ErrorInfo(code=ErrorCode.INTERNAL, message="the strategy's process ended without a result")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        code, message = _SIGNAL_ERRORS.get(
            sig, (ErrorCode.INTERNAL, f"the strategy's process was terminated from outside (signal {sig})"))
        return ErrorInfo(code=code, message=message)
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1
    if code == 70:
        return ErrorInfo(code=ErrorCode.INTERNAL, message="the sandbox could not lock a process down")
    return ErrorInfo(code=ErrorCode.INTERNAL, message=f"the strategy's process exited early (status {code})")


class SandboxPool:
    def __init__(self, ready_target: int = 4, max_memory_mb: int = 512, max_cpu_seconds: int = 31,
                 disable: str = "", warm: WarmPolicy | None = None, prewarm: bool = True) -> None:
        self.ready_target = max(1, ready_target)
        self.max_memory_mb = max_memory_mb
        self.max_cpu_seconds = max_cpu_seconds
        self.disable = disable
        # Each ready child runs a trusted job before its real one: lower latency when the node
        # has idle CPU, about 10 % fewer runs per second when it has none (BENCHMARKS.md).
        self.prewarm = prewarm
        self.layers: list[IsolationLayer] = []
        self._ready: collections.deque[_Child] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Child]] = collections.deque()
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._requested = 0
        self._busy: set[int] = set()
        self.started = 0
        self._proc: subprocess.Popen | None = None
        self._control: socket.socket | None = None
        self._hello: asyncio.Future[dict] | None = None
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.zygote_pid: int | None = None
        # An OpenTelemetry tracer (set by the node's Telemetry): a `sandbox.run` span per run.
        self.tracer = None
        # Opt-in warm workers per tenant (sandbox/warm.py); None: a fresh child for every run.
        self.warm = TenantWorkers(self, warm) if warm is not None and warm.runs > 1 else None

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, timeout: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        node_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
            "PYTHONHASHSEED": "random",
            "PYTHONDONTWRITEBYTECODE": "1",
            CONTROL_FD_ENV: str(zygote_end.fileno()),
            "SANDBOX_MAX_MEMORY_MB": str(self.max_memory_mb),
            "SANDBOX_MAX_CPU_SECONDS": str(self.max_cpu_seconds),
            "SANDBOX_DISABLE": self.disable,
            "SANDBOX_PREWARM": "1" if self.prewarm else "0",
            # Before numpy loads anywhere in the zygote: OpenBLAS threads would be refused by
            # seccomp (clone is denied) and OpenBLAS aborts the child when that happens.
            "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "NUMEXPR_NUM_THREADS": "1",
        }
        self._proc = subprocess.Popen(
            # not `-m sandbox.zygote`: importing the package already imports the module (this
            # pool needs its constants), and runpy would warn about it on every node start; the
            # command enters the namespaces before the package is imported (zygote.py)
            zygote_launch_command(), env=env, pass_fds=[zygote_end.fileno()],
            stdin=subprocess.DEVNULL, start_new_session=True, cwd="/",
        )
        zygote_end.close()
        node_end.setblocking(False)
        self._control = node_end
        self._hello = self._loop.create_future()
        self._loop.add_reader(node_end.fileno(), self._on_control)
        try:
            hello = await asyncio.wait_for(asyncio.shield(self._hello), timeout)
        except asyncio.TimeoutError:
            await self.close()
            raise SandboxUnavailable("the sandbox zygote did not start in time") from None
        self.zygote_pid = hello["pid"]
        self.layers = [IsolationLayer(**layer) for layer in hello["layers"]]
        self._refill()

    async def close(self) -> None:
        self._closing = True
        if self.warm is not None:
            self.warm.close()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(SandboxUnavailable("the sandbox is shutting down"))
        self._shutdown_zygote()

    def _shutdown_zygote(self) -> None:
        if self._control is not None and self._loop is not None:
            self._loop.remove_reader(self._control.fileno())
            self._control.close()
            self._control = None
        while self._ready:
            child = self._ready.popleft()
            child.kill()
            child.close()
        if self._proc is not None:
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._requested = 0

    async def _restart(self) -> None:
        log.error("sandbox zygote exited; starting a new one")
        self._shutdown_zygote()
        for fut in self._exits.values():
            if not fut.done():
                fut.set_result(-1)
        self._exits.clear()
        if not self._closing:
            await self.start()

    # -- control channel ----------------------------------------------------------------
    def _on_control(self) -> None:
        assert self._control is not None
        while True:
            try:
                msg, ancdata, _flags, _addr = self._control.recvmsg(4096, socket.CMSG_SPACE(2 * 4))
            except BlockingIOError:
                return
            except OSError:
                msg, ancdata = b"", []
            if not msg:
                if not self._closing:
                    asyncio.ensure_future(self._restart())
                else:
                    self._loop.remove_reader(self._control.fileno())
                return
            tag = msg[:1]
            if tag == b"R":
                fds = array.array("i")
                for level, kind, data in ancdata:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
                (pid,) = struct.unpack("<i", msg[1:5])
                sock = socket.socket(fileno=fds[0])
                sock.setblocking(False)
                self._requested -= 1
                self.started += 1
                exited = self._loop.create_future()
                self._exits[pid] = exited
                self._offer(_Child(pid=pid, sock=sock, pidfd=fds[1], exited=exited))
            elif tag == b"X":
                pid, status = struct.unpack("<ii", msg[1:9])
                fut = self._exits.pop(pid, None)
                if fut is not None and not fut.done():
                    fut.set_result(status)
            elif tag == b"H" and self._hello is not None and not self._hello.done():
                self._hello.set_result(json.loads(msg[1:]))

    def _offer(self, child: _Child) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._ready.append(child)

    def prewarm_now(self) -> bool:
        """Should the children forked now run the prewarm job while they wait?

        Only while the runs in flight leave a core idle. The prewarm takes a first run's
        copy-on-write faults ahead of the request (lower latency at low and moderate rates), but
        on a node whose cores are all busy running jobs it is only more CPU per run: issue 18,
        the fresh child's cost at the busiest level.
        """
        return self.prewarm and len(self._busy) < _CORES

    def _refill(self) -> None:
        want = self.ready_target + len(self._waiters) - len(self._ready) - self._requested
        if want > 0 and self._control is not None:
            try:
                self._control.send(b"S" + struct.pack("<IB", want, self.prewarm_now()))
                self._requested += want
            except OSError:
                pass

    async def acquire_child(self, replace: bool = True) -> _Child:
        """A ready locked-down child (waiting for one if none is ready); the caller owns it.

        `replace=False`: a child taken from the ready ones is not replaced now; the caller asks
        for its replacement with `replenish()` once its run is over. Forking the replacement
        while the run is going competes with the run for the CPU (issue 18: 1.1-5.9 ms of
        node-reported time at 20-100 requests/s on 2 cores). A caller that had to wait for a
        child has already asked for one, so a waiter is never left without a fork on its way.
        """
        if self._ready:
            child = self._ready.popleft()
            if not replace:
                return child
        else:
            if self._closing:
                raise SandboxUnavailable("the sandbox is shutting down")
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            self._refill()
            try:
                child = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    self._ready.appendleft(waiter.result())
                raise
        self._refill()
        return child

    def replenish(self) -> None:
        """Bring the ready children back up to target (after a run that took one with
        `acquire_child(replace=False)`)."""
        if not self._closing:
            self._refill()

    # -- running ------------------------------------------------------------------------
    async def run(self, job: Job, tenant: Hashable | None = None) -> Outcome:
        """Run one job; never raises for anything the strategy does.

        With a `tenant` (a key from the verified identity, node/identity.py) and warm workers
        enabled, an execute or single backtest may run in that tenant's warm worker; otherwise
        (and always for sweep chunks) in a fresh child.
        """
        if self.tracer is None:
            return await self._dispatch(job, tenant, None)
        with self.tracer.start_as_current_span("sandbox.run") as span:
            outcome = await self._dispatch(job, tenant, span)
            span.set_attribute("sandbox.outcome", str(outcome.error.code) if outcome.error else "OK")
            return outcome

    async def _dispatch(self, job: Job, tenant: Hashable | None, span) -> Outcome:
        started = time.perf_counter()
        try:
            if tenant and self.warm is not None and job.points is None and job.kind != "classify":
                return await self.warm.run(job, tenant, span)
            return await self.run_fresh(job, span)
        finally:
            if span is not None:
                span.set_attribute("sandbox.run_ms", round((time.perf_counter() - started) * 1000.0, 3))

    async def run_fresh(self, job: Job, span=None) -> Outcome:
        """One one-shot child: it serves this job and is killed whatever happens."""
        # before taking a child: encoding may fail. Sealed bars go as their memfd (sandbox/shm.py).
        body, fds = shm.payload(job, job_encoder.encode)
        payload = frame(body)
        child = await self.acquire_child(replace=False)
        if span is not None:
            span.set_attribute("sandbox.child_pid", child.pid)
        try:
            outcome, _alive = await self.exchange(child, job, payload, fds)
            return outcome
        finally:
            child.kill()  # a child never outlives its request
            child.close()
            self.replenish()  # the replacement is forked after the run, not during it

    async def exchange(self, child: _Child, job: Job, payload: bytes,
                       fds: list[int] | tuple = ()) -> tuple[Outcome, bool]:
        """Send one framed job, read its outcome before the deadline.

        Returns the outcome and whether the child answered (and so may serve again if it was
        told to keep going); a child that did not answer is killed and its end mapped to an error.
        """
        self._busy.add(child.pid)
        deadline_hit = False
        try:
            try:
                sent = shm.send_fds(child.sock, payload[:HEADER.size], list(fds)) if fds else 0
                await self._loop.sock_sendall(child.sock, memoryview(payload)[sent:])
                body = await asyncio.wait_for(self._read_frame(child.sock), job.timeout_ms / 1000.0)
            except asyncio.TimeoutError:
                deadline_hit = True
                body = None
            except (ConnectionError, EOFError, OSError):
                body = None
            if body is not None:
                return outcome_decoder.decode(body), True
            return await self.ended(child, deadline_hit, job.timeout_ms), False
        finally:
            self._busy.discard(child.pid)

    async def ended(self, child: _Child, deadline_hit: bool, timeout_ms: int) -> Outcome:
        """The outcome of a run whose child gave no answer: kill it and map how it ended."""
        child.kill()
        try:
            status = await asyncio.wait_for(asyncio.shield(child.exited), 2.0)
        except asyncio.TimeoutError:
            status = None
        if status is not None and status < 0:
            status = None  # the zygote went away: the child's status is unknown
        return Outcome(success=False, error=exit_error(status, deadline_hit, timeout_ms))

    async def _read_frame(self, sock: socket.socket) -> bytes:
        header = await self._read_exact(sock, HEADER.size)
        (size,) = HEADER.unpack(header)
        if size > MAX_FRAME:
            raise EOFError("oversized frame")
        return await self._read_exact(sock, size)

    async def _read_exact(self, sock: socket.socket, size: int) -> bytes:
        buf = bytearray(size)
        view = memoryview(buf)
        got = 0
        while got < size:
            n = await self._loop.sock_recv_into(sock, view[got:])
            if n == 0:
                raise EOFError
            got += n
        return bytes(buf)

    # -- state --------------------------------------------------------------------------
    def state(self) -> PoolState:
        healthy = self._proc is not None and self._proc.poll() is None and not self._closing
        warm = self.warm.counts() if self.warm is not None else (0, 0)
        return PoolState(ready=len(self._ready), busy=len(self._busy), target=self.ready_target,
                         started=self.started, healthy=healthy, warm_workers=warm[0], warm_tenants=warm[1])

    def ready_children(self) -> list[int]:
        return [c.pid for c in self._ready]

    def warm_children(self) -> dict[str, list[int]]:
        """Tenant -> pids of its warm workers (idle or busy); for diagnostics and tests."""
        return self.warm.pids() if self.warm is not None else {}

    def busy_children(self) -> list[int]:
        """Pids of children running a job right now; for diagnostics and tests."""
        return sorted(self._busy)
