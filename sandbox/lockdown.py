"""What a one-shot child does to itself before any strategy code reaches it.

The zygote decides once, at start, which layers this machine permits (`detect`); every child
then applies all of them (`apply`) and dies rather than run with a layer missing that was
reported active. Per-run limits (`limit_run`) can only be lowered afterwards.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
from dataclasses import dataclass, field

from contracts import IsolationLayer

from . import landlock, seccomp

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
NOBODY = 65534
CHANNEL_FD = 3
_HEADROOM_MB = 48  # room above the run's limit for reporting MEMORY_LIMIT cleanly


@dataclass
class Plan:
    """The layers this machine permits; identical for every child of one zygote."""

    max_memory_mb: int
    max_cpu_seconds: int
    disabled: frozenset[str] = frozenset()
    netns: tuple[bool, str] = (False, "")
    chroot_dir: str | None = None
    drop_uid: bool = False
    landlock_abi: int = 0
    seccomp: tuple[bool, str] = (False, "")
    layers: list[IsolationLayer] = field(default_factory=list)


_LIBC = ctypes.CDLL(None, use_errno=True)


def _libc() -> ctypes.CDLL:
    return _LIBC


def enter_network_namespace(disabled: frozenset[str]) -> tuple[bool, str]:
    """Called by the zygote before it imports anything: its children inherit an empty netns."""
    if "netns" in disabled:
        return False, "disabled by SANDBOX_DISABLE"
    libc = _libc()
    if os.geteuid() == 0 and libc.unshare(CLONE_NEWNET) == 0:
        return True, "empty network namespace (only a down loopback)"
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
        return True, "empty network namespace inside an unprivileged user namespace"
    err = ctypes.get_errno()
    return False, f"unshare(CLONE_NEWNET) not permitted here ({os.strerror(err)})"


def detect(max_memory_mb: int, max_cpu_seconds: int, netns: tuple[bool, str],
           disabled: frozenset[str], empty_dir: str) -> Plan:
    plan = Plan(max_memory_mb=max_memory_mb, max_cpu_seconds=max_cpu_seconds,
                disabled=disabled, netns=netns)
    root = os.geteuid() == 0
    in_userns = netns[0] and "user namespace" in netns[1]
    if "chroot" not in disabled and root and not in_userns:
        plan.chroot_dir = empty_dir
    plan.drop_uid = "uid" not in disabled and root and not in_userns
    if "landlock" not in disabled:
        plan.landlock_abi = landlock.abi_version()
    plan.seccomp = (False, "disabled by SANDBOX_DISABLE") if "seccomp" in disabled else seccomp.supported()
    if plan.seccomp[0]:
        seccomp.prepare()
    why_root = "needs root" if not root else ("inside a user namespace" if in_userns else "disabled by SANDBOX_DISABLE")
    plan.layers = [
        IsolationLayer(name="fresh_process", active=True,
                       detail="one forked child per run, killed at the wall deadline"),
        IsolationLayer(name="network_namespace", active=netns[0], detail=netns[1]),
        IsolationLayer(name="seccomp", active=plan.seccomp[0], detail=plan.seccomp[1]),
        IsolationLayer(name="chroot", active=plan.chroot_dir is not None,
                       detail="empty read-only root" if plan.chroot_dir else why_root),
        IsolationLayer(name="landlock", active=plan.landlock_abi > 0,
                       detail=landlock.describe(plan.landlock_abi) if plan.landlock_abi
                       else ("disabled by SANDBOX_DISABLE" if "landlock" in disabled
                             else "kernel without Landlock")),
        IsolationLayer(name="uid_drop", active=plan.drop_uid,
                       detail=f"runs as uid/gid {NOBODY}" if plan.drop_uid else why_root),
        IsolationLayer(name="no_new_privs", active=True, detail="PR_SET_NO_NEW_PRIVS"),
        IsolationLayer(name="rlimits", active=True,
                       detail="address space, CPU, open files, processes, file size, core"),
        IsolationLayer(name="empty_environment", active=True, detail="no environment variables"),
        IsolationLayer(name="closed_fds", active=True,
                       detail="only the run's own channel stays open"),
        IsolationLayer(name="restricted_python", active=True,
                       detail="RestrictedPython compile, AST policy, guarded attributes, module proxies"),
    ]
    return plan


def vm_bytes() -> int:
    """Address space in use; the zygote reads it once and its children inherit the same."""
    return _vm_bytes()


def _vm_bytes() -> int:
    with open("/proc/self/statm", "rb") as fh:
        return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _setlimit(which: int, soft: int, hard: int | None = None) -> None:
    resource.setrlimit(which, (soft, soft if hard is None else hard))


def apply(plan: Plan, channel_fd: int, devnull_fd: int, baseline: int | None = None) -> int:
    """Lock the calling (freshly forked) child down; returns its address-space baseline."""
    libc = _libc()
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    if channel_fd < CHANNEL_FD:
        raise OSError("the channel must not be a standard stream")
    # stdio onto /dev/null *before* the channel takes fd 3: the zygote's devnull is often fd 3
    # itself, and dup'ing it afterwards would make stdin/stdout/stderr the node's channel (any
    # warning a library prints would then corrupt the protocol).
    for fd in (0, 1, 2):
        os.dup2(devnull_fd, fd)
    if channel_fd != CHANNEL_FD:
        os.dup2(channel_fd, CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, 1 << 20)
    os.environ.clear()
    if baseline is None:
        baseline = _vm_bytes()
    ceiling = baseline + (plan.max_memory_mb + _HEADROOM_MB) * 1024 * 1024
    _setlimit(resource.RLIMIT_AS, ceiling)
    _setlimit(resource.RLIMIT_CPU, plan.max_cpu_seconds, plan.max_cpu_seconds + 1)
    _setlimit(resource.RLIMIT_NOFILE, CHANNEL_FD + 8)
    _setlimit(resource.RLIMIT_FSIZE, 0)
    _setlimit(resource.RLIMIT_CORE, 0)
    _setlimit(resource.RLIMIT_MEMLOCK, 0)
    _setlimit(resource.RLIMIT_MSGQUEUE, 0)
    if plan.chroot_dir:
        os.chroot(plan.chroot_dir)
        os.chdir("/")
    if plan.drop_uid:
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    _setlimit(resource.RLIMIT_NPROC, 0)
    if libc.prctl(seccomp.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if plan.landlock_abi:
        landlock.restrict_self(plan.landlock_abi)
    if plan.seccomp[0]:
        seccomp.install(os.getpid())
    return baseline


def limit_run(baseline: int, memory_mb: int, cpu_seconds: float) -> None:
    """Set this run's soft limits under the hard ones fixed at lockdown.

    Memory counts from the fork-time baseline, so whatever a warm worker kept from earlier runs
    is charged to the next one. CPU counts from what the process has used so far (a soft limit
    may be raised back up to the hard one): each run of a warm worker gets its own seconds, and
    the hard limit bounds the worker's whole life. The hard AS limit keeps headroom to report a
    MemoryError cleanly.
    """
    _soft_as, hard_as = resource.getrlimit(resource.RLIMIT_AS)
    want = baseline + memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (min(want, hard_as), hard_as))
    _soft_cpu, hard_cpu = resource.getrlimit(resource.RLIMIT_CPU)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = max(1, math.ceil(usage.ru_utime + usage.ru_stime + cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu if hard_cpu == resource.RLIM_INFINITY else min(cpu, hard_cpu), hard_cpu))


def release_memory_headroom() -> None:
    """After a MemoryError: lift the soft AS limit to the hard one so the child can report."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
