"""The PROCESS layer alone contains code, as if the language layer had been bypassed.

A fresh `python` process does what the zygote does (`enter_namespaces`, `detect`, `lock_zygote`), forks a
child that calls `sandbox.lockdown.apply(...)` and then runs raw operations with full Python
(open, listdir, socket, fork, kill, exec, SysV IPC, scheduling of other processes ...). Each
result travels back over the child's channel (fd 3). Every operation must be denied; where a
layer is inactive on this machine the affected check is skipped with the reason, never silently.

Besides the full lockdown, each layer is also run on its own (the others disabled through the
same names SANDBOX_DISABLE uses), to show each stops what it is meant to stop by itself.

The second half looks at the real node's children through /proc: credentials, seccomp mode,
namespaces, root, fds and rlimits of a ready child, no child outliving its request, and the
zygote's environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from typing import Any

import pytest

from contracts import subjects
from tests.sandbox import manifest_conditions
from tests.support import columnar_bars

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IS_ROOT = os.geteuid() == 0
NOBODY = 65534
SECRET_ENV = "STRATEGY_TEST_SECRET"

# ---------------------------------------------------------------------------------------------
# The probe runner (executed as `python -c RUNNER CONFIG_JSON`)
# ---------------------------------------------------------------------------------------------

RUNNER = textwrap.dedent(r'''
    import json, os, sys
    cfg = json.loads(sys.argv[1])
    sys.path.insert(0, cfg["root"])
    if cfg.get("manifest"):                   # the pod's securityContext, before anything else
        from tests.sandbox import manifest_conditions
        manifest_conditions.enter(profile=cfg["manifest"])
    disabled = frozenset(cfg["disabled"])
    # as the zygote's launcher does: namespaces first, while this process has one thread (the
    # sandbox package imports pandas, whose allocator starts one)
    import importlib.util
    spec = importlib.util.spec_from_file_location("sandbox.namespaces", cfg["root"] + "/sandbox/namespaces.py")
    namespaces = importlib.util.module_from_spec(spec)
    sys.modules["sandbox.namespaces"] = namespaces
    spec.loader.exec_module(namespaces)
    namespaces.enter_once(disabled)
    from sandbox import lockdown
    entered = lockdown.enter_namespaces(disabled)
    import ctypes, errno, fcntl, mmap, resource, signal, socket, stat, time, traceback
    plan = lockdown.detect(256, 5, entered, disabled)
    layers = {l.name: {"active": l.active, "detail": l.detail} for l in plan.layers}
    devnull = os.open(os.devnull, os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    report_r, report_w = os.pipe()

    def zygote():
        # the zygote's part, as sandbox/zygote.py plays it: lock itself, then fork the children
        received = []
        signal.signal(signal.SIGUSR1, lambda *a: received.append(1))
        baseline = lockdown.vm_bytes()
        lockdown.lock_zygote(plan)

        def locked_child(body):
            parent_end, child_end = socket.socketpair()
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    parent_end.close()
                    lockdown.apply(plan, child_end.fileno(), devnull, baseline)
                    body()
                except BaseException:
                    code = 70
                os._exit(code)
            child_end.close()
            return pid, parent_end

        # a sibling run: another locked child that only waits (the victim of sibling probes)
        victim, victim_end = locked_child(lambda: time.sleep(30))
        time.sleep(0.1)

        def attacker():
            ns = {"os": os, "socket": socket, "ctypes": ctypes, "libc": libc, "resource": resource,
                  "signal": signal, "mmap": mmap, "fcntl": fcntl, "stat": stat, "errno": errno,
                  "P": dict(cfg["params"], victim=victim, parent=os.getppid())}
            for name, source in cfg["probes"]:
                try:
                    ns["result"] = None
                    exec(source, ns)
                    out = {"ok": repr(ns["result"])[:300]}
                except BaseException as exc:
                    out = {"err": type(exc).__name__, "errno": getattr(exc, "errno", None), "msg": str(exc)[:200]}
                os.write(3, (json.dumps({name: out}) + "\n").encode())

        pid, end = locked_child(attacker)
        _, status = os.waitpid(pid, 0)
        lines = b""
        end.settimeout(5)
        while True:
            chunk = end.recv(65536)
            if not chunk:
                break
            lines += chunk
        results = {}
        for line in lines.decode().splitlines():
            results.update(json.loads(line))
        os.write(report_w, json.dumps({
            "victim": victim, "results": results, "parent_signals": len(received),
            "exit": {"signaled": os.WIFSIGNALED(status),
                     "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                     "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None},
        }).encode())
        os.close(report_w)
        os.waitpid(victim, 0)  # the runner looks at the victim, then kills it

    zpid = os.fork()
    if zpid == 0:
        try:
            os.close(report_r)
            zygote()
            os._exit(0)
        except BaseException:
            os.write(report_w, json.dumps({"zygote_error": traceback.format_exc()}).encode())
            os._exit(70)
    os.close(report_w)
    raw = b""
    while True:
        chunk = os.read(report_r, 1 << 20)
        if not chunk:
            break
        raw += chunk
    report = json.loads(raw)
    if "zygote_error" in report:
        raise SystemExit(report["zygote_error"])
    victim = report["victim"]
    with open(f"/proc/{victim}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    victim_state = {"alive": fields[0] not in ("Z", "X"), "nice": int(fields[16]), "policy": int(fields[38]),
                    "affinity": sorted(os.sched_getaffinity(victim)),
                    "expected_nice": os.getpriority(os.PRIO_PROCESS, 0),
                    "expected_affinity": sorted(os.sched_getaffinity(0))}
    os.kill(victim, signal.SIGKILL)
    os.waitpid(zpid, 0)
    print(json.dumps({
        "layers": layers, "results": report["results"], "parent_signals": report["parent_signals"],
        "victim": victim_state, "exit": report["exit"],
    }))
''')

# name -> source run in the locked child; `result` is reported, an exception is a denial.
PROBES: dict[str, str] = {
    "read_canary": "result = open(P['canary']).read()",
    "listdir_root": "result = os.listdir('/')",
    "proc_self_environ": "result = open('/proc/self/environ', 'rb').read()",
    "environ": "result = dict(os.environ)",
    "getenv_secret": "libc.getenv.restype = ctypes.c_char_p\nresult = libc.getenv(P['secret_env'].encode())",
    "write_file": "fh = open(P['out'], 'w'); fh.write('x'); fh.close(); result = 'written'",
    "mkdir": "os.mkdir(P['out'] + '.d'); result = 'made'",
    "socket_inet": "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); result = s.fileno()",
    "socket_unix": "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); result = s.fileno()",
    "connect_listener": "s = socket.create_connection((P['host'], P['port']), timeout=1); result = 'connected'",
    "fork": "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)\nresult = pid",
    "kill_parent": "os.kill(P['parent'], signal.SIGUSR1); result = 'sent'",
    "kill_sibling": "os.kill(P['victim'], signal.SIGKILL); result = 'sent'",
    "kill_everyone": "os.kill(-1, signal.SIGKILL); result = 'sent'",
    "kill_group": "os.kill(0, 0); result = 'sent'",
    "setpriority_sibling": "os.setpriority(os.PRIO_PROCESS, P['victim'], 19); result = 'reniced'",
    "setpriority_all_of_uid": "os.setpriority(os.PRIO_USER, 0, 19); result = 'reniced'",
    "sched_setaffinity_sibling": "os.sched_setaffinity(P['victim'], {0}); result = 'pinned'",
    "sched_setscheduler_sibling": "os.sched_setscheduler(P['victim'], os.SCHED_IDLE, os.sched_param(0)); result = 'idle'",
    "prlimit_parent": "result = resource.prlimit(P['parent'], resource.RLIMIT_NOFILE, (1, 1))",
    "raise_rlimit_as": "resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)); result = 'raised'",
    "setuid_root": "os.setuid(0); result = os.getuid()",
    "chroot_escape": "os.chroot('/tmp'); result = 'chrooted'",
    "unshare_userns": "r = libc.unshare(0x10000000)\nif r != 0:\n    raise OSError(ctypes.get_errno(), 'unshare')\nresult = r",
    "ptrace_parent": "r = libc.ptrace(16, P['parent'], 0, 0)\nif r != 0:\n    raise OSError(ctypes.get_errno(), 'ptrace')\nresult = r",
    "proc_parent_mem": "result = open('/proc/%d/mem' % P['parent'], 'rb')",
    "memfd_create": "result = os.memfd_create('x')",
    "sysv_shmget": (
        "r = libc.syscall(29, P['ipc_key'], 4096, 0o1000 | 0o666)\n"
        "if r < 0:\n    raise OSError(ctypes.get_errno(), 'shmget')\nresult = r"),
    "sysv_msgget": (
        "r = libc.syscall(68, P['ipc_key'], 0o1000 | 0o666)\n"
        "if r < 0:\n    raise OSError(ctypes.get_errno(), 'msgget')\nresult = r"),
    "posix_mq_open": (
        "r = libc.syscall(240, b'/lockdown-test', os.O_CREAT | os.O_RDWR, 0o666, None)\n"
        "if r < 0:\n    raise OSError(ctypes.get_errno(), 'mq_open')\nresult = r"),
    "io_uring_setup": (
        "buf = ctypes.create_string_buffer(120)\nr = libc.syscall(425, 4, buf)\n"
        "if r < 0:\n    raise OSError(ctypes.get_errno(), 'io_uring_setup')\nresult = r"),
    "bpf": "r = libc.syscall(321, 0, None, 0)\nif r < 0:\n    raise OSError(ctypes.get_errno(), 'bpf')\nresult = r",
    "allocate_2gb": "b = bytearray(2 * 1024 ** 3); result = len(b)",
    "uid": "result = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())",
    "open_fds": (
        "fds = []\nfor fd in range(1024):\n    try:\n        fcntl.fcntl(fd, fcntl.F_GETFD)\n"
        "        fds.append(fd)\n    except OSError:\n        pass\nresult = fds"),
    "stdio_is_devnull": "result = [stat.S_ISCHR(os.fstat(fd).st_mode) and os.fstat(fd).st_rdev == os.makedev(1, 3) for fd in (0, 1, 2)]",
    "execv": "os.execv('/bin/sh', ['sh', '-c', 'exit 0'])",  # last: success would replace the child
}

ARCH_PROBES: dict[str, str] = {
    # a syscall through the x32 ABI: the filter kills the process outright
    "x32_syscall": "libc.syscall(0x40000000 | 39)\nresult = 'alive'",
    # the i386 ABI via `int 0x80` from an executable page: killed too
    "int80_syscall": (
        "m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "m.write(b'\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3')\n"  # mov eax, 20 (getpid); int 0x80; ret
        "f = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(m)))\n"
        "result = f()"),
}


def _denied(out: dict) -> bool:
    return "err" in out


# How each probe's result must look for the probe to count as contained.
CHECKS: dict[str, Any] = {name: _denied for name in PROBES}
CHECKS.update({
    "listdir_root": lambda out: "err" in out or out["ok"] == "[]",
    "environ": lambda out: out.get("ok") == "{}",
    "getenv_secret": lambda out: out.get("ok") == "None",
    "uid": lambda out: out.get("ok") == repr((NOBODY, NOBODY, NOBODY, NOBODY, [])),
    "open_fds": lambda out: out.get("ok") == "[0, 1, 2, 3]",
    "stdio_is_devnull": lambda out: out.get("ok") == "[True, True, True]",
})


@dataclass
class Run:
    layers: dict[str, dict]
    results: dict[str, dict]
    parent_signals: int
    victim: dict
    exit: dict
    pending_connections: int
    leftovers: list[str]


def _ipc_objects(key: int) -> list[str]:
    found = []
    for kind in ("shm", "msg", "sem"):
        try:
            with open(f"/proc/sysvipc/{kind}") as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols and int(cols[0]) == key:
                found.append(f"{kind} id {cols[1]}")
                flag = {"shm": "-m", "msg": "-q", "sem": "-s"}[kind]
                subprocess.run(["ipcrm", flag, cols[1]], check=False, capture_output=True)
    return found


def run_probes(probes: dict[str, str], disabled: frozenset[str] = frozenset(), manifest: str | None = None,
               tmpdir_in_work: bool = False) -> Run:
    """Run `probes` in a locked-down child of a fresh process; collect what happened.

    With `manifest` (a seccomp profile path) the process first takes the pod's securityContext
    from deploy/k8s: uid/gid 10001, no capabilities, NO_NEW_PRIVS and that profile.
    """
    work = tempfile.mkdtemp(prefix="lockdown-traps-", dir="/tmp")
    os.chmod(work, 0o777)  # readable and writable by anyone: only the lockdown may stop access
    canary = os.path.join(work, "canary.txt")
    secret = "canary-" + secrets.token_hex(16)
    with open(canary, "w") as fh:
        fh.write(secret)
    os.chmod(canary, 0o644)
    out = os.path.join(work, "written")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    ipc_key = 0x5A000000 | secrets.randbelow(1 << 20)
    cfg = {
        "root": ROOT, "disabled": sorted(disabled), "probes": list(probes.items()), "manifest": manifest,
        "params": {"canary": canary, "out": out, "host": "127.0.0.1", "port": listener.getsockname()[1],
                   "secret_env": SECRET_ENV, "ipc_key": ipc_key},
    }
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", **{SECRET_ENV: secret})
    if tmpdir_in_work:  # anything the sandbox leaves in its TMPDIR shows up in `leftovers`
        env["TMPDIR"] = work
    exe = sys.executable
    if manifest:
        found = manifest_conditions.interpreter()
        assert found is not None, "no Python interpreter uid 10001 can run"
        exe, extra = found
        env.update(extra)
    try:
        proc = subprocess.run([exe, "-c", RUNNER, json.dumps(cfg)], env=env, cwd=work,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        assert secret not in proc.stdout, "the canary secret left the locked child"
        pending = 0
        while True:
            try:
                conn, _ = listener.accept()
                conn.close()
                pending += 1
            except BlockingIOError:
                break
        leftovers = [p for p in os.listdir(work) if p != "canary.txt"] + _ipc_objects(ipc_key)
        return Run(pending_connections=pending, leftovers=leftovers, **report)
    finally:
        listener.close()
        shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Full lockdown: every probe denied
# ---------------------------------------------------------------------------------------------

_LAYER_OF_PROBE = {"uid": "uid_drop", "setuid_root": "uid_drop"}


@pytest.fixture(scope="module")
def full() -> Run:
    return run_probes(PROBES)


def test_full_lockdown_reports_its_layers(full: Run):
    print("\nprocess layers on this machine:")
    for name, layer in full.layers.items():
        print(f"  {name:18} {'active  ' if layer['active'] else 'INACTIVE'}  {layer['detail']}")
    assert full.exit == {"signaled": False, "signal": None, "code": 0}, full.exit
    assert set(full.results) == set(PROBES), f"probes without a report: {set(PROBES) - set(full.results)}"


@pytest.mark.parametrize("probe", list(PROBES))
def test_full_lockdown_denies(full: Run, probe: str):
    layer = _LAYER_OF_PROBE.get(probe)
    if layer and not full.layers[layer]["active"]:
        pytest.skip(f"{layer} is inactive here: {full.layers[layer]['detail']}")
    out = full.results.get(probe)
    assert out is not None, f"{probe}: no report (the child was replaced or died)"
    assert CHECKS[probe](out), f"{probe} was not contained: {out}"


def test_full_lockdown_left_nothing_behind(full: Run):
    assert full.pending_connections == 0, "a locked child connected to the host listener"
    assert full.parent_signals == 0, "a locked child signalled its parent"
    assert full.leftovers == [], f"a locked child left files or IPC objects: {full.leftovers}"
    victim = full.victim
    assert victim["alive"], "a locked child killed its sibling"
    assert (victim["nice"], victim["policy"], victim["affinity"]) == (
        victim["expected_nice"], os.SCHED_OTHER, victim["expected_affinity"]), f"a locked child reached its sibling: {victim}"


# ---------------------------------------------------------------------------------------------
# The pod's securityContext (deploy/k8s): uid 10001, no capabilities, the Localhost profile
# ---------------------------------------------------------------------------------------------

NAMESPACE_LAYERS = ("network_namespace", "chroot", "uid_drop")


def _pod_conditions_or_skip() -> None:
    if not IS_ROOT:
        pytest.skip("taking the pod's uid needs a root test process")
    if manifest_conditions.libseccomp() is None:
        pytest.skip("libseccomp is not installed: cannot compile the pod's seccomp profile")
    possible, why = manifest_conditions.userns_possible()
    if not possible:
        pytest.skip(why)


@pytest.fixture(scope="module")
def as_pod() -> Run:
    _pod_conditions_or_skip()
    return run_probes(PROBES, manifest=str(manifest_conditions.NODE_PROFILE))


def test_pod_conditions_report_the_same_active_layers_as_root(full: Run, as_pod: Run):
    print("\nprocess layers as the manifests run the node (uid 10001, no capabilities, Localhost profile):")
    for name, layer in as_pod.layers.items():
        print(f"  {name:18} {'active  ' if layer['active'] else 'INACTIVE'}  {layer['detail']}")
    active = lambda run: sorted(n for n, layer in run.layers.items() if layer["active"])  # noqa: E731
    assert active(as_pod) == active(full)
    for name in NAMESPACE_LAYERS:
        assert as_pod.layers[name]["active"], as_pod.layers[name]
    assert as_pod.exit == {"signaled": False, "signal": None, "code": 0}, as_pod.exit


@pytest.mark.parametrize("probe", list(PROBES))
def test_pod_conditions_lockdown_denies(as_pod: Run, probe: str):
    out = as_pod.results.get(probe)
    assert out is not None, f"{probe}: no report (the child was replaced or died)"
    if probe == "uid":
        # Inside its own user namespace only 65534 is mapped: the pod's supplementary group
        # (fsGroup 10001) shows as 65534 too, and an unprivileged namespace cannot drop it.
        assert out.get("ok") in (repr((NOBODY,) * 4 + ([],)), repr((NOBODY,) * 4 + ([NOBODY],))), out
        return
    assert CHECKS[probe](out), f"{probe} was not contained under the pod's conditions: {out}"


def test_pod_conditions_left_nothing_behind(as_pod: Run):
    assert as_pod.pending_connections == 0
    assert as_pod.parent_signals == 0
    assert as_pod.leftovers == [], as_pod.leftovers
    assert as_pod.victim["alive"]


def test_runtime_default_without_the_profile_additions_turns_the_namespace_layers_off_and_says_why():
    # The same pod with plain RuntimeDefault: unshare is refused, and Health must say so rather
    # than claim the layers. This is why the manifests carry their own Localhost profile.
    _pod_conditions_or_skip()
    run = run_probes({"uid": PROBES["uid"]}, manifest=str(manifest_conditions.RUNTIME_DEFAULT_LIKE))
    for name in NAMESPACE_LAYERS:
        assert not run.layers[name]["active"], run.layers[name]
    assert "unshare(CLONE_NEWUSER) not permitted here" in run.layers["network_namespace"]["detail"]
    assert run.layers["seccomp"]["active"] and run.layers["landlock"]["active"]


def test_without_the_mount_api_the_empty_root_is_a_deleted_directory_and_nothing_is_left():
    # A runtime that refuses fsopen/fsmount (older kernel, AppArmor): the zygote's fallback root
    # is a directory deleted before use. It must still be empty, and leave nothing in TMPDIR.
    _pod_conditions_or_skip()
    profile = json.loads(manifest_conditions.NODE_PROFILE.read_text())
    for rule in profile["syscalls"]:
        rule["names"] = [n for n in rule["names"] if n not in ("fsopen", "fsconfig", "fsmount")]
    fd, path = tempfile.mkstemp(prefix="no-mount-api-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(profile, fh)
        os.chmod(path, 0o644)
        probes = {name: PROBES[name] for name in ("listdir_root", "read_canary", "write_file", "mkdir", "uid")}
        run = run_probes(probes, manifest=path, tmpdir_in_work=True)
    finally:
        os.unlink(path)
    assert run.layers["chroot"]["active"], run.layers["chroot"]
    assert "deleted before use" in run.layers["chroot"]["detail"], run.layers["chroot"]
    for name in ("listdir_root", "read_canary", "write_file", "mkdir"):
        assert CHECKS[name](run.results[name]), (name, run.results[name])
    assert run.leftovers == [], run.leftovers


@pytest.mark.parametrize("probe", list(ARCH_PROBES))
def test_foreign_syscall_abi_kills_the_child(probe: str):
    run = run_probes({probe: ARCH_PROBES[probe]})
    if not run.layers["seccomp"]["active"]:
        pytest.skip(f"seccomp is inactive here: {run.layers['seccomp']['detail']}")
    assert probe not in run.results, f"the child survived a foreign-ABI syscall: {run.results}"
    assert run.exit["signaled"], run.exit
    if probe == "int80_syscall" and run.exit["signal"] == signal.SIGSEGV:
        pytest.skip("this kernel has no i386 emulation (int 0x80 faults before seccomp sees it)")
    assert run.exit["signal"] == signal.SIGSYS, run.exit


# ---------------------------------------------------------------------------------------------
# Each layer on its own
# ---------------------------------------------------------------------------------------------

ALL_DISABLEABLE = frozenset({"netns", "chroot", "uid", "landlock", "seccomp"})


@dataclass(frozen=True)
class LayerAlone:
    id: str
    keep: frozenset[str]  # SANDBOX_DISABLE names left enabled
    requires: tuple[str, ...]  # health layer names that must be active
    denies: dict[str, str]  # probe -> what this layer alone must do about it (documentation)


LAYERS_ALONE = [
    LayerAlone("seccomp", frozenset({"seccomp"}), ("seccomp",), {
        "read_canary": "openat -> EACCES", "write_file": "openat -> EACCES", "mkdir": "mkdir -> EACCES",
        "socket_inet": "socket -> EPERM", "socket_unix": "socket -> EPERM", "connect_listener": "socket -> EPERM",
        "fork": "clone -> EPERM", "kill_parent": "kill only of itself", "kill_sibling": "kill only of itself",
        "kill_everyone": "kill only of itself", "kill_group": "kill only of itself",
        "setpriority_sibling": "setpriority -> EPERM", "setpriority_all_of_uid": "setpriority -> EPERM",
        "sched_setaffinity_sibling": "only pid 0", "sched_setscheduler_sibling": "only pid 0",
        "prlimit_parent": "only pid 0", "chroot_escape": "chroot -> EPERM", "unshare_userns": "unshare -> EPERM",
        "ptrace_parent": "ptrace -> EPERM", "proc_parent_mem": "openat -> EACCES", "memfd_create": "EPERM",
        "sysv_shmget": "EPERM", "sysv_msgget": "EPERM", "posix_mq_open": "EPERM", "io_uring_setup": "EPERM",
        "bpf": "EPERM", "execv": "execve -> EPERM",
    }),
    LayerAlone("landlock", frozenset({"landlock"}), ("landlock",), {
        "read_canary": "no file access", "write_file": "no file access", "mkdir": "no file access",
        "listdir_root": "no directory reads", "proc_parent_mem": "no file access", "execv": "no execute right",
        "connect_listener": "no TCP connect (ABI >= 4)", "kill_parent": "signals scoped (ABI >= 6)",
    }),
    LayerAlone("chroot+uid_drop", frozenset({"chroot", "uid"}), ("chroot", "uid_drop"), {
        "read_canary": "not in the empty root", "write_file": "read-only empty root", "mkdir": "read-only empty root",
        "listdir_root": "the root is empty", "proc_parent_mem": "no /proc", "execv": "no /bin/sh",
        "kill_parent": "nobody may not signal root", "fork": "RLIMIT_NPROC 0 binds nobody",
        "setuid_root": "nobody cannot become root", "uid": "uid/gid 65534, no groups",
        "prlimit_parent": "nobody cannot touch root's limits", "ptrace_parent": "nobody cannot trace root",
    }),
    LayerAlone("network_namespace", frozenset({"netns"}), ("network_namespace",), {
        "connect_listener": "the host's 127.0.0.1 is not in this namespace",
    }),
]
_LANDLOCK_ABI_NEEDS = {"connect_listener": 4, "kill_parent": 6}

_ALONE_CASES = [(alone, probe) for alone in LAYERS_ALONE for probe in alone.denies]


@pytest.fixture(scope="module")
def alone_runs() -> dict[str, Run]:
    return {}


def _alone_run(alone_runs: dict[str, Run], alone: LayerAlone) -> Run:
    if alone.id not in alone_runs:
        probes = {name: PROBES[name] for name in PROBES if name in alone.denies}
        alone_runs[alone.id] = run_probes(probes, ALL_DISABLEABLE - alone.keep)
    return alone_runs[alone.id]


@pytest.mark.parametrize("alone,probe", _ALONE_CASES, ids=[f"{a.id}-{p}" for a, p in _ALONE_CASES])
def test_each_layer_alone_denies(alone_runs, alone: LayerAlone, probe: str):
    root_only = {"chroot", "uid_drop"} & set(alone.requires)
    if root_only and os.geteuid() != 0:
        # Without root these layers cannot be active, and with every other layer disabled the
        # probes would really succeed against this test process: do not run them.
        pytest.skip(f"{', '.join(sorted(root_only))} needs root; not root here")
    run = _alone_run(alone_runs, alone)
    for layer in alone.requires:
        if not run.layers[layer]["active"]:
            pytest.skip(f"{layer} is inactive here: {run.layers[layer]['detail']}")
    others = {"network_namespace", "seccomp", "chroot", "landlock", "uid_drop"} - set(alone.requires)
    assert not any(run.layers[name]["active"] for name in others), run.layers
    if alone.id == "landlock" and probe in _LANDLOCK_ABI_NEEDS:
        abi = int(run.layers["landlock"]["detail"].split("ABI ")[1].split(":")[0])
        if abi < _LANDLOCK_ABI_NEEDS[probe]:
            pytest.skip(f"Landlock ABI {abi} < {_LANDLOCK_ABI_NEEDS[probe]} here")
    out = run.results.get(probe)
    assert out is not None, f"{probe}: no report"
    assert CHECKS[probe](out), f"{alone.id} alone did not stop {probe} ({alone.denies[probe]}): {out}"
    if probe == "connect_listener":
        assert run.pending_connections == 0
    if probe == "kill_parent":
        assert run.parent_signals == 0
    if probe in ("write_file", "mkdir"):
        assert run.leftovers == []


# ---------------------------------------------------------------------------------------------
# The real node's children, seen from outside through /proc
# ---------------------------------------------------------------------------------------------


def _children_of(ppid: int) -> dict[int, str]:
    """pid -> state of every live process whose parent is `ppid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            found[int(entry)] = fields[0]
    return found


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)


async def _a_ready_child(node) -> int:
    for _ in range(200):
        ready = node.pool.ready_children()
        if ready:
            return ready[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no ready child")


async def test_a_ready_child_is_locked_down_before_any_code_arrives(node):
    pid = await _a_ready_child(node)
    await asyncio.sleep(0.1)  # it reports ready before it finishes locking itself down
    status = _status(pid)
    layers = {layer.name: layer.active for layer in node.pool.layers}
    assert status["NoNewPrivs"].strip() == "1"
    assert layers["no_capabilities"]
    for capability_set in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert status[capability_set].strip() == "0000000000000000", (capability_set, status[capability_set])
    if layers["seccomp"]:
        assert status["Seccomp"].strip() == "2"  # filter mode
    if layers["uid_drop"]:
        assert status["Uid"].split() == [str(NOBODY)] * 4
        assert status["Gid"].split() == [str(NOBODY)] * 4
        assert status["Groups"].strip() == ""
    if layers["network_namespace"]:
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
    if layers["chroot"]:
        # a tmpfs attached nowhere reads as "/" through readlink: compare the inodes instead
        root = os.stat(f"/proc/{pid}/root")
        assert (root.st_dev, root.st_ino) != (os.stat("/").st_dev, os.stat("/").st_ino)
        assert os.listdir(f"/proc/{pid}/root") == []
    fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    assert sorted(fds) == [0, 1, 2, 3], fds
    assert [fds[0], fds[1], fds[2]] == ["/dev/null"] * 3, f"stdio must be /dev/null, not the channel: {fds}"
    assert fds[3].startswith("socket:")
    with open(f"/proc/{pid}/limits") as fh:
        limits = {line[:26].strip(): line[26:].split() for line in fh.read().splitlines()[1:]}
    assert limits["Max processes"][:2] == ["0", "0"]
    assert limits["Max file size"][:2] == ["0", "0"]
    assert limits["Max core file size"][:2] == ["0", "0"]
    assert int(limits["Max open files"][1]) <= 16
    assert limits["Max address space"][0] != "unlimited"
    with open(f"/proc/{pid}/environ", "rb") as fh:
        # the initial environment block, inherited from the zygote (os.environ itself is empty)
        names = {item.split(b"=", 1)[0].decode() for item in fh.read().split(b"\0") if item}
    assert names <= ZYGOTE_ENV, f"a child inherited {sorted(names - ZYGOTE_ENV)}"


ZYGOTE_ENV = {"PATH", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "SANDBOX_CONTROL_FD",
              "SANDBOX_MAX_MEMORY_MB", "SANDBOX_MAX_CPU_SECONDS", "SANDBOX_DISABLE", "SANDBOX_PREWARM",
              "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}


def test_the_zygote_never_received_the_node_environment(node):
    with open(f"/proc/{node.pool.zygote_pid}/environ", "rb") as fh:
        names = {item.split(b"=", 1)[0].decode() for item in fh.read().split(b"\0") if item}
    assert names <= ZYGOTE_ENV, f"the zygote inherited {sorted(names - ZYGOTE_ENV)}"


BURST = [
    ("def strategy(d): return 'BUY'", {}),
    ("while True:\n    pass", {"timeout_ms": 300}),
    ("s = 'x' * 10**10", {}),
    ("a = np.ones(50_000_000)", {"memory_mb": 64}),
    ("def f():\n    return f()\nf()", {}),
    ("import os", {}),
    ("print('x' * 10)\nresult = 1", {}),
    ("def strategy(d):\n    while True:\n        pass", {"timeout_ms": 200}),
    ("x = []\nwhile True:\n    x.append(' ' * 10**6)", {}),
    ("raise SystemExit(3)", {}),
]


async def _execute(nc, code: str, **fields) -> dict:
    payload = {"code": code, "bars": columnar_bars(50), "timeout_ms": 5000, **fields}
    msg = await nc.request(subjects.EXECUTE, json.dumps(payload).encode(), timeout=20)
    return json.loads(msg.data)


async def test_no_child_outlives_its_request_after_a_burst(nc, node):
    jobs = [BURST[i % len(BURST)] for i in range(20)]
    replies = await asyncio.gather(*(_execute(nc, code, **fields) for code, fields in jobs))
    codes = sorted({(r["error"] or {}).get("code", "OK") for r in replies})
    assert {"OK", "TIMEOUT", "MEMORY_LIMIT", "SECURITY_VIOLATION", "RUNTIME_ERROR"} <= set(codes), codes
    zygote = node.pool.zygote_pid
    deadline = time.monotonic() + 5.0
    while True:  # children the node killed are reaped by the zygote a moment later
        live = _children_of(zygote)
        ready = set(node.pool.ready_children())
        settled = (set(live) == ready and not node.pool.busy_children()
                   and all(state != "Z" for state in live.values()))
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert node.pool.busy_children() == []
    assert set(live) == ready, f"children of the zygote {live} != ready children {sorted(ready)}"


async def test_a_timed_out_child_is_gone_when_the_timeout_reply_arrives(nc, node):
    await asyncio.sleep(0.2)
    before = set(node.pool.busy_children())
    assert before == set()
    task = asyncio.ensure_future(_execute(nc, "while True:\n    pass", timeout_ms=400))
    pid = None
    for _ in range(300):
        busy = node.pool.busy_children()
        if busy:
            pid = busy[0]
            break
        await asyncio.sleep(0.005)
    assert pid is not None, "never saw the run's child"
    assert os.path.exists(f"/proc/{pid}")
    reply = await task
    assert reply["error"]["code"] == "TIMEOUT", reply["error"]
    assert not os.path.exists(f"/proc/{pid}"), "the timed-out child still exists after the TIMEOUT reply"
    assert pid not in _children_of(node.pool.zygote_pid)
