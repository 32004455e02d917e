"""What a one-shot child does to itself before any strategy code reaches it.

The zygote enters its namespaces before it imports anything (`enter_namespaces`, see
sandbox/namespaces.py), decides once which layers this machine permits (`detect`) and, once
warm, locks itself into the empty root without capabilities (`lock_zygote`). Every child then
applies the rest (`apply`) and dies rather than run with a layer missing that was reported
active. Per-run limits (`limit_run`) can only be lowered afterwards.
"""

from __future__ import annotations

import ctypes
import math
import os
import resource
import signal
from dataclasses import dataclass, field

from contracts import IsolationLayer

from . import landlock, namespaces, seccomp

PR_SET_PDEATHSIG = 1
NOBODY = namespaces.SANDBOX_ID
CHANNEL_FD = 3
_HEADROOM_MB = 48  # room above the run's limit for reporting MEMORY_LIMIT cleanly


@dataclass
class Plan:
    """The layers this machine permits; identical for every child of one zygote."""

    max_memory_mb: int
    max_cpu_seconds: int
    disabled: frozenset[str] = frozenset()
    entered: namespaces.Entered = namespaces.Entered("none", False, 0, 0, "not entered")
    root_fd: int | None = None  # the empty root, entered by the zygote itself (`lock_zygote`)
    drop_uid: bool = False
    landlock_abi: int = 0
    seccomp: tuple[bool, str] = (False, "")
    layers: list[IsolationLayer] = field(default_factory=list)

    @property
    def netns(self) -> tuple[bool, str]:
        return self.entered.net, _netns_detail(self.entered, self.disabled)


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.prctl  # looked up (dlsym, cached on the handle) once here in the zygote, not in every child


def _libc() -> ctypes.CDLL:
    return _LIBC


def enter_namespaces(disabled: frozenset[str]) -> namespaces.Entered:
    """The zygote's namespaces (its children are forked into them): the ones its launcher
    entered before anything was imported (`zygote.launch_command`), or entered now."""
    return namespaces.enter_once(disabled)


def _netns_detail(entered: namespaces.Entered, disabled: frozenset[str]) -> str:
    if entered.net:
        where = " inside an unprivileged user namespace" if entered.mode == "user" else ""
        return f"empty network namespace (only a down loopback){where}; own IPC and UTS namespaces"
    if "netns" in disabled:
        return "disabled by SANDBOX_DISABLE"
    return entered.detail or "not entered"


def _uid_detail(plan: Plan) -> str:
    entered = plan.entered
    if not plan.drop_uid:
        return "disabled by SANDBOX_DISABLE" if "uid" in plan.disabled else (entered.detail or "not entered")
    if entered.mode == "host":
        return f"runs as uid/gid {NOBODY}, a different kernel uid from the node, with no capabilities"
    return (f"runs as uid/gid {NOBODY} of its own user namespace, where no other id is mapped, with every "
            f"capability dropped; outside it that is the node's uid {entered.outside_uid}, so the node is "
            "out of reach through the empty root, seccomp and Landlock rather than through the uid")


def detect(max_memory_mb: int, max_cpu_seconds: int, entered: namespaces.Entered,
           disabled: frozenset[str], empty_dir: str | None = None) -> Plan:
    """Decide every child's layers; `empty_dir` is ignored (the root needs no directory now)."""
    if isinstance(entered, tuple):  # the older (netns_active, detail) form some tools still pass
        root = os.geteuid() == 0
        entered = namespaces.Entered("host" if root else "none", bool(entered[0]),
                                     NOBODY if root else os.geteuid(), os.geteuid(), entered[1])
    plan = Plan(max_memory_mb=max_memory_mb, max_cpu_seconds=max_cpu_seconds,
                disabled=disabled, entered=entered)
    root_detail = ""
    if "chroot" not in disabled and entered.mode in ("host", "user"):
        plan.root_fd, root_detail = namespaces.empty_root()
    plan.drop_uid = "uid" not in disabled and entered.mode in ("host", "user") and entered.inside_uid == NOBODY
    if "landlock" not in disabled:
        plan.landlock_abi = landlock.abi_version()
    plan.seccomp = (False, "disabled by SANDBOX_DISABLE") if "seccomp" in disabled else seccomp.supported()
    if plan.seccomp[0]:
        seccomp.prepare()
    no_root = "disabled by SANDBOX_DISABLE" if "chroot" in disabled else (entered.detail or "not entered")
    plan.layers = [
        IsolationLayer(name="fresh_process", active=True,
                       detail="one forked child per run, killed at the wall deadline"),
        IsolationLayer(name="network_namespace", active=entered.net, detail=_netns_detail(entered, disabled)),
        IsolationLayer(name="seccomp", active=plan.seccomp[0], detail=plan.seccomp[1]),
        IsolationLayer(name="chroot", active=plan.root_fd is not None,
                       detail=f"empty read-only root: {root_detail}" if plan.root_fd is not None else no_root),
        IsolationLayer(name="landlock", active=plan.landlock_abi > 0,
                       detail=landlock.describe(plan.landlock_abi) if plan.landlock_abi
                       else ("disabled by SANDBOX_DISABLE" if "landlock" in disabled
                             else "kernel without Landlock")),
        IsolationLayer(name="uid_drop", active=plan.drop_uid, detail=_uid_detail(plan)),
        IsolationLayer(name="no_capabilities", active=True,
                       detail="effective, permitted, inheritable, ambient and bounding sets empty"),
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


def lock_zygote(plan: Plan) -> None:
    """The zygote, once warm: into the empty root, down to the capabilities its children need.

    After this the zygote cannot reach the node's files (NATS credentials under /etc/nats,
    the virtualenv, /proc) any more than its children can. In host mode it keeps CAP_SETUID and
    CAP_SETGID so that each child can become uid 65534, and CAP_KILL to end those children when
    the node goes away; in user mode it keeps nothing.
    """
    if plan.root_fd is not None:
        namespaces.enter_root(plan.root_fd)
        os.close(plan.root_fd)
        plan.root_fd = -1  # entered: still reported active, nothing left to open
    keep = (namespaces.CAP_SETUID, namespaces.CAP_SETGID, namespaces.CAP_KILL) \
        if plan.drop_uid and plan.entered.mode == "host" else ()
    namespaces.drop_capabilities(keep)


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
    if baseline is None:
        baseline = _vm_bytes()  # before the root is gone (with it /proc)
    if plan.root_fd is not None and plan.root_fd >= 0:
        namespaces.enter_root(plan.root_fd)  # a parent that did not `lock_zygote` itself
    # stdio onto /dev/null *before* the channel takes fd 3: the zygote's devnull is often fd 3
    # itself, and dup'ing it afterwards would make stdin/stdout/stderr the node's channel (any
    # warning a library prints would then corrupt the protocol).
    for fd in (0, 1, 2):
        os.dup2(devnull_fd, fd)
    if channel_fd != CHANNEL_FD:
        os.dup2(channel_fd, CHANNEL_FD)
    os.closerange(CHANNEL_FD + 1, 1 << 20)
    os.environ.clear()
    ceiling = baseline + (plan.max_memory_mb + _HEADROOM_MB) * 1024 * 1024
    _setlimit(resource.RLIMIT_AS, ceiling)
    _setlimit(resource.RLIMIT_CPU, plan.max_cpu_seconds, plan.max_cpu_seconds + 1)
    _setlimit(resource.RLIMIT_NOFILE, CHANNEL_FD + 8)
    _setlimit(resource.RLIMIT_FSIZE, 0)
    _setlimit(resource.RLIMIT_CORE, 0)
    _setlimit(resource.RLIMIT_MEMLOCK, 0)
    _setlimit(resource.RLIMIT_MSGQUEUE, 0)
    if plan.drop_uid and plan.entered.mode == "host":
        namespaces.become_sandbox_user()
    namespaces.drop_capabilities()
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
