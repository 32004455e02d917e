"""Writes the pod seccomp profiles (OCI/Docker JSON) next to this file.

    python deploy/k8s/seccomp/generate.py          # rewrite both profiles
    python deploy/k8s/seccomp/generate.py --check  # exit 1 if the files are out of date

`runtime-default-like.json`: an allow-list of every syscall libseccomp knows for x86_64 and
aarch64 except those a container runtime's default profile keeps from a container without
capabilities (namespaces, mounts, chroot, kernel modules, keyrings, bpf, perf, clock setting,
reboot, swap, quota, ...); clone only without namespace flags, clone3 answered with ENOSYS so
that libc falls back to clone. It is our statement of what `RuntimeDefault` means for a pod
running as uid 10001 with every capability dropped, and the tests run the node under it.

`strategy-node.json`: the same plus exactly what the sandbox's zygote needs to build its
layers without root (sandbox/namespaces.py): one `unshare` with exactly the flags it uses,
`chroot` into the empty root, and `fsopen`/`fsconfig`/`fsmount` to create that root as a
detached tmpfs. The kernel still checks capabilities for each: only a process holding them
in its own user namespace (the zygote, before it drops them) can succeed.

Install `strategy-node.json` as `/var/lib/kubelet/seccomp/strategy-node.json` on every
node (or through the Security Profiles Operator) and reference it as a Localhost profile.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARCHES = {"SCMP_ARCH_X86_64": 0xC000003E, "SCMP_ARCH_AARCH64": 0xC00000B7}

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
# The one unshare the zygote makes when it is not root (sandbox/namespaces.py, "user" mode).
ZYGOTE_UNSHARE = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET

# Kept from a container without capabilities by the runtimes' default profiles.
DENIED = {
    # namespaces and mounts (CAP_SYS_ADMIN)
    "unshare", "setns", "mount", "umount", "umount2", "pivot_root", "mount_setattr", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick",
    # CAP_SYS_CHROOT
    "chroot",
    # kernel modules, kexec, reboot, swap, accounting, quota
    "init_module", "finit_module", "delete_module", "create_module", "query_module", "get_kernel_syms",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
    "nfsservctl",
    # clocks, host identity, kernel log
    "settimeofday", "stime", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "syslog",
    # keyrings, bpf, perf, fanotify, handles, userfaultfd
    "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "fanotify_init",
    "name_to_handle_at", "open_by_handle_at", "userfaultfd", "lookup_dcookie",
    # raw hardware and legacy interfaces
    "iopl", "ioperm", "vm86", "vm86old", "uselib", "ustat", "sysfs", "_sysctl", "vhangup",
    "pciconfig_read", "pciconfig_write", "pciconfig_iobase", "kcmp",
    # NUMA policy of other processes (CAP_SYS_NICE)
    "move_pages", "migrate_pages", "mbind", "set_mempolicy", "set_mempolicy_home_node",
    # io_uring (recent runtime defaults drop it)
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # handled below with argument conditions
    "clone", "clone3", "personality",
}


def _known_syscalls() -> list[str]:
    path = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(path)
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    lib.seccomp_syscall_resolve_num_arch.argtypes = [ctypes.c_uint32, ctypes.c_int]
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    names: set[str] = set()
    for token in ARCHES.values():
        for number in range(0, 1024):
            ptr = lib.seccomp_syscall_resolve_num_arch(token, number)
            if ptr:
                names.add(ctypes.string_at(ptr).decode())
                libc.free(ptr)
    return sorted(names)


def runtime_default_like(names: list[str]) -> dict:
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": sorted(ARCHES),
        "syscalls": [
            {"names": [n for n in names if n not in DENIED], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": CLONE_NAMESPACES, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
             "comment": "threads and processes, never new namespaces"},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "comment": "ENOSYS: its flags cannot be inspected, libc falls back to clone"},
        ] + [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}]}
            for value in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
        ],
    }


def strategy_node(names: list[str]) -> dict:
    profile = runtime_default_like(names)
    profile["syscalls"] += [
        {"names": ["unshare"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": ZYGOTE_UNSHARE, "op": "SCMP_CMP_EQ"}],
         "comment": "the zygote's user+mount+network+IPC+UTS namespaces, exactly these flags"},
        {"names": ["chroot", "fsopen", "fsconfig", "fsmount"], "action": "SCMP_ACT_ALLOW",
         "comment": "the empty root: a detached read-only tmpfs (needs capabilities in the zygote's "
                    "own user namespace; the kernel refuses everyone else)"},
    ]
    return profile


PROFILES = {"runtime-default-like.json": runtime_default_like, "strategy-node.json": strategy_node}


def render() -> dict[str, str]:
    names = _known_syscalls()
    return {name: json.dumps(build(names), indent=1) + "\n" for name, build in PROFILES.items()}


def main(argv: list[str]) -> int:
    stale = []
    for name, text in render().items():
        path = HERE / name
        if "--check" in argv:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("out of date:", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
