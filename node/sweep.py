"""Parameter sweeps: grid points, a bounded fan-out, and the ranking of the results.

One helper serves both ends: the node that receives a sweep (`node.backtesting`) and the CLI
(`strategy-node backtest --grid ...`, `node.cli.backtest`), which fans grid points out itself so
it can show per-point progress.

Ranking (`rank`): rows are ordered by the `rank_by` metric of their `performance`, best first.
Best means *higher* for every metric except the few where smaller is better, listed in
`ASCENDING`: `max_drawdown_duration_s`, `annualized_volatility` and `commissions`. Note that
`max_drawdown` is a percentage <= 0 (-12.5 means a 12.5 % drawdown), so it ranks descending too:
-3 beats -20. Rows that failed, or whose metric is undefined (`null`, e.g. a Sharpe ratio with no
volatility), come last in grid order; ties keep grid order.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
from typing import Any, Awaitable, Callable, Mapping, Sequence, TypeVar

import msgspec

from contracts import (
    BacktestRequest,
    BacktestResult,
    ErrorCode,
    ErrorInfo,
    ExecutionError,
    Performance,
    SweepRow,
    decode,
    encode,
    subjects,
)

from . import sizing

__all__ = [
    "ASCENDING", "RANKABLE", "DEFAULT_CONCURRENCY", "sweep_concurrency", "grid_points",
    "check_rank_by", "rank", "fan_out", "grid_size", "split_grid", "chunk_size", "points_per_child", "request_subgrid",
    "points_per_chunk", "plan_subgrids", "point_ms", "usable_cpus", "CHUNK_MS",
    "parse_grid_spec", "fit_table",
]

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CONCURRENCY = 32
ASCENDING = frozenset({"max_drawdown_duration_s", "annualized_volatility", "commissions"})


def _rankable() -> frozenset[str]:
    names = set()
    for field in msgspec.structs.fields(Performance):
        if field.name in ("initial_cash", "bars"):
            continue
        if field.type in (int, float, float | None, int | None):
            names.add(field.name)
    return frozenset(names)


RANKABLE = _rankable()


def sweep_concurrency(env: Mapping[str, str] | None = None) -> int:
    """`SWEEP_CONCURRENCY`: grid-point sub-requests one sweep keeps in flight (default 32)."""
    env = os.environ if env is None else env
    raw = (env.get("SWEEP_CONCURRENCY") or "").strip()
    if not raw:
        return DEFAULT_CONCURRENCY
    try:
        value = int(float(raw))
    except ValueError:
        raise ValueError(f"SWEEP_CONCURRENCY must be a number, got {raw!r}") from None
    if not 1 <= value <= 10_000:
        raise ValueError(f"SWEEP_CONCURRENCY must be between 1 and 10000, got {value}")
    return value


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first parameter varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


def check_rank_by(rank_by: str) -> None:
    if rank_by not in RANKABLE:
        raise ExecutionError(
            ErrorCode.INVALID_REQUEST,
            f"rank_by {rank_by[:40]!r} is not a performance metric; use one of: "
            + ", ".join(sorted(RANKABLE)),
        )


def _metric(row: SweepRow, rank_by: str) -> float | None:
    if row.error is not None or row.performance is None:
        return None
    value = getattr(row.performance, rank_by, None)
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def rank(rows: Sequence[SweepRow], rank_by: str) -> list[SweepRow]:
    """Rows best first by `rank_by` (see the module doc for the direction); stable."""
    check_rank_by(rank_by)
    sign = 1.0 if rank_by in ASCENDING else -1.0
    scored = [(_metric(row, rank_by), i, row) for i, row in enumerate(rows)]
    defined = sorted((s for s in scored if s[0] is not None), key=lambda s: (sign * s[0], s[1]))
    undefined = [s for s in scored if s[0] is None]
    return [row for _, _, row in defined + undefined]


async def fan_out(
    items: Sequence[T],
    run_item: Callable[[T], Awaitable[R]],
    concurrency: int,
    on_error: Callable[[T, ErrorInfo], R],
    progress: Callable[[int, int], None] | None = None,
    weight: Callable[[T], int] = lambda _item: 1,
) -> list[R]:
    """`run_item` over every item, at most `concurrency` at once; results in item order.

    Anything `run_item` raises becomes `on_error(item, ErrorInfo)` for that item, so one bad
    item never sinks the rest. `progress(done, total)` counts items by `weight` (e.g. the
    grid points in a chunk) as they finish.
    """
    total_items = len(items)
    results: list[Any] = [None] * total_items
    pending = iter(range(total_items))
    total = sum(weight(item) for item in items)
    done = 0
    if progress is not None:
        progress(0, total)

    async def worker() -> None:
        nonlocal done
        for i in pending:
            try:
                results[i] = await run_item(items[i])
            except ExecutionError as exc:
                results[i] = on_error(items[i], exc.info())
            except Exception as exc:  # noqa: BLE001 - contained to this item
                results[i] = on_error(items[i], ErrorInfo(
                    code=ErrorCode.INTERNAL, message=f"grid point failed: {type(exc).__name__}"))
            done += weight(items[i])
            if progress is not None:
                progress(done, total)

    workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, total_items)))]
    try:
        await asyncio.gather(*workers)
    finally:
        for w in workers:
            w.cancel()
    return results


def grid_size(grid: Mapping[str, Sequence[Any]]) -> int:
    return math.prod(len(v) for v in grid.values())


def split_grid(grid: Mapping[str, Sequence[Any]], size: int, most: int | None = None) -> list[dict[str, list[Any]]]:
    """The grid as sub-grids of at most `size` points whose points, concatenated, are exactly
    `grid_points(grid)` in order (each sub-grid fixes leading parameters and slices one).

    With `most`, `size` grows to the smallest run of whole trailing rows that holds at least
    `size` points if that is at most `most` (a 10 x 10 grid at size 8 becomes 10 sub-grids of
    10, not 20 of 8 and 2). Slices are balanced: as few as hold at most `size` points each,
    their lengths differing by at most one (10 values at size 8: 5 + 5, not 8 + 2; at size 3:
    3 + 3 + 2 + 2, not 3 + 3 + 3 + 1).
    """
    names = list(grid)
    values = [list(grid[n]) for n in names]
    size = max(1, size)
    if most is not None:
        tail = 1
        for v in reversed(values):
            tail *= len(v)
            if tail >= size:
                if tail <= most:
                    size = tail
                break
    # The first parameter j whose trailing product fits in `size`: slice it, fix the ones before.
    j = len(names)
    tail = 1
    while j > 0 and tail * len(values[j - 1]) <= size:
        j -= 1
        tail *= len(values[j])
    if j == 0:
        return [{n: list(v) for n, v in zip(names, values)}]
    sliced = values[j - 1]
    step = max(1, size // tail)
    pieces = -(-len(sliced) // step)
    # `pieces` slices whose lengths differ by at most one, the longer ones first (10 values in
    # 4 pieces: 3, 3, 2, 2; never 3, 3, 3, 1)
    short, longer = divmod(len(sliced), pieces)
    bounds = [0]
    for k in range(pieces):
        bounds.append(bounds[-1] + short + (k < longer))
    out = []
    for head in itertools.product(*values[: j - 1]):
        for lo, hi in zip(bounds, bounds[1:]):
            sub = {n: [v] for n, v in zip(names, head)}
            sub[names[j - 1]] = sliced[lo:hi]
            sub.update({n: list(v) for n, v in zip(names[j:], values[j:])})
            out.append(sub)
    return out


# What a chunk child costs besides its points, and what a point costs, on the 2-core bench host
# (one chunk of 1, 10 and 30 points of the bench's SMA on 100,000 bars, CPU of the zygote and its
# children: 20 + 10 x 5.8 and 20 + 30 x 5.8 ms): fork, lock-down, the pre-warm run and the first
# point's page faults, then about 1.5 ms plus 43 ns per bar for each point.
CHILD_MS = 20.0
POINT_MS_FIXED = 1.5
POINT_MS_PER_BAR = 43e-6
CHILD_SHARE = 0.10  # a child's fixed cost, at most this share of its chunk's work


def points_per_child(bars: int, least: int = 8, most: int = 32) -> int:
    """The fewest grid points a sandbox child should run so that its fixed cost (CHILD_MS) is at
    most CHILD_SHARE of its chunk's work on `bars` bars, between `least` and `most`: 32 at 100,000
    bars (a 10 x 10 grid goes out as 4 chunks, not 10), 8 from about 550,000 bars on. Every child
    also costs the others CPU while it starts, so on a busy node fewer, larger chunks finish sooner;
    the fleet still shares the chunks (up to SWEEP_CONCURRENCY in flight)."""
    return max(least, min(most, math.ceil(CHILD_MS / (CHILD_SHARE * point_ms(bars)))))


CHUNK_MS = 400.0  # a chunk's work, at most (so a sweep of heavy points still spreads over a fleet)


def point_ms(bars: int) -> float:
    """A grid point's estimated CPU on `bars` bars (the bench host's SMA; see CHILD_MS)."""
    return POINT_MS_FIXED + POINT_MS_PER_BAR * max(0, bars)


def usable_cpus(cpu_max: str = "/sys/fs/cgroup/cpu.max") -> int:
    """CPUs this process may run on: its affinity mask (the machine's count where unknown), at
    most its cgroup's CPU quota rounded up (a container limited to 2 CPUs on a 64-CPU host)."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = max(1, os.cpu_count() or 1)
    try:
        with open(cpu_max) as fh:
            quota, period = fh.read().split()[:2]
        if quota != "max" and int(period) > 0:
            cpus = min(cpus, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota: the mask it is
    return cpus


def _chunk_bounds(bars: int, most: int, least: int) -> tuple[int, int, int]:
    """(floor, cap, worth) points per child on `bars` bars: the floor keeps a child's fixed cost
    under CHILD_SHARE of its chunk; the cap keeps a chunk under CHUNK_MS of work (and `most`
    points); `worth` is the fewest points that are as much work as the child costs."""
    cost = point_ms(bars)
    floor = points_per_child(bars, least, most)
    cap = max(floor, min(most, int(CHUNK_MS // cost)))
    return floor, cap, min(cap, math.ceil(CHILD_MS / cost))


def points_per_chunk(points: int, bars: int, parallel: int, most: int = 64, least: int = 8) -> int:
    """Grid points per sandbox child for a sweep of `points` points on `bars` bars, on a node that
    runs `parallel` children at once (its CPUs, at most its worker slots).

    A sweep that one chunk per CPU can hold (at most CHUNK_MS of estimated work and `most` points
    each) goes out as one chunk per CPU: more children than CPUs only take turns, each at its own
    fixed cost (CHILD_MS), and fewer leave a CPU idle. A chunk is still worth its child (at least
    CHILD_MS of work). A larger sweep is cut into chunks of points_per_child(bars) points, so
    its child's fixed cost stays under CHILD_SHARE of the chunk and a fleet can share the chunks.
    The bench's 10 x 10 grid on 100,000 bars on a 2-CPU node: 50 points per chunk (2 children;
    it was 30, 30, 30, 10: 4 children on 2 CPUs).
    """
    floor, cap, worth = _chunk_bounds(bars, most, least)
    per_cpu = -(-points // max(1, parallel))
    if per_cpu > cap:
        return max(1, min(points, floor))
    return max(1, min(points, max(per_cpu, worth)))


def plan_subgrids(grid: Mapping[str, Sequence[Any]], bars: int, parallel: int, most: int = 64,
                  least: int = 8) -> list[dict[str, list[Any]]]:
    """The sub-grids a sweep goes out as (`split_grid`, in grid order), sized by
    points_per_chunk. When one chunk per CPU is the plan, a grid whose rows do not divide evenly
    is cut into at most `parallel` sub-grids where whole slices allow it (5 x 10 points on 2 CPUs:
    30 + 20, not 20 + 20 + 10); otherwise whole trailing rows are kept up to `most` points."""
    total = grid_size(grid)
    size = points_per_chunk(total, bars, parallel, most, least)
    if size * max(1, parallel) < total:  # more chunks than CPUs anyway
        return split_grid(grid, size, most)
    _, cap, _ = _chunk_bounds(bars, most, least)
    parts = split_grid(grid, size)
    while len(parts) > parallel and size < cap:
        size += 1
        parts = split_grid(grid, size)
    return parts


def chunk_size(points: int, units: int, most: int = 32, least: int = 8) -> int:
    """Grid points per sandbox child: enough chunks to fill about `units` parallel slots, but
    at least `least` points per child (a fresh child costs about as much as a few 100k-bar
    points: fork, lock-down, first-touch page faults) and at most `most`."""
    return max(1, min(most, max(least, -(-points // max(1, units)))))


async def request_subgrid(nc: Any, template: BacktestRequest, subgrid: dict[str, list[Any]],
                          wait: float) -> list[SweepRow]:
    """Run one sub-grid on `strategy.v1.backtest.point` (msgpack); its rows in grid order.

    Raises sizing.TooLarge when the chunk's request (with its inline bars) would exceed the
    server's max_payload, nats' NoRespondersError when no node serves the subject, nats' TimeoutError, and
    ExecutionError with the reply's error when the answering node refused the whole chunk
    (e.g. OVERLOADED); errors of single points are in their rows.
    """
    points = grid_points(subgrid)
    sub = msgspec.structs.replace(template, grid=subgrid)
    body, headers = encode(sub, subjects.MSGPACK), {subjects.CONTENT_TYPE: subjects.MSGPACK}
    sizing.check(nc, body, headers, "the grid chunk's request")  # TooLarge: run it locally instead
    msg = await nc.request(subjects.BACKTEST_POINT, body, timeout=wait, headers=headers)
    reply = decode(msg.data, BacktestResult, subjects.MSGPACK)
    if reply.error is not None:
        raise ExecutionError(reply.error.code, reply.error.message, reply.error.line)
    if reply.sweep is None or len(reply.sweep) != len(points):
        raise ExecutionError(ErrorCode.INTERNAL, "a node answered a grid chunk with the wrong rows")
    return reply.sweep


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() and not any(c in text for c in ".eE") else value


def parse_grid_spec(items: Sequence[str]) -> dict[str, list[Any]]:
    """CLI grid syntax: `name=start:stop:step` (stop inclusive), `name=a,b,c` or `name=value`.

    `fast=5:50:5` is 5, 10, ..., 50. Values are numbers where they parse as numbers, otherwise
    JSON values (`true`, `"x"`) or plain strings. Raises ValueError with the offending item.
    """
    import json

    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        name = name.strip()
        if not sep or not name or not spec.strip():
            raise ValueError(f"grid takes name=start:stop:step or name=a,b,c, got {item!r}")
        if name in grid:
            raise ValueError(f"grid parameter {name!r} given twice")
        if spec.count(":") == 2:
            try:
                start, stop, step = (_number(p.strip()) for p in spec.split(":"))
            except ValueError:
                raise ValueError(f"grid {name}: start:stop:step must be numbers, got {spec!r}") from None
            if step <= 0 or stop < start:
                raise ValueError(f"grid {name}: need step > 0 and stop >= start, got {spec!r}")
            count = int(math.floor((stop - start) / step + 1e-9)) + 1
            if count > 1_000_000:
                raise ValueError(f"grid {name}: {count} values is too many")
            values = [start + k * step for k in range(count)]
            if all(isinstance(v, int) for v in (start, stop, step)):
                values = [int(v) for v in values]
            else:
                values = [round(v, 12) for v in values]
        else:
            values = []
            for part in spec.split(","):
                part = part.strip()
                try:
                    values.append(_number(part))
                except ValueError:
                    try:
                        values.append(json.loads(part))
                    except json.JSONDecodeError:
                        values.append(part)
        grid[name] = values
    return grid


def fit_table(result: BacktestResult, kind: str, limit: int) -> BacktestResult:
    """The sweep reply within `limit` encoded bytes, built row by row, best row first.

    Rows are measured one at a time (never the whole table encoded and then cut), and the
    envelope is measured with the OUTPUT_LIMIT error it will carry, so a table just over the
    limit keeps every row that fits beside that error (the old trim measured without it, and the
    reply then failed the size check again and lost every row). When every row fits, `result`
    is returned unchanged.
    """
    rows = result.sweep or []
    sizes = [len(encode(row, kind)) for row in rows]

    def framing(n: int) -> int:
        """Bytes a list of n rows adds beyond its rows, over an empty list's."""
        if kind == subjects.MSGPACK:
            return 0 if n < 16 else (2 if n < 65_536 else 4)  # fixarray / array16 / array32 header
        return max(0, n - 1)  # JSON commas

    plain = len(encode(msgspec.structs.replace(result, sweep=[]), kind))
    table = plain + sum(sizes) + framing(len(rows))
    if table <= limit:
        return result

    def trimmed(kept: int) -> BacktestResult:
        return msgspec.structs.replace(result, success=False, truncated=True, sweep=rows[:kept], error=ErrorInfo(
            code=ErrorCode.OUTPUT_LIMIT,
            message=f"the ranked table of {len(rows):,} rows would be {table:,} bytes; the broker's "
                    f"max_payload allows {limit:,}: the best {kept:,} rows are included (send fewer "
                    f"points, or msgpack)"))

    envelope = len(encode(msgspec.structs.replace(trimmed(len(rows)), sweep=[]), kind))  # largest message
    kept, used = 0, envelope
    for size in sizes:
        if used + size + framing(kept + 1) > limit:
            break
        used += size
        kept += 1
    out = trimmed(kept)
    while kept and len(encode(out, kind)) > limit:  # only if a measurement above was short
        kept -= 1
        out = trimmed(kept)
    return out
