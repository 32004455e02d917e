"""Parameter sweeps on strategy.v1.backtest: fan-out, ranking, bounds, no deadlock."""

from __future__ import annotations

import asyncio
import math
import uuid

import msgspec
import nats
import pytest

from backtest.store import BarStore
from contracts import Bars, Performance, SweepRow, from_columns, subjects
from node.backtesting import MAX_CHUNK
from node.sweep import (CHILD_MS, CHUNK_MS, grid_points, grid_size, parse_grid_spec, plan_subgrids, point_ms, points_per_child,
                        points_per_chunk, rank, split_grid)
from tests.support import columnar_bars, request_json

SMA = (
    "import numpy as np\n"
    "def strategy(data, params):\n"
    "    fast = data['close'].rolling(params['fast']).mean()\n"
    "    slow = data['close'].rolling(params['slow']).mean()\n"
    "    return np.sign(fast - slow)\n"
)
GRID = {"fast": [3, 5, 8], "slow": [20, 30]}


def fresh_symbol() -> str:
    return "SW" + uuid.uuid4().hex[:8].upper()


async def load(nc, symbol: str, cols: dict) -> None:
    await BarStore(nc.jetstream()).load(symbol, "1d", from_columns(msgspec.convert(cols, Bars)))


async def backtest(nc, timeout: float = 60, **payload) -> dict:
    return await request_json(nc, subjects.BACKTEST, payload, timeout=timeout)


def metric_order(reply: dict, metric: str) -> list[float]:
    return [row["performance"][metric] for row in reply["sweep"]]


async def test_inline_sweep_returns_every_grid_point_ranked_by_sharpe_descending(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(300), grid=GRID)
    assert reply["success"] is True, reply["error"]
    assert reply["bars"] == 300 and reply["performance"] is None
    assert sorted(map(lambda r: tuple(r["parameters"].values()), reply["sweep"])) == sorted(
        (p["fast"], p["slow"]) for p in grid_points(GRID))
    sharpes = metric_order(reply, "sharpe_ratio")
    assert sharpes == sorted(sharpes, reverse=True)


async def test_each_sweep_row_equals_a_single_backtest_with_those_parameters(nc):
    bars = columnar_bars(250, seed=9)
    sweep = await backtest(nc, code=SMA, bars=bars, grid=GRID, parameters={"fast": 99})
    row = next(r for r in sweep["sweep"] if r["parameters"] == {"fast": 5, "slow": 30})
    single = await backtest(nc, code=SMA, bars=bars, parameters={"fast": 5, "slow": 30},
                            options={"max_trades": 0, "equity_points": 0})
    assert row["performance"] == single["performance"]


# The bench's SMA: one signal where the fast mean crosses the slow one, a trade every few dozen bars.
CROSSING = (
    "def strategy(data, params):\n"
    "    close = data['close']\n"
    "    above = (close.rolling(params['fast']).mean() > close.rolling(params['slow']).mean()).astype('int8')\n"
    "    return above.diff().fillna(0)\n"
)


async def msgpack_backtest(nc, **payload) -> dict:
    """A backtest over msgpack, so every float of the reply arrives with its exact bits."""
    msg = await nc.request(subjects.BACKTEST, msgspec.msgpack.encode(payload), timeout=120,
                           headers={subjects.CONTENT_TYPE: subjects.MSGPACK})
    return msgspec.msgpack.decode(msg.data)


@pytest.mark.parametrize("options", [{}, {"commission_rate": 0.001, "commission_fixed": 0.5, "fractional": False},
                                     {"mode": "backtesting_py"}], ids=["defaults", "costs-whole-units", "compat"])
async def test_every_row_of_a_sweep_over_shared_bars_is_bit_identical_to_the_single_backtest_of_its_point(
        nc, options):
    """30,000 bars (over sandbox.shm.MIN_BYTES: every chunk child maps them from the sealed memfd),
    chunks of several points per child: each row's metrics, to the last bit, are the ones a
    backtest of that point alone gives (trades and curve off, as in every sweep row)."""
    symbol = fresh_symbol()
    await load(nc, symbol, columnar_bars(30_000, seed=12))
    source = {"symbol": symbol, "timeframe": "1d"}
    grid = {"fast": [3, 8], "slow": [20, 30, 45, 60, 90]}
    sweep = await msgpack_backtest(nc, code=CROSSING, source=source, grid=grid, options=options)
    assert sweep["success"] is True, sweep["error"]
    rows = {(r["parameters"]["fast"], r["parameters"]["slow"]): r["performance"] for r in sweep["sweep"]}
    assert len(rows) == 10 and all(p["total_trades"] > 100 for p in rows.values())
    for point in grid_points(grid):
        single = await msgpack_backtest(nc, code=CROSSING, source=source, parameters=point,
                                        options={**options, "max_trades": 0, "equity_points": 0})
        assert single["success"] is True, single["error"]
        assert msgspec.msgpack.encode(rows[(point["fast"], point["slow"])]) == msgspec.msgpack.encode(
            single["performance"]), point


async def test_sweep_rows_carry_no_trades_or_equity_curve(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(200), grid={"fast": [5], "slow": [20, 30]})
    for row in reply["sweep"]:
        assert row["performance"]["trades"] == [] and row["performance"]["equity_curve"] == []
        assert row["performance"]["total_trades"] > 0


async def test_sweep_by_reference_fans_points_out_on_the_point_subject(nc):
    symbol, bars = fresh_symbol(), columnar_bars(300, seed=4)
    await load(nc, symbol, bars)
    seen = await nc.subscribe(subjects.BACKTEST_POINT)  # a plain (non-queue) listener sees every sub-request
    try:
        by_ref = await backtest(nc, code=SMA, source={"symbol": symbol, "timeframe": "1d"}, grid=GRID)
        inline = await backtest(nc, code=SMA, bars=bars, grid=GRID)
        requests = []
        while True:
            try:
                requests.append(await seen.next_msg(timeout=0.2))
            except nats.errors.TimeoutError:
                break
    finally:
        await seen.unsubscribe()
    assert by_ref["success"] is True, by_ref["error"]
    assert by_ref["sweep"] == inline["sweep"]
    chunks = [msgspec.msgpack.decode(m.data) for m in requests]
    assert chunks and all(c["grid"] and c["source"]["symbol"] == symbol and c.get("bars") is None for c in chunks)
    assert sum(len(grid_points(c["grid"])) for c in chunks) == len(grid_points(GRID))


async def test_sweep_ranks_max_drawdown_smallest_loss_first(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(300), grid=GRID, rank_by="max_drawdown")
    drawdowns = metric_order(reply, "max_drawdown")
    assert all(d <= 0 for d in drawdowns)
    assert drawdowns == sorted(drawdowns, reverse=True)  # -3 % ranks above -20 %


async def test_sweep_ranks_drawdown_duration_ascending(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(300), grid=GRID, rank_by="max_drawdown_duration_s")
    durations = metric_order(reply, "max_drawdown_duration_s")
    assert durations == sorted(durations)


async def test_sweep_with_an_unknown_rank_metric_is_an_invalid_request(nc):
    reply = await backtest(nc, code=SMA, bars=columnar_bars(50), grid=GRID, rank_by="luck")
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "rank_by 'luck'" in reply["error"]["message"]


async def test_sweep_of_a_million_points_is_refused_at_decode(nc):
    grid = {"a": list(range(1000)), "b": list(range(1000))}
    reply = await backtest(nc, code=SMA, bars=columnar_bars(10), grid=grid)
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "1000000 points" in reply["error"]["message"]


async def test_failed_grid_points_rank_last_with_their_error(nc):
    code = SMA.replace("def strategy(data, params):\n",
                       "def strategy(data, params):\n    if params['fast'] == 5:\n        raise ValueError('no five')\n")
    reply = await backtest(nc, code=code, bars=columnar_bars(200), grid=GRID)
    assert reply["success"] is True
    tail = reply["sweep"][-2:]
    assert all(r["parameters"]["fast"] == 5 and r["error"]["code"] == "RUNTIME_ERROR" for r in tail)
    assert all(r["error"] is None for r in reply["sweep"][:-2])


async def test_sweep_where_every_point_fails_is_unsuccessful(nc):
    code = "def strategy(data, params):\n    raise ValueError('never')\n"
    reply = await backtest(nc, code=code, bars=columnar_bars(50), grid=GRID)
    assert reply["success"] is False
    assert reply["error"]["code"] == "RUNTIME_ERROR"
    assert len(reply["sweep"]) == 6


async def test_grid_points_are_isolated_from_each_other(nc):
    code = (
        "import numpy as np\n"
        "calls = []\n"
        "def strategy(data, params):\n"
        "    calls.append(1)\n"
        "    return np.full(len(data), 1.0 if len(calls) == 1 else -1.0)\n"
    )
    reply = await backtest(nc, code=code, bars=columnar_bars(60), grid={"k": list(range(8))})
    assert {r["performance"]["buy_count"] for r in reply["sweep"]} == {60}


async def test_concurrent_sweeps_by_reference_do_not_deadlock_a_one_slot_node():
    """Every admission slot held by a sweep parent waiting on its points must not stall."""
    from node.config import Settings
    from node.embedded import EmbeddedServer
    from node.service import Node

    with EmbeddedServer() as server:
        node = Node(Settings.from_env({"MAX_WORKERS": "1", "MAX_QUEUE": "64", "SANDBOX_READY": "2",
                                       "NODE_ID": "one-slot"}), server.url)
        await node.start()
        conn = await nats.connect(server.url)
        try:
            symbol = fresh_symbol()
            await load(conn, symbol, columnar_bars(120))
            payload = {"code": SMA, "source": {"symbol": symbol, "timeframe": "1d"}, "grid": GRID}
            replies = await asyncio.wait_for(asyncio.gather(*(
                request_json(conn, subjects.BACKTEST, payload, timeout=60) for _ in range(3))), 60)
        finally:
            await conn.drain()
            await node.stop()
    assert all(r["success"] and len(r["sweep"]) == 6 for r in replies), [r["error"] for r in replies]


def _row(value: float | None, error: bool = False) -> SweepRow:
    from contracts import ErrorCode, ErrorInfo

    return SweepRow(parameters={"v": value}, performance=Performance(sharpe_ratio=value),
                    error=ErrorInfo(code=ErrorCode.RUNTIME_ERROR, message="x") if error else None)


def test_rank_puts_undefined_and_failed_rows_last_in_grid_order():
    rows = [_row(None), _row(1.0), _row(3.0, error=True), _row(2.0), _row(-1.0)]
    ranked = rank(rows, "sharpe_ratio")
    assert [r.parameters["v"] for r in ranked] == [2.0, 1.0, -1.0, None, 3.0]


@pytest.mark.parametrize("size", [1, 2, 4, 5, 7, 100])
def test_split_grid_concatenates_back_to_the_grid_in_order(size):
    grid = {"a": [1, 2, 3], "b": [10, 20], "c": ["x", "y", "z", "w"]}
    parts = split_grid(grid, size)
    assert [p for part in parts for p in grid_points(part)] == grid_points(grid)
    assert all(len(grid_points(part)) <= size for part in parts)


BENCH_GRID = {"fast": list(range(5, 55, 5)), "slow": list(range(60, 260, 20))}


def _sizes(subgrids) -> list[int]:
    return [len(grid_points(g)) for g in subgrids]


def test_a_ten_by_ten_grid_over_100k_bars_on_a_two_cpu_node_goes_out_as_two_chunks_of_fifty():
    """One chunk per CPU the node runs children on (more children only take turns, each at its
    own fixed cost): the bench's grid on 100,000 bars was 30, 30, 30, 10 (4 children on 2 CPUs)."""
    subgrids = plan_subgrids(BENCH_GRID, 100_000, parallel=2, most=MAX_CHUNK)
    assert _sizes(subgrids) == [50, 50]
    assert [p for g in subgrids for p in grid_points(g)] == grid_points(BENCH_GRID)


def test_on_four_cpus_the_grid_goes_out_as_four_balanced_chunks():
    assert _sizes(plan_subgrids(BENCH_GRID, 100_000, parallel=4, most=MAX_CHUNK)) == [30, 30, 20, 20]


def test_a_grid_whose_rows_do_not_divide_still_fills_every_cpu_once():
    """5 rows of 10 on 2 CPUs: 30 + 20 (not one chunk of 50 on one CPU, nor 20 + 20 + 10)."""
    grid = {"fast": [5, 10, 15, 20, 25], "slow": BENCH_GRID["slow"]}
    subgrids = plan_subgrids(grid, 100_000, parallel=2, most=MAX_CHUNK)
    assert _sizes(subgrids) == [30, 20]
    assert [p for g in subgrids for p in grid_points(g)] == grid_points(grid)


def test_a_sweep_of_heavy_points_is_cut_finely_enough_for_a_fleet_to_share():
    """Chunks of one per CPU would hold seconds of work at 1,000,000 bars: the sweep goes out in
    chunks of points_per_child points instead (whole rows of 10), as before, for a fleet to share."""
    assert 50 * point_ms(1_000_000) > CHUNK_MS
    assert _sizes(plan_subgrids(BENCH_GRID, 1_000_000, parallel=2, most=MAX_CHUNK)) == [10] * 10


def test_a_sweep_larger_than_one_chunk_per_cpu_is_cut_at_the_child_floor():
    grid = {"fast": list(range(10)), "slow": list(range(100))}
    floor = points_per_child(100_000, most=MAX_CHUNK)
    sizes = _sizes(plan_subgrids(grid, 100_000, parallel=2, most=MAX_CHUNK))
    assert sum(sizes) == 1_000 and max(sizes) <= floor and min(sizes) >= floor - 2


def test_a_chunk_is_worth_its_child_and_a_small_grid_is_one_chunk():
    # a chunk holds at least CHILD_MS of work: 4 points of 100,000 bars (3 per CPU would be less)
    assert points_per_chunk(6, 100_000, parallel=2, most=MAX_CHUNK) == 4 == math.ceil(CHILD_MS / point_ms(100_000))
    assert points_per_chunk(6, 1_000, parallel=2, most=MAX_CHUNK) == 6  # 6 points of 1,000 bars cost less than a child
    assert points_per_chunk(100, 100_000, parallel=2, most=MAX_CHUNK) == 50


def test_points_per_child_falls_to_the_floor_as_points_grow_costly():
    assert points_per_child(300) == 32  # tiny points: the child's cost dominates
    assert points_per_child(1_000_000) == 8  # a 1M-bar point dwarfs the child
    assert [points_per_child(b) for b in (100_000, 200_000, 400_000, 1_000_000)] == sorted(
        (points_per_child(b) for b in (100_000, 200_000, 400_000, 1_000_000)), reverse=True)


def test_cli_grid_spec_ranges_are_inclusive():
    assert parse_grid_spec(["fast=5:50:5", "slow=60,90", "mode=fast"]) == {
        "fast": [5, 10, 15, 20, 25, 30, 35, 40, 45, 50], "slow": [60, 90], "mode": ["fast"]}


def test_split_grid_prefers_whole_rows_and_balanced_slices():
    grid = {"fast": list(range(10)), "slow": list(range(10))}
    assert [len(grid_points(g)) for g in split_grid(grid, 8, most=32)] == [10] * 10
    assert [len(grid_points(g)) for g in split_grid(grid, 8)] == [5] * 20


def test_split_grid_slices_differ_by_at_most_one_value():
    grid = {"fast": list(range(10)), "slow": list(range(10))}
    assert [len(grid_points(g)) for g in split_grid(grid, 32, most=32)] == [30, 30, 20, 20]  # not 30, 30, 30, 10
    assert [len(g["a"]) for g in split_grid({"a": list(range(10))}, 3)] == [3, 3, 2, 2]
    assert [len(g["a"]) for g in split_grid({"a": list(range(11))}, 4)] == [4, 4, 3]


async def test_point_subject_refuses_a_grid_larger_than_one_chunk(nc):
    reply = await request_json(nc, subjects.BACKTEST_POINT, {
        "code": SMA, "bars": columnar_bars(30), "grid": {"fast": list(range(1, MAX_CHUNK + 2)), "slow": [20]}})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert f"at most {MAX_CHUNK} grid points" in reply["error"]["message"]


# -- fitting the ranked table into max_payload -------------------------------------------------
def _table(n: int) -> "BacktestResult":
    from contracts import BacktestResult

    rows = [SweepRow(parameters={"fast": i, "slow": 20 + i, "label": "p" * 40},
                     performance=Performance(sharpe_ratio=1.0 / (i + 1), trades=i))
            for i in range(n)]
    return BacktestResult(success=True, sweep=rows, bars=300, node_id="n", request_id="r")


@pytest.mark.parametrize("kind", [subjects.JSON, subjects.MSGPACK])
@pytest.mark.parametrize("over", [1, 50, 400])
def test_a_table_just_over_the_limit_keeps_every_row_that_fits(kind, over):
    from contracts import encode
    from node.sweep import fit_table

    result = _table(500)
    limit = len(encode(result, kind)) - over
    out = fit_table(result, kind, limit)
    assert len(encode(out, kind)) <= limit
    assert out.truncated is True and out.success is False and out.error.code == "OUTPUT_LIMIT"
    kept = len(out.sweep)
    assert kept >= 490, kept  # not 0: the rows that fit beside the error message
    assert out.sweep == result.sweep[:kept]  # the best rows, in rank order
    assert f"the best {kept:,} rows" in out.error.message
    bigger = msgspec.structs.replace(out, sweep=result.sweep[:kept + 1])
    assert len(encode(bigger, kind)) > limit  # one more row would not fit


def test_a_table_that_fits_is_returned_untouched():
    from contracts import encode
    from node.sweep import fit_table

    result = _table(50)
    assert fit_table(result, subjects.JSON, len(encode(result))) is result


async def test_a_sweep_just_over_max_payload_comes_back_with_the_rows_that_fit(tmp_path):
    """Through NATS, on a server whose max_payload the table just exceeds: the reply carries
    the best rows that fit (with OUTPUT_LIMIT and truncated), not an empty table."""
    from node.config import Settings
    from node.embedded import EmbeddedServer
    from node.service import Node

    conf = tmp_path / "small.conf"
    conf.write_text("max_payload: 40000\n")
    server = EmbeddedServer(jetstream=False, config_file=str(conf)).start()
    node = Node(Settings.from_env({"MAX_WORKERS": "2", "SANDBOX_READY": "2", "NODE_ID": "trim"}), server.url)
    await node.start()
    conn = await nats.connect(server.url)
    try:
        grid = {"fast": list(range(2, 12)), "slow": list(range(20, 32)), "tag": ["t" * 60]}
        reply = await request_json(conn, subjects.BACKTEST, {"code": SMA, "bars": columnar_bars(120), "grid": grid},
                                   timeout=120)
        assert reply["error"]["code"] == "OUTPUT_LIMIT", reply["error"]
        assert reply["truncated"] is True
        kept = len(reply["sweep"])
        assert 0 < kept < 120, kept
        assert f"the best {kept:,} rows" in reply["error"]["message"]
        sharpes = [r["performance"]["sharpe_ratio"] for r in reply["sweep"] if r["performance"]["sharpe_ratio"] is not None]
        assert sharpes == sorted(sharpes, reverse=True)
    finally:
        await conn.drain()
        await node.stop()
        server.close()


def test_a_nodes_parallelism_is_its_cpus_capped_by_its_cgroup_quota(tmp_path):
    from node.sweep import usable_cpus

    unlimited = tmp_path / "max"
    unlimited.write_text("max 100000\n")
    quota = tmp_path / "quota"
    quota.write_text("150000 100000\n")  # 1.5 CPUs: two children can still run
    mask = usable_cpus(str(tmp_path / "missing"))
    assert usable_cpus(str(unlimited)) == mask >= 1
    assert usable_cpus(str(quota)) == min(mask, 2)
