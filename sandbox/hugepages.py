"""The zygote's heap on 2 MiB pages, so every fork copies and every exit tears down fewer entries.

A fork copies the parent's page tables: one entry per 4 KiB page of the zygote's ~60 MB of
anonymous memory (numpy, pandas, TA-Lib and their object graph), and each child's exit frees
them again. Collapsing that memory into transparent huge pages (MADV_COLLAPSE, Linux 6.1+)
leaves one entry per 2 MiB where it succeeds. A child that writes to a shared huge page does
not copy 2 MiB: the kernel splits the mapping and copies the 4 KiB page written, as before, so a
child's private memory is unchanged. Nothing here asks for huge pages for new allocations
(no MADV_HUGEPAGE): memory a child allocates stays in 4 KiB pages.

Best effort: on kernels without MADV_COLLAPSE, with THP disabled, or where a range cannot be
collapsed, nothing changes. Done once, in the zygote, after its warm-up and before it forks.
"""

from __future__ import annotations

import ctypes
import errno

MADV_COLLAPSE = 25
HUGE = 1 << 21


def _anonymous_writable_ranges() -> list[tuple[int, int]]:
    ranges = []
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split()
            name = parts[5] if len(parts) > 5 else ""
            if name not in ("", "[heap]") or "w" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def collapse_heap() -> tuple[int, int]:
    """Collapse every whole 2 MiB chunk of the process's anonymous writable memory into a huge
    page where the kernel can. Returns (MiB collapsed, MiB that could not be)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
        madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        ranges = _anonymous_writable_ranges()
    except OSError:
        return 0, 0
    done = failed = 0
    for lo, hi in ranges:
        start = (lo + HUGE - 1) & ~(HUGE - 1)
        for chunk in range(start, hi & ~(HUGE - 1), HUGE):
            if madvise(chunk, HUGE, MADV_COLLAPSE) == 0:
                done += 2
            else:
                failed += 2
                if ctypes.get_errno() == errno.EINVAL and not done:
                    return 0, failed  # no MADV_COLLAPSE on this kernel (or THP off): stop asking
    return done, failed
