"""Namespaces, the empty root and capabilities: the layers that used to need root.

The zygote enters its namespaces once, before it imports anything (`enter`); its children are
forked into them, so a fresh run pays nothing for them. Two ways in:

- **host** (the node is root with CAP_SYS_ADMIN): new network, IPC and UTS namespaces, no
  user namespace; the zygote keeps only CAP_SETUID/SETGID/SETPCAP, and each child becomes the
  real uid/gid 65534 and drops the rest. Children have a different kernel uid from the node.
- **user** (any other uid, e.g. 10001 with every capability dropped, as the manifests run it):
  one unprivileged user namespace together with new mount, network, IPC and UTS namespaces.
  The node's uid is mapped to 65534 inside and nothing else is mapped, so the children can
  never become anyone else. The capabilities that namespace grants are used once, to enter the
  empty root, and then dropped from every set (bounding set included) before any child exists.

The empty root is a read-only tmpfs created with the new mount API and never attached to any
directory (`fsopen`/`fsmount`): nothing exists on disk, so a kill -9 cannot leave anything
behind. Where that API is refused, the fallback is an empty directory that is deleted before
use (an open descriptor keeps it usable as a root; nothing can be created in it).
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
SANDBOX_ID = 65534  # the uid/gid every child runs as (inside its user namespace in "user" mode)

CAP_KILL, CAP_SETGID, CAP_SETUID, CAP_SETPCAP = 5, 6, 7, 8
PR_CAPBSET_DROP = 24
PR_SET_DUMPABLE = 4
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SYS = {"x86_64": {"capset": 126, "fsopen": 430, "fsconfig": 431, "fsmount": 432},
        "aarch64": {"capset": 91, "fsopen": 430, "fsconfig": 431, "fsmount": 432}}
FSOPEN_CLOEXEC = 1
FSMOUNT_CLOEXEC = 1
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 1, 2, 4, 8

_LIBC = ctypes.CDLL(None, use_errno=True)


def _sys(name: str) -> int:
    return _SYS.get(os.uname().machine, _SYS["x86_64"])[name]


@dataclass(frozen=True)
class Entered:
    """What `enter` achieved; identical for every child of one zygote."""

    mode: str  # "host", "user" or "none"
    net: bool
    inside_uid: int  # the uid the children run as, as they see it
    outside_uid: int  # the node's uid
    detail: str = ""  # why a namespace is missing, when one is


def _unshare(flags: int) -> int:
    return 0 if _LIBC.unshare(flags) == 0 else ctypes.get_errno()


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


ENTERED: Entered | None = None  # set by `enter_once`, for the code that runs after it


def enter_once(disabled: frozenset[str]) -> Entered:
    """`enter`, remembered: the zygote's launcher calls it before the `sandbox` package (and with
    it pandas, whose allocator starts a thread) is imported; the zygote then reads `ENTERED`."""
    global ENTERED
    if ENTERED is None:
        ENTERED = enter(disabled)
    return ENTERED


def enter(disabled: frozenset[str]) -> Entered:
    """Called before any thread exists: unshare(CLONE_NEWUSER) fails with EINVAL otherwise."""
    euid, egid = os.geteuid(), os.getegid()
    want_net = "netns" not in disabled
    if euid == 0 and _unshare(CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if want_net else 0)) == 0:
        return Entered("host", want_net, SANDBOX_ID if "uid" not in disabled else 0, 0)
    if not (want_net or "chroot" not in disabled or "uid" not in disabled):
        return Entered("none", False, euid, euid, "disabled by SANDBOX_DISABLE")
    flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | (CLONE_NEWNET if want_net else 0)
    err = _unshare(flags)
    if err:
        return Entered("none", False, euid, euid, f"unshare(CLONE_NEWUSER) not permitted here ({os.strerror(err)})")
    inside = SANDBOX_ID if "uid" not in disabled else euid
    # An unprivileged process may map exactly its own ids, and only after giving up setgroups.
    # Its /proc/self files must be its own for that: a process that changed uid without an exec
    # is not dumpable and they belong to root.
    _LIBC.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
    try:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{inside} {euid} 1\n")
        _write("/proc/self/gid_map", f"{inside} {egid} 1\n")
    except OSError as exc:  # inside a user namespace with no id of its own: no uid layer
        return Entered("user", want_net, -1, euid, f"could not map the sandbox's ids ({exc.strerror})")
    return Entered("user", want_net, inside, euid)


def _fs_call(name: str, *args) -> int:
    result = _LIBC.syscall(_sys(name), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")
    return result


def empty_root() -> tuple[int, str]:
    """A descriptor of an empty, read-only directory to become the root, and how it was made."""
    try:
        fs = _fs_call("fsopen", b"tmpfs", FSOPEN_CLOEXEC)
        try:
            for key, value in ((b"mode", b"0555"), (b"size", b"4096"), (b"nr_inodes", b"2")):
                _fs_call("fsconfig", fs, FSCONFIG_SET_STRING, key, value, 0)
            _fs_call("fsconfig", fs, FSCONFIG_CMD_CREATE, None, None, 0)
            attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC
            return _fs_call("fsmount", fs, FSMOUNT_CLOEXEC, attrs), \
                "an empty read-only tmpfs attached to no directory"
        finally:
            os.close(fs)
    except OSError:
        pass
    path = tempfile.mkdtemp(prefix="sandbox-root-")
    try:
        os.chmod(path, 0o555)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    finally:
        os.rmdir(path)  # gone before anything runs: nothing for a kill -9 to leave behind
    return fd, "an empty directory deleted before use"


def enter_root(root_fd: int) -> None:
    os.fchdir(root_fd)
    os.chroot(".")
    os.chdir("/")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def drop_capabilities(keep: tuple[int, ...] = ()) -> None:
    """Keep only `keep` (effective and permitted); empty the inheritable, bounding and ambient sets.

    The bounding set is emptied only while CAP_SETPCAP is still held; once it is gone, what is
    left of it is harmless (no exec is possible under NO_NEW_PRIVS and seccomp).
    """
    for cap in range(64):  # the bounding set only limits what an exec could gain: empty it all
        if _LIBC.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() != 22:  # EINVAL: past the last cap
            break  # no CAP_SETPCAP any more
    _LIBC.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    mask = 0
    for cap in keep:
        mask |= 1 << cap
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)(_CapData(mask & 0xFFFFFFFF, mask & 0xFFFFFFFF, 0), _CapData(mask >> 32, mask >> 32, 0))
    if _LIBC.syscall(_sys("capset"), ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"capset: {os.strerror(err)}")


def become_sandbox_user() -> None:
    """host mode, in the child: the real uid/gid 65534 and no groups (clears the capabilities)."""
    os.setgroups([])
    os.setresgid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
    os.setresuid(SANDBOX_ID, SANDBOX_ID, SANDBOX_ID)
