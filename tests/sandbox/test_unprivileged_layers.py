"""A node started the way deploy/k8s starts it has every layer a root node has.

The pod's securityContext is uid/gid 10001, every capability dropped, no privilege escalation
and the Localhost seccomp profile deploy/k8s/seccomp/strategy-node.json. A real node process is
started under exactly that (tests/sandbox/pod_node.py) on its own nats-server, and is looked at
through NATS (Health) and from outside through /proc: its zygote and its children. The same
questions are asked of a node started as root.

Skipped, with the reason, only where this machine cannot create an unprivileged user namespace
at all (or the test process is not root and so cannot take the pod's uid).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import nats
import pytest
import pytest_asyncio

from contracts import subjects
from node.embedded import EmbeddedServer
from tests.sandbox import manifest_conditions, pod_node
from tests.support import columnar_bars, request_json

ZYGOTE_ENV = {"PATH", "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "SANDBOX_CONTROL_FD",
              "SANDBOX_MAX_MEMORY_MB", "SANDBOX_MAX_CPU_SECONDS", "SANDBOX_DISABLE", "SANDBOX_PREWARM",
              "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"}
NAMESPACE_LAYERS = ("network_namespace", "chroot", "uid_drop", "no_capabilities")
EMPTY_CAPS = "0000000000000000"


def _skip_unless_possible() -> None:
    if os.geteuid() != 0:
        pytest.skip("taking the pod's uid needs a root test process")
    if manifest_conditions.libseccomp() is None:
        pytest.skip("libseccomp is not installed: cannot compile the pod's seccomp profile")
    possible, why = manifest_conditions.userns_possible()
    if not possible:
        pytest.skip(why)


@pytest.fixture(scope="module")
def server():
    with EmbeddedServer(jetstream=False) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def pod(server, tmp_path_factory):
    """A node as the manifests run it, with credentials in its environment as a pod has them."""
    _skip_unless_possible()
    log = tmp_path_factory.mktemp("pod") / "node.log"
    proc = pod_node.start_pod_node(server.url, "pod-node", log, extra=pod_node.CREDENTIALS)
    nc = await nats.connect(server.url)
    try:
        health = await pod_node.wait_healthy(nc, "pod-node", proc, log)
        yield {"proc": proc, "health": health, "nc": nc, "log": log}
    finally:
        await nc.close()
        pod_node.stop(proc)


def _layers(health: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in health["isolation"]}


async def test_health_of_a_node_run_as_the_manifests_run_it_lists_the_same_layers_as_root(pod, nc):
    root = _layers(await request_json(nc, subjects.HEALTH, {}))
    ours = _layers(pod["health"])
    print("\nisolation layers of a node run as uid 10001, no capabilities, Localhost profile:")
    for name, layer in ours.items():
        print(f"  {name:18} {'active  ' if layer['active'] else 'INACTIVE'}  {layer['detail']}")
    assert sorted(n for n, l in ours.items() if l["active"]) == sorted(n for n, l in root.items() if l["active"])
    for name in NAMESPACE_LAYERS:
        assert ours[name]["active"], ours[name]


async def test_a_ready_child_of_that_node_has_its_own_namespaces_an_empty_root_and_no_capabilities(pod):
    node_pid = pod["proc"].pid
    assert pod_node.status(node_pid)["Uid"].split()[0] == str(manifest_conditions.POD_UID)
    zygote = pod_node.zygote_of(node_pid)
    deadline = time.monotonic() + 10
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        children = pod_node.children_of(zygote)
        await asyncio.sleep(0.05)
    assert children, "the zygote has no ready child"
    await asyncio.sleep(0.2)  # a child reports ready before it has finished locking down
    child = children[0]
    st = pod_node.status(child)
    for capability_set in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert st[capability_set].strip() == EMPTY_CAPS, (capability_set, st[capability_set])
    assert st["NoNewPrivs"].strip() == "1" and st["Seccomp"].strip() == "2"
    for ns in ("user", "net", "ipc", "uts", "mnt"):
        assert os.readlink(f"/proc/{child}/ns/{ns}") != os.readlink(f"/proc/{node_pid}/ns/{ns}"), ns
    root = os.stat(f"/proc/{child}/root")
    assert (root.st_dev, root.st_ino) != (os.stat("/").st_dev, os.stat("/").st_ino)
    assert os.listdir(f"/proc/{child}/root") == []
    with open(f"/proc/{child}/uid_map") as fh:  # only the sandbox id exists in its namespace
        assert fh.read().split() == ["65534", str(manifest_conditions.POD_UID), "1"]


async def test_the_zygote_starts_without_the_pods_credentials(pod):
    zygote = pod_node.zygote_of(pod["proc"].pid)
    with open(f"/proc/{zygote}/environ", "rb") as fh:
        raw = fh.read()
    names = {item.split(b"=", 1)[0].decode() for item in raw.split(b"\0") if item}
    assert names <= ZYGOTE_ENV, f"the zygote inherited {sorted(names - ZYGOTE_ENV)}"
    for value in pod_node.CREDENTIALS.values():
        assert value.encode() not in raw


async def test_the_zygote_is_locked_into_the_empty_root_without_capabilities(pod):
    zygote = pod_node.zygote_of(pod["proc"].pid)
    st = pod_node.status(zygote)
    for capability_set in ("CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"):
        assert st[capability_set].strip() == EMPTY_CAPS, (capability_set, st[capability_set])
    assert os.listdir(f"/proc/{zygote}/root") == []  # no /etc/nats, no /tmp, no virtualenv
    for fd in os.listdir(f"/proc/{zygote}/fd"):
        target = os.readlink(f"/proc/{zygote}/fd/{fd}")
        # sockets, pipes, epoll and /dev/null only: no descriptor of a directory or file of the node
        assert target.split(":", 1)[0] in ("socket", "pipe", "anon_inode") or target == "/dev/null" \
            or fd in ("1", "2"), (fd, target)


async def test_a_run_on_that_node_answers_with_named_time_zones(pod, server):
    code = "result = str(pd.Timestamp('2024-07-01 09:30', tz='America/New_York').tz_convert('UTC'))\n"
    nc = await nats.connect(server.url)
    try:
        reply = await request_json(nc, f"{subjects.EXECUTE}", {"code": code, "bars": _bars()})
    finally:
        await nc.close()
    assert reply["success"], reply["error"]
    assert reply["result"] == "2024-07-01 13:30:00+00:00"


# -- a node killed with -9 leaves no sandbox directory --------------------------------------


def _sandbox_dirs(where: str) -> set[str]:
    return {name for name in os.listdir(where) if name.startswith("sandbox-root-")}


@pytest.mark.parametrize("as_pod", [False, True], ids=["root", "pod"])
async def test_a_node_killed_with_sigkill_leaves_no_sandbox_directory_and_the_next_starts_clean(
        server, tmp_path, as_pod):
    if as_pod:
        _skip_unless_possible()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    os.chmod(tmpdir, 0o1777)
    before = _sandbox_dirs("/tmp")
    start = pod_node.start_pod_node if as_pod else pod_node.start_root_node
    nc = await nats.connect(server.url)
    procs = []
    try:
        for round_ in range(2):
            node_id = f"killed-{'pod' if as_pod else 'root'}-{round_}"
            proc = start(server.url, node_id, tmp_path / f"{node_id}.log", extra={"TMPDIR": str(tmpdir)})
            procs.append(proc)
            await pod_node.wait_healthy(nc, node_id, proc, tmp_path / f"{node_id}.log")
            assert _sandbox_dirs(str(tmpdir)) == set() and _sandbox_dirs("/tmp") <= before
            if round_ == 0:  # the pod dies at once: node, zygote and children all get SIGKILL
                zygote = pod_node.zygote_of(proc.pid)
                victims = [proc.pid, zygote] + pod_node.children_of(zygote)
                for pid in victims:
                    os.kill(pid, signal.SIGKILL)
                proc.wait(10)
        assert _sandbox_dirs(str(tmpdir)) == set()
        assert _sandbox_dirs("/tmp") <= before, _sandbox_dirs("/tmp") - before
        assert os.listdir(tmpdir) == [], os.listdir(tmpdir)
    finally:
        await nc.close()
        for proc in procs:
            pod_node.stop(proc)


def _bars() -> dict:
    return columnar_bars(30)
