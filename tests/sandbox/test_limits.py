"""Resource limits through NATS: the wall-clock deadline, the memory limit, output limits, the
request limits, and the isolation layers the node reports in Health."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

from contracts import subjects
from tests.support import columnar_bars, request_json

NODE_SLACK_MS = 100
ROOT_ONLY_LAYERS = ("network_namespace", "seccomp", "chroot", "landlock", "uid_drop")
EVERY_LAYER = ("fresh_process", "network_namespace", "seccomp", "chroot", "landlock", "uid_drop", "no_capabilities",
               "no_new_privs", "rlimits", "empty_environment", "closed_fds", "restricted_python")


async def execute(nc, code: str, **fields: Any) -> tuple[dict, float]:
    payload = {"code": code, "bars": columnar_bars(50), **fields}
    started = time.perf_counter()
    msg = await nc.request(subjects.EXECUTE, json.dumps(payload).encode(), timeout=30)
    return json.loads(msg.data), (time.perf_counter() - started) * 1000.0


async def assert_serving(nc) -> None:
    reply, _ = await execute(nc, "def strategy(d): return 'SELL'")
    assert reply["success"] is True and [s["type"] for s in reply["signals"]] == ["SELL"]


# ---------------------------------------------------------------------------------------------
# Wall-clock deadline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout_ms", [200, 300, 1000])
@pytest.mark.parametrize("code", [
    "while True:\n    pass",
    "def strategy(d):\n    x = 0\n    while True:\n        x += 1",
    "import numpy as np\nwhile True:\n    np.sort(np.random.default_rng(1).random(100_000))",
], ids=["script-loop", "function-loop", "numpy-loop"])
async def test_timeout_is_enforced_within_the_deadline_plus_100ms(nc, node, timeout_ms, code):
    reply, elapsed_ms = await execute(nc, code, timeout_ms=timeout_ms)
    assert reply["success"] is False
    assert reply["error"]["code"] == "TIMEOUT", reply["error"]
    node_ms = reply["execution_time_ms"]
    print(f"\ntimeout_ms={timeout_ms}: node {node_ms:.1f} ms, client {elapsed_ms:.1f} ms ({reply['error']['message']})")
    # the wall deadline (SIGKILL) or, a little earlier, the CPU rlimit (whole seconds of CPU, which
    # include the child's own setup) ends the run: TIMEOUT either way, never later than this
    assert node_ms <= timeout_ms + NODE_SLACK_MS, node_ms
    assert node_ms >= timeout_ms * 0.8, node_ms
    assert node.pool.busy_children() == []
    await assert_serving(nc)


async def test_a_strategy_that_finishes_in_time_is_not_cut(nc):
    reply, _ = await execute(nc, "import numpy as np\nx = 0\nfor i in range(200_000):\n    x += i\nresult = x",
                             timeout_ms=5000)
    assert reply["success"] is True, reply["error"]
    assert reply["result"] == sum(range(200_000))


# ---------------------------------------------------------------------------------------------
# Memory
# ---------------------------------------------------------------------------------------------

ALLOCATE_200MB = [
    ("numpy-ones", "import numpy as np\na = np.ones(25_000_000)\nresult = float(a[-1])"),
    ("numpy-zeros-touched", "import numpy as np\na = np.zeros(25_000_000)\na[::512] = 1.0\nresult = float(a.sum())"),
    ("bytes", "b = bytes(200 * 1024 * 1024)\nresult = len(b)"),
    ("list-of-strings", "x = [' ' * (1024 * 1024) for _ in range(200)]\nresult = len(x)"),
    ("dataframe", "import numpy as np\nf = pd.DataFrame(np.ones((2_500_000, 10)))\nresult = f.shape[0]"),
]


@pytest.mark.parametrize("code", [c for _, c in ALLOCATE_200MB], ids=[i for i, _ in ALLOCATE_200MB])
async def test_200mb_allocation_with_memory_mb_64_is_a_memory_limit(nc, node, code):
    reply, _ = await execute(nc, code, memory_mb=64, timeout_ms=10_000)
    assert reply["success"] is False
    assert reply["error"]["code"] == "MEMORY_LIMIT", reply["error"]
    assert node.pool.busy_children() == []
    await assert_serving(nc)


async def test_the_same_allocation_fits_a_larger_limit(nc):
    reply, _ = await execute(nc, ALLOCATE_200MB[0][1], memory_mb=400, timeout_ms=10_000)
    assert reply["success"] is True, reply["error"]
    assert reply["result"] == 1.0


async def test_memory_limit_message_names_the_limit(nc):
    reply, _ = await execute(nc, "s = 'x' * (300 * 1024 * 1024)", memory_mb=64)
    assert reply["error"]["code"] == "MEMORY_LIMIT"
    assert "64" in reply["error"]["message"]


# ---------------------------------------------------------------------------------------------
# Output limits (the defaults every execute runs with)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code,ok", [
    ("for i in range(1000):\n    log(i)", True),
    ("for i in range(1001):\n    log(i)", False),
    ("for i in range(64):\n    indicator('i' + str(i), df['close'])", True),
    ("for i in range(65):\n    indicator('i' + str(i), df['close'])", False),
    ("log('x' * 200_000)", True),
    ("log('x' * 300_000)", False),
    ("result = 'x' * 500_000", True),
    ("result = 'x' * 1_100_000", False),
], ids=["1000-log-lines", "1001-log-lines", "64-indicators", "65-indicators", "200kB-log", "300kB-log",
        "500kB-result", "1.1MB-result"])
async def test_output_limits(nc, code, ok):
    reply, _ = await execute(nc, code)
    if ok:
        assert reply["success"] is True, reply["error"]
    else:
        assert reply["success"] is False
        assert reply["error"]["code"] == "OUTPUT_LIMIT", reply["error"]


# ---------------------------------------------------------------------------------------------
# Request limits
# ---------------------------------------------------------------------------------------------


async def test_request_limits_are_checked_before_anything_runs(nc, node):
    health = await request_json(nc, subjects.HEALTH, {})
    max_ms = int(health["limits"]["max_timeout_seconds"] * 1000)
    max_mb = health["limits"]["max_memory_mb"]
    for fields in ({"timeout_ms": max_ms + 1}, {"memory_mb": max_mb + 1}, {"memory_mb": 8}, {"timeout_ms": 0}):
        reply, _ = await execute(nc, "def strategy(d): return 'BUY'", **fields)
        assert reply["success"] is False, fields
        assert reply["error"]["code"] == "INVALID_REQUEST", (fields, reply["error"])
    reply, _ = await execute(nc, "def strategy(d): return 'BUY'", timeout_ms=max_ms, memory_mb=max_mb)
    assert reply["success"] is True, reply["error"]


# ---------------------------------------------------------------------------------------------
# Isolation layers in Health
# ---------------------------------------------------------------------------------------------


async def test_health_lists_every_isolation_layer_with_its_active_flag(nc):
    health = await request_json(nc, subjects.HEALTH, {})
    layers = {layer["name"]: layer for layer in health["isolation"]}
    print("\nisolation layers reported by strategy.v1.health:")
    for name, layer in layers.items():
        print(f"  {name:18} {'active  ' if layer['active'] else 'INACTIVE'}  {layer['detail']}")
    assert set(EVERY_LAYER) <= set(layers), set(EVERY_LAYER) - set(layers)
    for layer in layers.values():
        assert isinstance(layer["active"], bool) and layer["detail"], layer
    for name in ("fresh_process", "no_capabilities", "no_new_privs", "rlimits", "empty_environment", "closed_fds",
                 "restricted_python"):
        assert layers[name]["active"], layers[name]


@pytest.mark.parametrize("name", ROOT_ONLY_LAYERS)
async def test_privileged_layers_are_active_when_running_as_root(nc, name):
    if os.geteuid() != 0:
        pytest.skip(f"not root here: {name} may be inactive")
    health = await request_json(nc, subjects.HEALTH, {})
    layer = next(layer for layer in health["isolation"] if layer["name"] == name)
    if name == "landlock" and "without Landlock" in layer["detail"]:
        pytest.skip(f"this kernel has no Landlock: {layer['detail']}")
    assert layer["active"], layer
