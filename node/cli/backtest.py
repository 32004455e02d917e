"""`strategy-node backtest` (registered by node.cli.app).

    strategy-node backtest STRATEGY.py --symbol S --timeframe 1d [--start T --end T]
        [--bars FILE.csv] [--param k=v ...] [--grid fast=5:50:5 slow=60:240:20]
        [--rank-by sharpe_ratio] [--report out.html] [--json]

`backtest` replays the bars from the BARS stream (or sends `--bars` inline). With `--grid` the
CLI fans the grid out itself, with the node's own helpers (node.sweep), so it can show progress:
the grid is split into sub-grids of 8-32 points, each sent as a small sweep request on
`strategy.v1.backtest` (the queue group spreads them; `strategy.v1.backtest.point` is for nodes
only), at most `--concurrency` in flight, and the rows are ranked together like a node ranks
them. Progress advances per finished sub-grid. `--report` writes a self-contained HTML file (inline SVG, no scripts); for a
sweep it holds the ranked table and a full backtest of the best row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from typing import Any

import msgspec

from contracts import (
    BacktestOptions,
    BacktestRequest,
    BacktestResult,
    Bars,
    BarsRef,
    ErrorCode,
    ErrorInfo,
    ExecutionError,
    SweepRow,
    limits,
)

__all__ = ["register"]

_RETRIES = 5


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: Any) -> None:
    """Add the `backtest` command to the CLI's subparsers."""
    p = sub.add_parser("backtest", help="backtest a strategy file over stored or CSV bars, or sweep a grid")
    p.add_argument("strategy", help="a .py strategy file (strategy(data) or script style)")
    p.add_argument("--symbol", help="series in the bar store (required unless --bars)")
    p.add_argument("--timeframe", default="1d", help="timeframe of the stored series (default 1d)")
    p.add_argument("--start", help="first bar time (ISO-8601 or epoch ms), inclusive")
    p.add_argument("--end", help="last bar time, inclusive (a date means that whole day)")
    p.add_argument("--bars", help="send this CSV/Parquet inline instead of replaying the store")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a strategy parameter (value parsed as JSON, else text); repeatable")
    p.add_argument("--grid", nargs="+", action="extend", metavar="NAME=SPEC",
                   help="sweep: name=start:stop:step (stop inclusive), name=a,b,c or name=value")
    p.add_argument("--rank-by", default="sharpe_ratio", help="sweep ranking metric (default sharpe_ratio)")
    p.add_argument("--mode", choices=["native", "backtesting_py"], default="native",
                   help="metric definitions: native (default) or backtesting.py's figures")
    p.add_argument("--cash", type=float, default=10_000.0, help="initial cash")
    p.add_argument("--commission", type=float, default=0.0, help="commission rate per fill, e.g. 0.001")
    p.add_argument("--allow-short", action="store_true", help="SELL opens a short position (default: long only)")
    p.add_argument("--timeout-ms", type=int, help="per backtest (per grid point in a sweep)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="sweep requests in flight (default: $SWEEP_CONCURRENCY or 32)")
    p.add_argument("--report", metavar="OUT.html", help="write a self-contained HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_backtest)


# -- backtest -----------------------------------------------------------------------------------
def _emit(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _inline_bars(path: str) -> Bars:
    from backtest.loader import read_bars

    arrays = read_bars(path)
    ts = arrays.column("timestamp")
    if (ts % 1_000_000).any():
        stamps: list[Any] = [_iso(int(t)) for t in ts]  # keep sub-millisecond times exact
    else:
        stamps = (ts // 1_000_000).tolist()
    return Bars(timestamp=stamps, **{k: arrays.column(k).tolist() for k in ("open", "high", "low", "close", "volume")})


def _when(text: str | None) -> str | int | None:
    """A --start/--end value: epoch milliseconds when all digits, else ISO-8601 text."""
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() else text


def _iso(ns: int) -> str:
    from contracts import ns_to_iso

    return ns_to_iso(ns)


def _request(args: argparse.Namespace, code: str) -> BacktestRequest:
    from .inputs import parse_params

    options = BacktestOptions(mode=args.mode, initial_cash=args.cash, commission_rate=args.commission,
                              allow_short=args.allow_short,
                              equity_points=5_000 if getattr(args, "report", None) and not args.grid else 500)
    fields: dict[str, Any] = dict(code=code, parameters=parse_params(args.param), options=options,
                                  timeout_ms=args.timeout_ms, symbol=args.symbol or "",
                                  timeframe=args.timeframe or "")
    if args.grid:  # a sweep: the parsed grid, ranked by --rank-by
        from ..sweep import parse_grid_spec

        try:
            fields["grid"] = parse_grid_spec(args.grid)
        except ValueError as exc:
            raise SystemExit(f"--grid: {exc}") from None
        fields["rank_by"] = args.rank_by
    elif args.rank_by != "sharpe_ratio":
        raise SystemExit("--rank-by ranks a sweep: give --grid too (a single backtest ranks nothing)")
    if args.bars:
        fields["bars"] = _inline_bars(args.bars)
    else:
        if not args.symbol:
            raise SystemExit("backtest needs --symbol (bars from the store) or --bars FILE")
        fields["source"] = BarsRef(symbol=args.symbol, timeframe=args.timeframe,
                                   start=_when(args.start), end=_when(args.end))
    try:
        return BacktestRequest(**fields)
    except ValueError as exc:  # e.g. a grid over the point limit
        raise SystemExit(f"invalid request: {exc}") from None


async def _backtest_once(client, req: BacktestRequest) -> BacktestResult:
    """One backtest on strategy.v1.backtest, retried with backoff while the fleet is OVERLOADED."""
    from contracts import subjects

    wait = (req.timeout_ms or 30_000) / 1000 + 5.0
    delay = 0.05
    for attempt in range(_RETRIES + 1):
        result = await client._request(subjects.BACKTEST, req, BacktestResult, wait)
        if result.error is None or result.error.code != ErrorCode.OVERLOADED or attempt == _RETRIES:
            return result
        await asyncio.sleep(delay)
        delay *= 2
    return result


async def run_sweep(client, req: BacktestRequest, grid: dict[str, list[Any]], concurrency: int,
                    progress=None) -> BacktestResult:
    """The CLI's fan-out (node.sweep's helpers): the grid split into sub-grids of 8 to 32
    points, each sent as a small sweep on strategy.v1.backtest (a subject every client may
    use), at most `concurrency` in flight through the queue group; rows ranked together."""
    from contracts import subjects

    from ..sweep import check_rank_by, chunk_size, fan_out, grid_points, grid_size, rank, split_grid

    check_rank_by(req.rank_by)
    total = grid_size(grid)
    if total > limits.MAX_GRID_POINTS:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"grid has {total} points; the limit is {limits.MAX_GRID_POINTS}")
    subgrids = split_grid(grid, chunk_size(total, concurrency), 32)
    budget_s = (req.timeout_ms or 10_000) / 1000

    async def run_subgrid(subgrid: dict[str, list[Any]]) -> list[SweepRow]:
        points = grid_points(subgrid)
        sub = msgspec.structs.replace(req, grid=subgrid)
        wait = 2 * budget_s * len(points) + 5.0
        delay = 0.05
        for attempt in range(_RETRIES + 1):
            result = await client._request(subjects.BACKTEST, sub, BacktestResult, wait)
            if result.sweep or result.error is None or result.error.code != ErrorCode.OVERLOADED:
                break
            if attempt < _RETRIES:
                await asyncio.sleep(delay)
                delay *= 2
        rows = result.sweep or []
        if len(rows) == len(points):  # back to grid order (the node ranked its sub-grid)
            by_key = {msgspec.json.encode(row.parameters): row for row in rows}
            ordered = [by_key.get(msgspec.json.encode(p)) for p in points]
            if all(r is not None for r in ordered):
                return ordered  # type: ignore[return-value]
        error = result.error or ErrorInfo(code=ErrorCode.INTERNAL, message="a node answered with the wrong rows")
        return [SweepRow(parameters=p, error=error) for p in points]

    def failed(subgrid: dict[str, list[Any]], error: ErrorInfo) -> list[SweepRow]:
        return [SweepRow(parameters=p, error=error) for p in grid_points(subgrid)]

    parts = await fan_out(subgrids, run_subgrid, concurrency, on_error=failed, progress=progress,
                          weight=grid_size)
    rows = [row for part in parts for row in part]
    ranked = rank(rows, req.rank_by)
    error = None
    if rows and all(r.error is not None for r in rows):
        first = rows[0].error
        error = ErrorInfo(code=first.code, line=first.line,
                          message=f"every grid point failed; the first: {first.message}")
    return BacktestResult(success=error is None, sweep=ranked, error=error)


async def cmd_backtest(args: argparse.Namespace) -> int:
    from backtest.loader import ProgressBar

    from .connect import strategy_client
    from .inputs import read_strategy
    from ..report import backtest_report, sweep_report
    from ..sweep import sweep_concurrency

    code = read_strategy(args.strategy)
    req = _request(args, code)  # --grid parsed there
    grid = req.grid
    concurrency = args.concurrency or sweep_concurrency()
    where = f"{args.symbol or os.path.basename(args.bars or '')} {args.timeframe}".strip()
    client = await strategy_client(args)
    try:
        if grid is None:
            result = await _backtest_once(client, req)
            best = None
        else:
            bar = None if args.quiet or args.json else ProgressBar(0, "sweep")
            started = time.perf_counter()
            try:
                result = await run_sweep(client, req, grid, concurrency, progress=bar)
                result.execution_time_ms = round((time.perf_counter() - started) * 1000.0, 3)
            except ExecutionError as exc:
                result = BacktestResult(success=False, error=exc.info())
            finally:
                if bar is not None:
                    bar.close()
            best = None
            if args.report and result.sweep and result.sweep[0].error is None:
                top = result.sweep[0].parameters
                best = await _backtest_once(client, msgspec.structs.replace(
                    req, parameters={**req.parameters, **top}, grid=None, rank_by="sharpe_ratio"))
                result.bars = best.bars
        bars = await _report_bars(client, args, req) if args.report else None
    finally:
        await client.close()

    if args.report:
        title = f"{os.path.basename(args.strategy)} — {where}"
        if grid is None:
            page = backtest_report(result, title=title, subtitle=f"backtest, {result.bars:,} bars, {args.mode} mode",
                                   bars=bars)
        else:
            page = sweep_report(result, rank_by=req.rank_by, title=title, best=best, bars=bars,
                                subtitle=f"sweep of {len(result.sweep or []):,} points, {args.mode} mode")
        with open(args.report, "w", encoding="utf-8") as fh:
            fh.write(page)
    if args.json:
        _emit(result)
    else:
        _print(result, req.rank_by, grid is not None)
        if args.report:
            print(f"report: {args.report}")
    return 0 if result.success else 1


async def _report_bars(client, args: argparse.Namespace, req: BacktestRequest):
    """The backtest's bars for the report's price chart: the --bars file, or the same range
    replayed from the bar store; None (no price chart) when they cannot be read."""
    from backtest.loader import read_bars
    from backtest.store import BarStore

    try:
        if args.bars:
            return read_bars(args.bars)
        return await BarStore(client.nc.jetstream(), client.nc).replay_ref(req.source)
    except Exception as exc:  # noqa: BLE001 - the report is still written, without prices
        print(f"report: no price chart ({exc})", file=sys.stderr)
        return None


def _print(result: BacktestResult, rank_by: str, sweep: bool) -> None:
    from .output import _fmt, error_line, print_performance

    status = "ok" if result.success else f"FAILED {result.error.code}"
    print(f"{status}  ({result.execution_time_ms:.1f} ms on {result.node_id or 'the fleet'})")
    if result.error:
        print(f"  error: {error_line(result.error)}")
    if not sweep:
        if result.success:
            print(f"bars {result.bars:,}, signals {result.signals_count:,}")
        if result.performance:
            print_performance(result.performance)
        for line in result.logs[-20:]:
            print(f"  log: {line}")
        return
    rows = result.sweep or []
    print(f"{len(rows):,} grid points ranked by {rank_by} (best first):")
    for i, row in enumerate(rows[:20], 1):
        params = " ".join(f"{k}={v}" for k, v in row.parameters.items())
        if row.error:
            print(f"  {i:>4}. {params}  {row.error.code}: {row.error.message[:80]}")
            continue
        p = row.performance
        print(f"  {i:>4}. {params}  {rank_by}={_fmt(getattr(p, rank_by, None))}  "
              f"return={_fmt(p.total_return)}%  max_dd={_fmt(p.max_drawdown)}%  trades={p.total_trades}")
    if len(rows) > 20:
        print(f"  ... {len(rows) - 20:,} more")
