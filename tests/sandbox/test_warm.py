"""Opt-in warm workers (sandbox/warm.py) on a real zygote: reuse within a tenant, never across
tenants, and every way a worker retires."""

from __future__ import annotations

import asyncio
import os
import time

import msgspec
import numpy as np
import pytest_asyncio

from contracts import BarArrays, ErrorCode
from sandbox import Job, OutputLimits, SandboxPool, WarmPolicy, compile_strategy

TRIVIAL = "def strategy(data):\n    return 'BUY'\n"
FAIL = "def strategy(data):\n    raise ValueError('no')\n"
SPIN = "def strategy(data):\n    while True:\n        pass\n"
BURN = "def strategy(data):\n    n = 0\n    for i in range({n}):\n        n = n + 1\n    return 'HOLD'\n"
POISON = "import numpy as np\ndef strategy(data):\n    np.seterr(all='raise')\n    return 'HOLD'\n"
# A generator left suspended in a reference cycle: its `finally` runs when the worker's scrub
# collects it, after the run has returned ({burn}: the finally's own work).
LINGER = """
def strategy(data):
    def held():
        try:
            yield 1
        finally:
{burn}
    g = held()
    next(g)
    loop = [g]
    loop.append(loop)
    return 'HOLD'
"""
SLOW_FINALLY = LINGER.format(burn="            n = 0\n            for i in range(20000000):\n                n = n + 1")
ENDLESS_FINALLY = LINGER.format(burn="            while True:\n                pass")


def _bars(n: int = 100) -> BarArrays:
    ts = (np.arange(n, dtype=np.int64) + 19_000) * 86_400_000_000_000
    close = 100 + np.cumsum(np.sin(np.arange(n) / 7.0))
    return BarArrays.from_numpy(ts, open=close, high=close + 1, low=close - 1, close=close, volume=np.ones(n))


def job(source: str = TRIVIAL, timeout_ms: int = 5_000) -> Job:
    return Job(kind="execute", code=compile_strategy(source).to_bytes(), bars=_bars(), symbol="T",
               timeframe="1d", parameters={}, timeout_ms=timeout_ms, memory_mb=128, limits=OutputLimits())


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.02)
    return False


def running(pid: int) -> bool:
    """The process exists and has not exited (an exited one stays a zombie until reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


async def started(_pool: dict | None = None, **policy) -> SandboxPool:
    pool = SandboxPool(ready_target=2, warm=WarmPolicy(**policy), **(_pool or {}))
    await pool.start()
    return pool


@pytest_asyncio.fixture(scope="module")
async def pool():
    running = await started(runs=4, per_tenant=1, total=3, idle_seconds=60)
    yield running
    await running.close()


async def worker_of(pool: SandboxPool, tenant: str, source: str = TRIVIAL, **kw) -> tuple[int | None, object]:
    outcome = await pool.run(job(source, **kw), tenant=tenant)
    pids = pool.warm_children().get(tenant, [])
    return (pids[0] if pids else None), outcome


async def test_runs_of_one_tenant_share_one_worker_process(pool):
    first, outcome = await worker_of(pool, "share")
    forked = pool.started
    second, _ = await worker_of(pool, "share")
    third, _ = await worker_of(pool, "share")
    assert outcome.success and first is not None
    assert first == second == third
    assert pool.started - forked <= 1  # at most the refill of the child taken before; none per run


async def test_tenants_never_share_a_worker(pool):
    seen: dict[str, set[int]] = {"a": set(), "b": set()}

    async def one(tenant: str) -> None:
        outcome = await pool.run(job(), tenant=tenant)
        assert outcome.success
        for t, pids in pool.warm_children().items():
            if t in seen:
                seen[t].update(pids)

    await asyncio.gather(*(one("ab"[i % 2]) for i in range(24)))
    assert seen["a"] and seen["b"]
    assert seen["a"].isdisjoint(seen["b"])


async def test_a_worker_retires_after_its_run_budget(pool):
    pids = [(await worker_of(pool, "budget"))[0] for _ in range(4)]
    assert len(set(pids[:3])) == 1
    assert pids[3] is None  # the 4th run was the last: the worker exited after replying
    assert gone(pids[0])
    again, outcome = await worker_of(pool, "budget")
    assert outcome.success and again not in (None, pids[0])


async def test_a_strategy_error_keeps_the_worker(pool):
    before, _ = await worker_of(pool, "errors")
    after, outcome = await worker_of(pool, "errors", FAIL)
    assert outcome.error.code == ErrorCode.RUNTIME_ERROR
    assert after == before


async def test_a_timeout_kills_the_worker_and_the_next_run_gets_a_fresh_one(pool):
    before, _ = await worker_of(pool, "slow")
    _, outcome = await worker_of(pool, "slow", SPIN, timeout_ms=300)
    assert outcome.error.code == ErrorCode.TIMEOUT
    assert gone(before)
    after, outcome = await worker_of(pool, "slow")
    assert outcome.success and after not in (None, before)


async def test_a_security_violation_retires_the_worker(pool):
    before, _ = await worker_of(pool, "poison")
    _, outcome = await worker_of(pool, "poison", POISON)
    assert outcome.error.code == ErrorCode.SECURITY_VIOLATION
    assert gone(before)
    after, outcome = await worker_of(pool, "poison")
    assert outcome.success and after != before


async def test_the_outcome_comes_back_before_the_worker_scrubs_what_the_run_left(pool):
    before, _ = await worker_of(pool, "linger")
    outcome = await pool.run(job(SLOW_FINALLY, timeout_ms=20_000), tenant="linger")
    assert outcome.success
    assert before in pool.busy_children()  # still finalizing the run's generator: no run for it
    deadline = time.monotonic() + 60
    while before in pool.busy_children() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    after, outcome = await worker_of(pool, "linger")
    assert outcome.success and after == before  # its report said clean: it serves again


async def test_a_scrub_that_outlasts_the_runs_deadline_retires_the_worker(pool):
    before, _ = await worker_of(pool, "endless")
    started_at = time.monotonic()
    outcome = await pool.run(job(ENDLESS_FINALLY, timeout_ms=500), tenant="endless")
    assert outcome.success and time.monotonic() - started_at < 0.5
    assert gone(before)
    after, outcome = await worker_of(pool, "endless")
    assert outcome.success and after not in (None, before)


async def test_a_run_waits_for_its_tenants_scrubbing_worker_rather_than_start_another():
    pool = await started(runs=100, per_tenant=2, total=4, idle_seconds=60)
    try:
        pids = {(await worker_of(pool, "one"))[0] for _ in range(5)}
        assert len(pids) == 1 and len(pool.warm_children()["one"]) == 1
    finally:
        await pool.close()


async def test_runs_without_a_tenant_never_use_a_warm_worker(pool):
    before = pool.warm_children()
    for _ in range(3):
        assert (await pool.run(job())).success
    assert pool.warm_children() == before


async def test_a_tenant_at_its_worker_limit_queues_for_its_own_worker(pool):
    outcomes = await asyncio.gather(*(pool.run(job(), tenant="queue") for _ in range(6)))
    assert all(o.success for o in outcomes)
    assert len(pool.warm_children()["queue"]) <= 1


async def test_a_new_tenant_evicts_the_least_recently_used_idle_worker():
    pool = await started(runs=100, per_tenant=1, total=2, idle_seconds=60)
    try:
        old, _ = await worker_of(pool, "old")
        recent, _ = await worker_of(pool, "recent")
        new, outcome = await worker_of(pool, "new")
        assert outcome.success and new is not None
        assert set(pool.warm_children()) == {"recent", "new"}
        assert gone(old) and running(recent)
    finally:
        await pool.close()


async def test_an_idle_worker_retires():
    pool = await started(runs=100, per_tenant=1, total=2, idle_seconds=0.3)
    try:
        pid, _ = await worker_of(pool, "idle")
        assert pid is not None
        await asyncio.sleep(1.0)
        assert pool.warm_children() == {}
        assert gone(pid)
    finally:
        await pool.close()


async def test_a_worker_whose_next_run_might_outlast_its_cpu_life_is_replaced():
    # Hard CPU limit of the worker's life: 4 + 1 s. A run allowed 3.5 s fits a worker that has
    # used under 0.5 s; after a run burning more than that, the next one gets a new worker.
    # 30M loop steps: about 0.85 s of CPU here, within 3.5 s on a host 2.5x slower.
    pool = await started(runs=100, per_tenant=1, total=2, idle_seconds=60, _pool={"max_cpu_seconds": 4})
    try:
        first, _ = await worker_of(pool, "cpu", timeout_ms=3_500)
        same, _ = await worker_of(pool, "cpu", timeout_ms=3_500)
        assert first == same
        _, burnt = await worker_of(pool, "cpu", BURN.format(n=30_000_000), timeout_ms=3_500)
        assert burnt.success and burnt.cpu_ms > 500
        after, outcome = await worker_of(pool, "cpu", timeout_ms=3_500)
        assert outcome.success and after != first
    finally:
        await pool.close()


async def test_health_counts_warm_workers_and_tenants(pool):
    await worker_of(pool, "count-a")
    await worker_of(pool, "count-b")
    state = pool.state()
    assert state.warm_workers == sum(len(p) for p in pool.warm_children().values())
    assert state.warm_tenants == len(pool.warm_children()) >= 2


def test_the_mode_is_off_unless_a_worker_may_serve_more_than_one_run():
    assert SandboxPool(warm=None).warm is None
    assert SandboxPool(warm=WarmPolicy(runs=1)).warm is None
    assert SandboxPool(warm=WarmPolicy(runs=2)).warm is not None


def test_a_warm_job_says_keep_and_a_fresh_one_does_not():
    assert job().keep is False
    assert msgspec.structs.replace(job(), keep=True).keep is True
