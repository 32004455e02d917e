"""The child's serve loop (sandbox/serve.py): what every run starts from."""

from __future__ import annotations

import pytest_asyncio

from sandbox import SandboxPool, WarmPolicy
from tests.sandbox.test_warm import job

DRAW = "import numpy as np\ndef strategy(data):\n    return {'signal': 'HOLD', 'x': float(np.random.rand())}\n"


@pytest_asyncio.fixture(scope="module")
async def pool():
    running = SandboxPool(ready_target=2, warm=WarmPolicy(runs=10))
    await running.start()
    yield running
    await running.close()


async def test_fresh_children_do_not_repeat_the_zygotes_random_numbers(pool):
    draws = [(await pool.run(job(DRAW))).result["x"] for _ in range(4)]
    assert len(set(draws)) == 4


async def test_each_run_of_a_warm_worker_gets_new_random_numbers(pool):
    draws = [(await pool.run(job(DRAW), tenant="rng")).result["x"] for _ in range(4)]
    assert len(set(draws)) == 4
    assert len(pool.warm_children()["rng"]) == 1


async def test_children_without_the_prewarm_job_give_the_same_outcome(pool):
    cold = SandboxPool(ready_target=1, prewarm=False)
    await cold.start()
    try:
        plain = await cold.run(job())
    finally:
        await cold.close()
    warm = await pool.run(job())
    assert plain.success and (plain.signals, plain.performance) == (warm.signals, warm.performance)
