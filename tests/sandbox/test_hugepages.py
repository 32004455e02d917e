"""The zygote's heap is collapsed into transparent huge pages before it forks (sandbox/hugepages.py):
fewer page-table entries for each fork to copy and each exit to free, and a child's private
memory is not inflated by them (a write to a shared huge page copies 4 KiB, not 2 MiB)."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from sandbox import SandboxPool
from sandbox.hugepages import collapse_heap


def _thp_possible() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as fh:
            return "[never]" not in fh.read()
    except OSError:
        return False


def _rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if value.strip().endswith("kB"):
                out[key] = int(value.split()[0])
    return out


needs_thp = pytest.mark.skipif(not _thp_possible(), reason="transparent huge pages are off on this host")


@pytest_asyncio.fixture(scope="module")
async def pool():
    running = SandboxPool(ready_target=2)
    await running.start()
    deadline = asyncio.get_running_loop().time() + 30
    while running.state().ready < 2 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    yield running
    await running.close()


@needs_thp
async def test_the_zygotes_heap_is_on_huge_pages(pool):
    assert _rollup(pool.zygote_pid)["AnonHugePages"] >= 2048


@needs_thp
async def test_a_ready_child_copies_no_huge_page(pool):
    for pid in pool.ready_children():
        mem = _rollup(pid)
        assert mem["Private_Dirty"] + mem["Private_Clean"] < 16 * 1024  # KiB: ~6 MB measured
        assert mem["AnonHugePages"] <= _rollup(pool.zygote_pid)["AnonHugePages"]


def test_collapsing_is_best_effort_and_reports_what_it_did():
    done, failed = collapse_heap()
    assert done >= 0 and failed >= 0 and done % 2 == 0 and failed % 2 == 0
