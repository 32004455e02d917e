"""Whether the pool's new children run the prewarm job (sandbox/pool.py `prewarm_now`, the
zygote's `S` message): only while the runs in flight leave a core idle."""

from __future__ import annotations

import asyncio
import struct

import pytest_asyncio

from sandbox import SandboxPool
from sandbox import pool as pool_module
from tests.sandbox.test_warm import job


@pytest_asyncio.fixture
async def pool():
    running = SandboxPool(ready_target=1)
    await running.start()
    yield running
    await running.close()


def _faults(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[7])  # minflt


async def _ready_child_faults(pool: SandboxPool, prewarm: bool) -> int:
    """Ask the zygote for one child with or without the prewarm; its page faults once idle."""
    for _ in range(500):  # the pool's own children first (they arrive after start)
        if pool._requested == 0:
            break
        await asyncio.sleep(0.01)
    before = set(pool.ready_children())
    pool._control.send(b"S" + struct.pack("<IB", 1, prewarm))
    pool._requested += 1
    for _ in range(500):
        new = set(pool.ready_children()) - before
        if new:
            break
        await asyncio.sleep(0.01)
    (pid,) = new
    await asyncio.sleep(1.0)  # lockdown and, if asked for, the prewarm run are over by now
    return _faults(pid)


async def test_a_child_forked_without_the_prewarm_has_not_run_it(pool):
    plain = await _ready_child_faults(pool, prewarm=False)
    prewarmed = await _ready_child_faults(pool, prewarm=True)
    # the prewarm run copies ~1,500 of the zygote's pages; lockdown alone ~550
    assert prewarmed > plain + 500, (plain, prewarmed)


async def test_children_are_prewarmed_while_a_core_is_idle_and_not_once_all_are_busy(pool, monkeypatch):
    monkeypatch.setattr(pool_module, "_CORES", 2)
    assert pool.prewarm_now()
    pool._busy.update({1})
    assert pool.prewarm_now()
    pool._busy.update({2})
    assert not pool.prewarm_now()
    pool._busy.clear()


async def test_a_pool_with_the_prewarm_off_never_asks_for_it(monkeypatch):
    monkeypatch.setattr(pool_module, "_CORES", 2)
    cold = SandboxPool(ready_target=1, prewarm=False)
    assert not cold.prewarm_now()


async def test_a_child_forked_without_the_prewarm_gives_the_same_outcome(pool):
    pool._busy.update(range(-pool_module._CORES, 0))  # every core busy: the replacement skips the prewarm
    try:
        first = await pool.run(job())
        second = await pool.run(job())
    finally:
        pool._busy.difference_update(range(-pool_module._CORES, 0))
    assert first.success and (first.signals, first.performance) == (second.signals, second.performance)
