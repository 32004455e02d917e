"""A seccomp-BPF filter built with ctypes: no libseccomp, no compiled extension.

It is a denylist on top of the other layers: it takes away every syscall a strategy could use
to reach beyond its own process (sockets, new processes, exec, ptrace, signals to others, file
creation and opening, namespaces, kernel keyrings, bpf, io_uring, System V / POSIX IPC objects
that outlive the run, the scheduling of other processes, the kernel log ...). Denied calls fail with
EPERM/EACCES, so libraries see an ordinary OSError rather than a kill; a foreign ABI (x32,
i386) is killed outright.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
PR_GET_SECCOMP = 21
SECCOMP_MODE_FILTER = 2

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_ALLOW = 0x7FFF0000

BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_RET_K = 0x06

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

# x86_64 syscall numbers (arch/x86/entry/syscalls/syscall_64.tbl)
_X86_64 = {
    "open": 2, "truncate": 76, "rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85,
    "link": 86, "unlink": 87, "symlink": 88, "chmod": 90, "chown": 92, "lchown": 94,
    "mknod": 133, "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50,
    "socketpair": 53, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62,
    "ptrace": 101, "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114,
    "setgroups": 116, "setresuid": 117, "setresgid": 119, "setfsuid": 122, "setfsgid": 123,
    "capset": 126, "rt_sigqueueinfo": 129, "personality": 135, "pivot_root": 155,
    "prctl": 157, "adjtimex": 159, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173,
    "init_module": 175, "delete_module": 176, "quotactl": 179, "tkill": 200,
    "clock_settime": 227, "tgkill": 234, "kexec_load": 246, "add_key": 248,
    "request_key": 249, "keyctl": 250, "migrate_pages": 256, "openat": 257,
    "mkdirat": 258, "mknodat": 259, "fchownat": 260, "unlinkat": 263, "renameat": 264,
    "linkat": 265, "symlinkat": 266, "fchmodat": 268, "unshare": 272, "vmsplice": 278,
    "move_pages": 279, "accept4": 288, "rt_tgsigqueueinfo": 297, "perf_event_open": 298,
    "fanotify_init": 300, "prlimit64": 302, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "clock_adjtime": 305, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "renameat2": 316, "seccomp": 317,
    "memfd_create": 319, "kexec_file_load": 320, "bpf": 321, "execveat": 322,
    "userfaultfd": 323, "pkey_mprotect": 329, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434, "clone3": 435,
    "openat2": 437, "pidfd_getfd": 438, "fchmodat2": 452, "memfd_secret": 447,
    # System V and POSIX IPC objects outlive the process and are shared by every process of the
    # same uid: a run could leave state for a later run (or another user's concurrent run).
    "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66,
    "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semtimedop": 220,
    "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243,
    "mq_notify": 244, "mq_getsetattr": 245,
    # scheduling of *other* processes of the same uid (sibling runs, or the node when not root)
    "setpriority": 141, "ioprio_set": 251, "sched_setparam": 142, "sched_setscheduler": 144,
    "sched_setaffinity": 203, "sched_setattr": 314,
    "syslog": 103,
}

DENY_EPERM = (
    "socket", "connect", "accept", "accept4", "bind", "listen", "socketpair",
    "clone", "fork", "vfork", "execve", "execveat", "ptrace", "process_vm_readv",
    "process_vm_writev", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open",
    "pidfd_getfd", "setuid", "setgid", "setreuid", "setregid", "setgroups", "setresuid",
    "setresgid", "setfsuid", "setfsgid", "capset", "personality", "pivot_root", "prctl",
    "adjtimex", "chroot", "acct", "settimeofday", "mount", "umount2", "swapon", "swapoff",
    "reboot", "sethostname", "setdomainname", "iopl", "ioperm", "init_module",
    "delete_module", "quotactl", "clock_settime", "kexec_load", "kexec_file_load",
    "add_key", "request_key", "keyctl", "migrate_pages", "move_pages", "unshare", "setns",
    "vmsplice", "perf_event_open", "fanotify_init", "name_to_handle_at",
    "open_by_handle_at", "clock_adjtime", "memfd_create", "memfd_secret", "bpf",
    "userfaultfd", "pkey_mprotect", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount",
    "fspick", "seccomp",
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop",
    "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr", "setpriority", "ioprio_set", "syslog",
)
DENY_EACCES = (
    "open", "openat", "openat2", "creat", "truncate", "rename", "renameat", "renameat2",
    "mkdir", "mkdirat", "rmdir", "link", "linkat", "unlink", "unlinkat", "symlink",
    "symlinkat", "chmod", "fchmodat", "fchmodat2", "chown", "lchown", "fchownat", "mknod",
    "mknodat",
)
DENY_ENOSYS = ("clone3",)  # glibc falls back to clone, which is denied above
SELF_ONLY_ARG0 = ("kill", "tkill", "tgkill")  # signals only to ourselves (abort/raise)
ZERO_ARG0 = ("prlimit64",  # may only lower its own limits
             # may only change its own scheduling (pid 0), never a sibling run's or the node's
             "sched_setparam", "sched_setscheduler", "sched_setaffinity", "sched_setattr")


_LIBC = ctypes.CDLL(None, use_errno=True)


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def supported() -> tuple[bool, str]:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False, f"no syscall table for {platform.machine()}"
    libc = _LIBC
    if libc.prctl(PR_GET_SECCOMP, 0, 0, 0, 0) < 0:
        return False, f"kernel without seccomp ({errno.errorcode.get(ctypes.get_errno(), '?')})"
    return True, "seccomp-bpf denylist of %d syscalls" % (
        len(DENY_EPERM) + len(DENY_EACCES) + len(SELF_ONLY_ARG0) + len(ZERO_ARG0)
    )


def build_program(own_pid: int) -> list[tuple[int, int, int, int]]:
    """The filter as (code, jt, jf, k) rows; `own_pid` is the only allowed signal target."""
    table = _X86_64
    arg0_lo = 16  # offsetof(struct seccomp_data, args[0]), little endian low word
    prog: list[tuple[int, int, int, int]] = [
        (BPF_LD_W_ABS, 0, 0, 4),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
        (BPF_LD_W_ABS, 0, 0, 0),
        (BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        (BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),
    ]
    for names, ret in (
        (DENY_ENOSYS, SECCOMP_RET_ERRNO | errno.ENOSYS),
        (DENY_EPERM, SECCOMP_RET_ERRNO | errno.EPERM),
        (DENY_EACCES, SECCOMP_RET_ERRNO | errno.EACCES),
    ):
        for name in names:
            if name in DENY_ENOSYS and ret != SECCOMP_RET_ERRNO | errno.ENOSYS:
                continue
            prog.append((BPF_JEQ_K, 0, 1, table[name]))
            prog.append((BPF_RET_K, 0, 0, ret))
    for names, allowed in ((SELF_ONLY_ARG0, own_pid), (ZERO_ARG0, 0)):
        for name in names:
            prog += [
                (BPF_JEQ_K, 0, 4, table[name]),
                (BPF_LD_W_ABS, 0, 0, arg0_lo),
                (BPF_JEQ_K, 0, 1, allowed),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
                (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
            ]
    prog.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return prog


_PLACEHOLDER_PID = 0x7FFFFFFE  # never a real pid (pid_max is at most 2**22)
_prepared: tuple[ctypes.Array, list[int]] | None = None


def prepare() -> None:
    """Build the filter once (in the zygote); children only patch in their own pid."""
    global _prepared
    rows = build_program(_PLACEHOLDER_PID)
    array = (SockFilter * len(rows))(*[SockFilter(*row) for row in rows])
    _prepared = (array, [i for i, row in enumerate(rows) if row[3] == _PLACEHOLDER_PID])


def install(own_pid: int) -> None:
    """Install the filter on the calling thread; requires NO_NEW_PRIVS (set here)."""
    if _prepared is None:
        prepare()
    array, pid_rows = _prepared
    for i in pid_rows:
        array[i].k = own_pid
    prog = SockFprog(len(array), array)
    libc = _LIBC
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter install failed")


def pack(rows: list[tuple[int, int, int, int]]) -> bytes:
    """Raw `struct sock_filter` bytes, for inspection and tests."""
    return b"".join(struct.pack("=HBBI", *row) for row in rows)
