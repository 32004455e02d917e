"""Run a process the way deploy/k8s runs the node: a non-root uid, no capabilities, NO_NEW_PRIVS
and a seccomp profile from deploy/k8s/seccomp (compiled with libseccomp, as runc does).

`enter()` is called first thing in a process started as root; `interpreter()` finds a Python
the unprivileged uid can execute (this machine's virtualenv may live under a 0700 /root).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECCOMP_DIR = ROOT / "deploy" / "k8s" / "seccomp"
NODE_PROFILE = SECCOMP_DIR / "strategy-node.json"
RUNTIME_DEFAULT_LIKE = SECCOMP_DIR / "runtime-default-like.json"
POD_UID = 10001  # runAsUser / runAsGroup / fsGroup in deploy/k8s/base/deployment*.yaml

_ACTIONS = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
            "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
            "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000}
_OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4, "SCMP_CMP_GE": 5,
        "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
PR_SET_NO_NEW_PRIVS, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 38, 24, 47, 4
PR_SET_DUMPABLE = 4


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def libseccomp() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    except OSError:
        return None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _action(name: str, errno_ret: int | None) -> int:
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno.EPERM if errno_ret is None else errno_ret)
    return _ACTIONS[name]


def install_profile(path: Path) -> None:
    """Compile an OCI/Docker seccomp profile and load it on the calling process."""
    lib = libseccomp()
    if lib is None:
        raise OSError("libseccomp is not installed")
    profile = json.loads(path.read_text())
    ctx = lib.seccomp_init(_action(profile["defaultAction"], profile.get("defaultErrnoRet")))
    for rule in profile["syscalls"]:
        action = _action(rule["action"], rule.get("errnoRet", profile.get("defaultErrnoRet")))
        args = rule.get("args", [])
        cmps = [_ArgCmp(a["index"], _OPS[a["op"]], a["value"], a.get("valueTwo", 0)) for a in args]
        # Like runc: conditions on distinct arguments are ANDed in one rule; several conditions
        # on the same argument become separate rules (ORed).
        groups = [cmps] if len({c.arg for c in cmps}) == len(cmps) else [[c] for c in cmps]
        for name in rule["names"]:
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number < 0:
                continue  # unknown on this architecture
            for group in groups:
                array = (_ArgCmp * max(1, len(group)))(*group)
                rc = lib.seccomp_rule_add_array(ctx, action, number, len(group), array)
                if rc < 0:
                    raise OSError(-rc, f"seccomp_rule_add {name}: {os.strerror(-rc)}")
    rc = lib.seccomp_load(ctx)
    if rc < 0:
        raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def enter(uid: int = POD_UID, profile: str | None = str(NODE_PROFILE)) -> None:
    """From root to the pod's securityContext: uid/gid (and fsGroup) 10001, every capability
    set empty, NO_NEW_PRIVS (allowPrivilegeEscalation: false), then the seccomp profile."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([uid])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # clears the effective and permitted sets
    with open("/proc/self/status") as fh:
        caps = {k: v.strip() for k, v in (line.split(":", 1) for line in fh if line.startswith("Cap"))}
    assert all(v == "0000000000000000" for v in caps.values()), caps
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # as after the exec a container starts with
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if profile:
        install_profile(Path(profile))


def interpreter(uid: int = POD_UID) -> tuple[str, dict[str, str]] | None:
    """A Python `uid` can execute, and the environment that gives it this project's packages."""
    paths = os.pathsep.join([str(ROOT)] + [p for p in sys.path if p.endswith("site-packages")])
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for exe in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if not os.path.exists(exe):
            continue
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": paths}
        try:
            probe = subprocess.run([exe, "-c", "import numpy, pandas, nats, msgspec, talib"], env=env,
                                   user=uid, group=uid, extra_groups=[], capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return exe, env
    return None


def userns_possible(uid: int = POD_UID) -> tuple[bool, str]:
    """Whether this machine lets an unprivileged process create a user namespace at all."""
    found = interpreter(uid)
    if found is None:
        return False, f"no Python interpreter that uid {uid} can run"
    exe, env = found
    code = ("import ctypes, os; r = ctypes.CDLL(None, use_errno=True).unshare(0x10000000); "
            "print(r, os.strerror(ctypes.get_errno()))")
    out = subprocess.run([exe, "-c", code], env=env, user=uid, group=uid, extra_groups=[],
                         capture_output=True, text=True, timeout=60)
    first = out.stdout.strip().split(" ", 1)
    if first and first[0] == "0":
        return True, ""
    return False, f"this machine refuses unprivileged user namespaces ({out.stdout.strip() or out.stderr[-200:]})"
