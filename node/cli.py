"""`strategy-node`: serve, and client commands that print readable results (or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import msgspec

from contracts import ExecuteResult, Performance

from . import cli_backtest, cli_jobs


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param takes key=value, got {item!r}")
        params[key] = _parse_value(value)
    return params


def _url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"


async def _client(args: argparse.Namespace):
    from .cli_connect import connect
    from .client import StrategyClient

    return StrategyClient(await connect(args), owns_connection=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def print_execute(result: ExecuteResult, out=sys.stdout) -> None:
    status = "ok" if result.success else f"FAILED {result.error.code}"
    print(f"{status}  ({result.execution_time_ms:.2f} ms on {result.node_id})", file=out)
    if result.error:
        where = f" (line {result.error.line})" if result.error.line else ""
        print(f"  error: {result.error.message}{where}", file=out)
    if result.signals:
        print(f"signals ({len(result.signals)}):", file=out)
        for s in result.signals[-20:]:
            extra = f"  {s.reason}" if s.reason else ""
            print(f"  {s.timestamp}  {s.type:<4}  {_fmt(s.price)}{extra}", file=out)
        if len(result.signals) > 20:
            print(f"  ... {len(result.signals) - 20} earlier signals not shown", file=out)
    if result.indicators:
        print("indicators: " + ", ".join(f"{k} (last {_fmt(v[-1] if v else None)})"
                                         for k, v in result.indicators.items()), file=out)
    if result.performance:
        print_performance(result.performance, out)
    if result.result is not None:
        print(f"result: {json.dumps(result.result)[:500]}", file=out)
    for line in result.logs[-20:]:
        print(f"  log: {line}", file=out)


def print_performance(p: Performance, out=sys.stdout) -> None:
    rows = [
        ("total return %", p.total_return), ("buy & hold %", p.buy_and_hold_return),
        ("max drawdown %", p.max_drawdown), ("sharpe", p.sharpe_ratio), ("sortino", p.sortino_ratio),
        ("trades", p.total_trades), ("win rate %", p.win_rate), ("profit factor", p.profit_factor),
        ("final equity", p.final_equity),
    ]
    print("performance:", file=out)
    for name, value in rows:
        print(f"  {name:<16} {_fmt(value)}", file=out)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


async def cmd_exec(args: argparse.Namespace) -> int:
    from backtest.loader import read_bars

    code = open(args.strategy, encoding="utf-8").read()
    arrays = read_bars(args.bars)
    ts = arrays.column("timestamp")
    bars = {
        "timestamp": (ts // 1_000_000).tolist(),
        **{k: arrays.column(k).tolist() for k in ("open", "high", "low", "close", "volume")},
    }
    client = await _client(args)
    try:
        result = await client.execute(code, bars, symbol=args.symbol or "", timeframe=args.timeframe or "",
                                      parameters=parse_params(args.param), timeout_ms=args.timeout_ms)
    finally:
        await client.close()
    _emit_json(result) if args.json else print_execute(result)
    return 0 if result.success else 1


async def cmd_validate(args: argparse.Namespace) -> int:
    code = open(args.strategy, encoding="utf-8").read()
    client = await _client(args)
    try:
        result = await client.validate(code)
    finally:
        await client.close()
    if args.json:
        _emit_json(result)
    elif result.valid:
        print(f"valid: {result.style} style; imports: {', '.join(result.imports) or 'none'}")
    else:
        line = f" (line {result.error.line})" if result.error.line else ""
        print(f"invalid: {result.error.code}: {result.error.message}{line}")
    return 0 if result.valid else 1


def local_liveness(path: str, max_age: float) -> int:
    """0 when this pod's node touched its heartbeat recently: alive without asking NATS."""
    import time

    try:
        age = time.time() - os.stat(path).st_mtime
    except OSError:
        print(f"no heartbeat at {path}", file=sys.stderr)
        return 1
    print(f"heartbeat {age:.1f}s old")
    return 0 if age <= max_age else 1


async def cmd_health(args: argparse.Namespace) -> int:
    if args.local:
        from .config import Settings

        return local_liveness(Settings.from_env().heartbeat_file, args.max_age)
    try:
        client = await _client(args)
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)  # CliError: one line naming the URL and the fix
        return 2
    try:
        node_id = args.node or (os.environ.get("NODE_ID") if args.ready else None)
        health = await client.health(timeout=args.timeout, node_id=node_id)
    except Exception as exc:  # noqa: BLE001
        print(f"no node answered on strategy.v1.health: {type(exc).__name__}", file=sys.stderr)
        return 2
    finally:
        await client.close()
    if args.json:
        _emit_json(health)
    else:
        print(f"{health.status}  node {health.node_id}  v{health.version}  up {health.uptime_s:.0f}s  "
              f"in flight {health.in_flight}, queued {health.queued}")
        print(f"pool: ready {health.pool.ready}, busy {health.pool.busy}, started {health.pool.started}")
        for layer in health.isolation:
            print(f"  [{'x' if layer.active else ' '}] {layer.name:<18} {layer.detail}")
    if args.ready:
        return 0 if health.status == "ok" else 1
    return 0 if health.status != "degraded" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strategy-node", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and NATS connection errors (accepted after the command too)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="serve strategy.v1.* (embedded nats-server when NATS_URL is unset)")

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
        p.add_argument("--json", action="store_true", help="print the reply as JSON")
        return p

    p = client_parser("exec", "run a strategy file over a CSV of bars")
    p.add_argument("strategy")
    p.add_argument("--bars", required=True, help="CSV with timestamp,open,high,low,close[,volume]")
    p.add_argument("--symbol")
    p.add_argument("--timeframe")
    p.add_argument("--param", action="append", metavar="KEY=VALUE")
    p.add_argument("--timeout-ms", type=int)
    p.set_defaults(func=cmd_exec)

    p = client_parser("validate", "compile and policy-check a strategy file")
    p.add_argument("strategy")
    p.set_defaults(func=cmd_validate)

    p = client_parser("health", "ask a node for its health")
    p.add_argument("--ready", action="store_true",
                   help="exit 0 only when status is ok; asks this pod's node ($NODE_ID) when set (readiness probe)")
    p.add_argument("--node", help="ask this node id only (strategy.v1.health.<id>)")
    p.add_argument("--local", action="store_true",
                   help="liveness without NATS: check this node's heartbeat file is fresh")
    p.add_argument("--max-age", type=float, default=20.0, help="with --local: seconds (default 20)")
    p.add_argument("--timeout", type=float, default=3.0)
    p.set_defaults(func=cmd_health)
    cli_jobs.register(sub)  # submit, result (durable jobs)
    cli_backtest.register(sub)  # bars load/ls, backtest
    return parser


def main(argv: list[str] | None = None) -> None:
    from . import cli_connect

    argv = list(sys.argv[1:] if argv is None else argv)
    cli_connect.debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if args.command == "run":
        from .serve import run

        sys.exit(run())
    try:
        code = asyncio.run(args.func(args))
    except FileNotFoundError as exc:
        print(f"error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        code = 2
    except BrokenPipeError:  # e.g. `strategy-node result ID | head`: the reader has had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001
        if cli_connect.debug:
            raise
        reason = cli_connect.explain(exc, cli_connect.url_of(args))
        print(f"error: {reason or f'{type(exc).__name__}: {exc}'}", file=sys.stderr)
        if reason is None:
            print("(run again with --debug for the traceback)", file=sys.stderr)
        code = 2
    sys.exit(code)
