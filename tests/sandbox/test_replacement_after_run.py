"""A fresh run's replacement child is forked after the run, not while it runs (issue 18).

Forking the replacement when the ready child is taken makes the zygote compete with the run for
the CPU. The pool asks the zygote for the replacement once the run is over; a run that finds no
ready child still asks for one at once (it waits for it).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest_asyncio

from contracts import BarArrays
from sandbox import Job, OutputLimits, SandboxPool, WarmPolicy, compile_strategy

# Busy for a while (no sleep inside the sandbox): long enough for a replacement to be forked
# several times over had it been asked for when the run began.
SLOW = "def strategy(data):\n    n = 0\n    for i in range(60000000):\n        n = n + 1\n    return 'HOLD'\n"
TRIVIAL = "def strategy(data):\n    return 'BUY'\n"


def _job(source: str) -> Job:
    n = 50
    ts = (np.arange(n, dtype=np.int64) + 19_000) * 86_400_000_000_000
    close = 100 + np.cumsum(np.sin(np.arange(n) / 7.0))
    bars = BarArrays.from_numpy(ts, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(n))
    return Job(kind="execute", code=compile_strategy(source).to_bytes(), bars=bars, symbol="T",
               timeframe="1d", parameters={}, timeout_ms=20_000, memory_mb=128, limits=OutputLimits())


async def _until(predicate, within: float = 20.0) -> bool:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def _running(pool: SandboxPool) -> bool:
    return await _until(lambda: bool(pool.busy_children()))


@pytest_asyncio.fixture
async def pool():
    running = SandboxPool(ready_target=1, prewarm=False)
    await running.start()
    assert await _until(lambda: pool_ready(running) == 1)
    yield running
    await running.close()


def pool_ready(pool: SandboxPool) -> int:
    return pool.state().ready


async def test_no_replacement_is_forked_while_a_fresh_run_is_going(pool):
    forked = pool.state().started
    run = asyncio.ensure_future(pool.run(_job(SLOW)))
    assert await _running(pool)
    await asyncio.sleep(0.5)  # a replacement asked for now would have been forked by then
    assert not run.done(), "the slow strategy must still be running for this test to mean anything"
    assert pool.state().started == forked
    assert pool.state().ready == 0
    outcome = await run
    assert outcome.success


async def test_the_replacement_is_forked_once_the_run_is_over(pool):
    forked = pool.state().started
    outcome = await pool.run(_job(TRIVIAL))
    assert outcome.success
    assert await _until(lambda: pool.state().started == forked + 1 and pool.state().ready == 1)


async def test_a_run_that_finds_no_ready_child_still_gets_one(pool):
    first = asyncio.ensure_future(pool.run(_job(SLOW)))
    assert await _running(pool)
    second = await asyncio.wait_for(pool.run(_job(TRIVIAL)), 30)  # none ready: forked on demand
    assert second.success
    assert not first.done() or (await first).success
    assert (await first).success
    assert await _until(lambda: pool.state().ready == 1)


async def test_a_failed_run_still_replaces_its_child(pool):
    forked = pool.state().started
    outcome = await pool.run(_job("def strategy(data):\n    raise ValueError('no')\n"))
    assert not outcome.success
    assert await _until(lambda: pool.state().started == forked + 1 and pool.state().ready == 1)


async def test_a_warm_pools_fresh_fallback_replaces_after_the_run():
    """A tenant whose warm worker stays busy runs in a fresh child (sandbox/warm.py): the same rule."""
    running = SandboxPool(ready_target=1, prewarm=False, warm=WarmPolicy(runs=4, per_tenant=1, total=1))
    await running.start()
    try:
        assert await _until(lambda: running.state().ready == 1)
        in_worker = asyncio.ensure_future(running.run(_job(SLOW), tenant="a"))
        assert await _until(lambda: bool(running.warm_children().get("a")) and running.state().ready == 1)
        forked = running.state().started
        fresh = asyncio.ensure_future(running.run(_job(SLOW), tenant="a"))  # its worker is busy
        assert await _until(lambda: len(running.busy_children()) == 2)
        await asyncio.sleep(0.5)
        assert not fresh.done()
        assert running.state().started == forked
        assert (await fresh).success and (await in_worker).success
        assert await _until(lambda: running.state().started == forked + 1 and running.state().ready == 1)
    finally:
        await running.close()
