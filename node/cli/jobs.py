"""`strategy-node submit` and `strategy-node result`: durable jobs from the command line.

    strategy-node submit STRATEGY.py --bars FILE.csv [--param k=v] [--kind backtest]   → job id
    strategy-node result JOB_ID [--wait SECONDS] [--json]

`result` exits 0 when the job succeeded, 1 when it completed with an error, 3 when there is no
result (yet) after the wait, 2 when NATS cannot be reached.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .connect import connect_jetstream


def _bars(path: str) -> dict[str, list]:
    from backtest.loader import read_bars

    arrays = read_bars(path)
    ts = arrays.column("timestamp")
    return {
        "timestamp": (ts // 1_000_000).tolist(),
        **{k: arrays.column(k).tolist() for k in ("open", "high", "low", "close", "volume")},
    }


async def cmd_submit(args: argparse.Namespace) -> int:
    from .inputs import parse_params, read_strategy

    request: dict[str, Any] = {
        "code": read_strategy(args.strategy),
        "parameters": parse_params(args.param),
    }
    for key in ("symbol", "timeframe", "timeout_ms"):
        if getattr(args, key) is not None:
            request[key] = getattr(args, key)
    nc = await connect_jetstream(args)  # first: with no server, say so before reading a large file or
    try:                       # importing the node's modules (jobs_client): ~1 s on a busy machine
        from ..jobs_client import submit

        request["bars"] = _bars(args.bars)
        job_id = await submit(nc, args.kind, request, job_id=args.job_id, reply_to=args.reply_to)
    finally:
        await nc.close()
    if args.json:
        print(f'{{"job_id": "{job_id}"}}')
    else:
        print(job_id)
    return 0


async def cmd_result(args: argparse.Namespace) -> int:
    from contracts import BacktestResult

    from .output import _emit_json, print_execute, print_performance

    nc = await connect_jetstream(args)
    try:
        from ..jobs_client import result

        res = await result(nc, args.job_id, wait=args.wait)
    finally:
        await nc.close()
    if res is None:
        print(f"no result for job {args.job_id}" + (f" after {args.wait:g}s" if args.wait else ""),
              file=sys.stderr)
        return 3
    if args.json:
        _emit_json(res)
    elif isinstance(res, BacktestResult):
        status = "ok" if res.success else f"FAILED {res.error.code if res.error else ''}"
        print(f"{status}  ({res.execution_time_ms:.2f} ms on {res.node_id}; {res.bars} bars, "
              f"{res.signals_count} signals)")
        if res.error:
            print(f"  error: {res.error.message}")
        if res.performance:
            print_performance(res.performance)
        for row in (res.sweep or [])[:20]:
            print(f"  {row.parameters}  {row.error.code if row.error else ''}")
    else:
        print_execute(res)
    return 0 if res.success else 1


def register(sub: Any) -> None:
    """Add `submit` and `result` to the `strategy-node` sub-commands."""
    p = sub.add_parser("submit", help="submit a durable job (STRATEGY_JOBS); prints its job id")
    p.add_argument("strategy", help="a .py strategy file")
    p.add_argument("--bars", required=True, help="CSV with timestamp,open,high,low,close[,volume]")
    p.add_argument("--kind", choices=("execute", "backtest"), default="execute",
                   help="what the job runs (default execute)")
    p.add_argument("--symbol", help="the bars' symbol")
    p.add_argument("--timeframe", help="the bars' timeframe, e.g. 1d")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a strategy parameter (value parsed as JSON, else text); repeatable")
    p.add_argument("--timeout-ms", type=int, help="wall-clock limit of the run (default: the node's)")
    p.add_argument("--job-id", help="your own id (letters, digits, - and _); default: a random UUID")
    p.add_argument("--reply-to", help="an inbox subject that also receives the result")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help='print {"job_id": ...}')
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("result", help="print a durable job's stored result (exit 3: none yet)")
    p.add_argument("job_id", help="the id `submit` printed")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                   help="wait up to this long for the result")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_result)
