"""Admission without a wrapper per request (issue 18, the warm path): a work that finds a slot
runs as its own task; its slot comes back however the task ends, and waiters take freed slots
in order."""

from __future__ import annotations

import asyncio

from node.admission import Admission


async def test_a_work_cancelled_before_it_starts_gives_its_slot_back():
    adm = Admission(max_workers=1, max_queue=0)
    ran = []

    async def work():
        ran.append(1)

    assert adm.submit(work)
    (task,) = adm._tasks
    task.cancel()  # before its first step
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran == [] and adm.running == 0 and adm.in_flight == 0
    assert adm.submit(work)
    await asyncio.sleep(0.01)
    assert ran == [1] and adm.running == 0


async def test_freed_slots_go_to_the_waiters_in_order_and_never_exceed_the_bound():
    adm = Admission(max_workers=2, max_queue=10)
    order, live, peak = [], [0], [0]

    def make(i):
        async def work():
            live[0] += 1
            peak[0] = max(peak[0], live[0])
            order.append(i)
            await asyncio.sleep(0.005)
            live[0] -= 1
        return work

    for i in range(8):
        assert adm.submit(make(i))
    assert adm.queued == 6 and adm.running == 2  # queued at submit, before their tasks first run
    assert await adm.drain(5)
    assert order == list(range(8)) and peak[0] == 2
    assert adm.running == 0 and adm.queued == 0


async def test_a_waiter_cancelled_after_it_was_handed_a_slot_passes_it_on():
    adm = Admission(max_workers=1, max_queue=5)
    gate = asyncio.Event()
    done = []

    async def first():
        await gate.wait()

    def named(name):
        async def work():
            done.append(name)
        return work

    def submitted(work):
        before = set(adm._tasks)
        assert adm.submit(work)
        (task,) = adm._tasks - before
        return task

    submitted(first)
    a = submitted(named("a"))
    submitted(named("b"))
    await asyncio.sleep(0)  # a and b wait, a first
    gate.set()
    while len(adm._waiters) == 2:  # first ends; its slot is handed to a (a's turn is popped)
        await asyncio.sleep(0)
    assert len(adm._waiters) == 1 and adm.running == 1 and not a.done()  # a has not resumed yet
    a.cancel()
    assert await adm.drain(5)
    assert done == ["b"] and adm.running == 0 and adm.queued == 0


async def test_a_slot_freed_before_a_queued_works_task_first_runs_still_reaches_it():
    # A ends and B is submitted in the same loop iteration: A's slot is released before B's task
    # has run at all. B must get it (a bench run at 16 in flight hung the node here once).
    adm = Admission(max_workers=1, max_queue=4)
    gate = asyncio.get_running_loop().create_future()
    ran = asyncio.Event()

    async def a():
        await gate

    async def b():
        ran.set()

    assert adm.submit(a)
    await asyncio.sleep(0)
    gate.set_result(None)  # A's next step is now due ...
    asyncio.get_running_loop().call_soon(lambda: adm.submit(b))  # ... and B's submit right after it
    await asyncio.wait_for(ran.wait(), 1.0)
    await asyncio.sleep(0)
    assert adm.running == 0 and adm.queued == 0 and adm.in_flight == 0


async def test_a_queued_work_cancelled_while_waiting_leaves_the_counts_as_they_were():
    adm = Admission(max_workers=1, max_queue=4)
    gate = asyncio.get_running_loop().create_future()

    async def hold():
        await gate

    async def never():
        raise AssertionError("a cancelled waiter ran")

    assert adm.submit(hold) and adm.submit(never)
    waiting = [t for t in adm._tasks if t.get_coro().__name__ == "_queued"]
    await asyncio.sleep(0)
    waiting[0].cancel()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert adm.queued == 0 and adm.running == 1
    gate.set_result(None)
    await asyncio.sleep(0.01)
    assert adm.running == 0 and adm.in_flight == 0
