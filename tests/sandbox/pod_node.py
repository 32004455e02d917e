"""Start a real node process the way deploy/k8s starts it, for tests that talk to it over NATS.

`start_pod_node` begins as root, takes the pod's securityContext (uid/gid 10001, no
capabilities, NO_NEW_PRIVS, the Localhost seccomp profile; tests/sandbox/manifest_conditions.py)
and then execs `python -m node run`, as the container's entrypoint would.
`start_root_node` runs the same command as this (root) test process.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from contracts import subjects
from tests.sandbox import manifest_conditions
from tests.support import request_json

ROOT = manifest_conditions.ROOT
_LAUNCH = (
    "import json, os, sys\n"
    "cfg = json.loads(sys.argv[1])\n"
    "sys.path.insert(0, cfg['root'])\n"
    "from tests.sandbox import manifest_conditions\n"
    "manifest_conditions.enter(profile=cfg['profile'])\n"
    "os.execve(cfg['exe'], [cfg['exe'], '-m', 'node', 'run'], cfg['env'])\n"
)
THREAD_VARS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "NUMEXPR_NUM_THREADS": "1"}
# What a pod's environment holds besides the node's settings: none of it may reach the sandbox.
CREDENTIALS = {
    "NATS_USER": "strategy-node", "NATS_PASSWORD": "pw-" + os.urandom(8).hex(),
    "BROKER_API_TOKEN": "tok-" + os.urandom(8).hex(),
    "DB_PASSWORD": "db-" + os.urandom(8).hex(), "SIGNING_KEY": "key-" + os.urandom(8).hex(),
    "AWS_SECRET_ACCESS_KEY": "aws-" + os.urandom(8).hex(),
}


def _settings(nats_url: str, node_id: str, extra: dict[str, str] | None) -> dict[str, str]:
    env = {"NATS_URL": nats_url, "NODE_ID": node_id, "MAX_WORKERS": "2", "MAX_TIMEOUT_SECONDS": "10",
           "HEARTBEAT_FILE": f"/tmp/{node_id}-{os.getpid()}.heartbeat", **THREAD_VARS}
    env.update(extra or {})
    return env


def start_pod_node(nats_url: str, node_id: str, log: Path, extra: dict[str, str] | None = None,
                   profile: Path = manifest_conditions.NODE_PROFILE) -> subprocess.Popen:
    found = manifest_conditions.interpreter()
    assert found is not None, "no Python interpreter uid 10001 can run"
    exe, base = found
    env = {**base, **_settings(nats_url, node_id, extra), "HOME": "/tmp", "TMPDIR": "/tmp"}
    cfg = {"root": str(ROOT), "profile": str(profile), "exe": exe, "env": env}
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-c", _LAUNCH, json.dumps(cfg)], env=base, cwd="/",
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    proc.heartbeat = env["HEARTBEAT_FILE"]
    return proc


def start_root_node(nats_url: str, node_id: str, log: Path, extra: dict[str, str] | None = None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_")}
    env.update(_settings(nats_url, node_id, extra))
    env["PYTHONPATH"] = str(ROOT)
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "node", "run"], env=env, cwd=str(ROOT),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    proc.heartbeat = env["HEARTBEAT_FILE"]
    return proc


async def wait_healthy(nc, node_id: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the node exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try:
            return await request_json(nc, f"{subjects.HEALTH}.{node_id}", {}, timeout=1.0)
        except Exception:  # noqa: BLE001 - not up yet
            await asyncio.sleep(0.2)
    raise AssertionError(f"the node did not become healthy: {log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    heartbeat = getattr(proc, "heartbeat", None)
    if heartbeat:  # the node's heartbeat file and anything it keeps beside it
        for path in glob.glob(glob.escape(heartbeat) + "*"):
            try:
                os.unlink(path)
            except OSError:
                pass


def children_of(ppid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            found.append(int(entry))
    return found


def zygote_of(node_pid: int) -> int:
    for pid in children_of(node_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"sandbox.zygote" in fh.read():
                    return pid
        except OSError:
            continue
    raise AssertionError(f"node {node_pid} has no zygote")


def status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as fh:
        return dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)
