"""Landlock without privileges: a ruleset that handles every access right and grants none.

After `restrict_self` the process can open no file, make no TCP bind/connect (ABI >= 4) and
send no signal outside its own domain (ABI >= 6), whatever uid it runs as.
"""

from __future__ import annotations

import ctypes
import errno
import platform

_NR = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
LANDLOCK_CREATE_RULESET_VERSION = 1 << 0

_FS_RIGHTS_BY_ABI = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}
_ACCESS_NET_ALL = 0b11  # BIND_TCP | CONNECT_TCP
_SCOPE_ALL = 0b11  # ABSTRACT_UNIX_SOCKET | SIGNAL


class _RulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


_LIBC = ctypes.CDLL(None, use_errno=True)


def _libc() -> ctypes.CDLL:
    return _LIBC


def abi_version() -> int:
    """0 when the kernel or architecture has no Landlock."""
    numbers = _NR.get(platform.machine())
    if numbers is None:
        return 0
    version = _libc().syscall(numbers[0], None, ctypes.c_size_t(0), LANDLOCK_CREATE_RULESET_VERSION)
    return max(int(version), 0)


def describe(abi: int) -> str:
    parts = ["no file access"]
    if abi >= 4:
        parts.append("no TCP bind/connect")
    if abi >= 6:
        parts.append("no signals or abstract sockets outside the run")
    return f"Landlock ABI {abi}: " + ", ".join(parts)


def restrict_self(abi: int) -> None:
    """Confine the calling process; NO_NEW_PRIVS must already be set."""
    libc = _libc()
    create, _add_rule, restrict = _NR[platform.machine()]
    fs_bits = _FS_RIGHTS_BY_ABI.get(abi, 16)
    attr = _RulesetAttr(
        handled_access_fs=(1 << fs_bits) - 1,
        handled_access_net=_ACCESS_NET_ALL if abi >= 4 else 0,
        scoped=_SCOPE_ALL if abi >= 6 else 0,
    )
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    fd = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(size), 0)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {errno.errorcode.get(err, err)}")
    try:
        if libc.syscall(restrict, fd, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {errno.errorcode.get(err, err)}")
    finally:
        import os

        os.close(fd)
