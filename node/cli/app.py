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

from . import backtest as cli_backtest, bars as cli_live, hosting as cli_hosting, jobs as cli_jobs, refdata as cli_refdata, run as cli_run, screen as cli_screen


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
            raise SystemExit(f"error: --param takes key=value, got {item!r}")
        params[key] = _parse_value(value)
    return params


def param_hint(params: dict[str, Any]) -> str | None:
    """Why a strategy may have failed on a --param: text where a number was probably meant."""
    texts = [f"{k}={v!r}" for k, v in params.items() if isinstance(v, str)]
    if not texts:
        return None
    return (f"note: {', '.join(texts)} reached the strategy as text; --param values are read as JSON "
            f"(fast=10, ratio=0.5, on=true, xs=[1,2]), anything else stays a string")


def read_strategy(path: str) -> str:
    """A strategy file's source; a readable refusal for an empty one (before any request)."""
    with open(path, encoding="utf-8") as fh:
        code = fh.read()
    if not code.strip():
        raise SystemExit(f"error: {path} is empty: a strategy defines strategy(data), "
                         f"classify_symbol(symbol), or top-level code over df")
    return code


def error_line(error: Any) -> str:
    """An error's message with its strategy line, named once."""
    if error.line and f"line {error.line}" not in error.message:
        return f"{error.message} (line {error.line})"
    return error.message


def _url(args: argparse.Namespace) -> str:
    return args.url or os.environ.get("NATS_URL") or "nats://127.0.0.1:4222"


async def _client(args: argparse.Namespace):
    from .connect import connect
    from ..client import StrategyClient

    return StrategyClient(await connect(args), owns_connection=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def metrics_mean_something(result: ExecuteResult, last_bar: str | None = None) -> bool:
    """Backtest metrics are shown for trades, not for a lone signal on the last bar."""
    p = result.performance
    if p is None or not result.signals or not p.total_trades:
        return False
    return not (last_bar is not None and all(s.timestamp == last_bar for s in result.signals))


def print_execute(result: ExecuteResult, out=None, *, last_bar: str | None = None,
                  params: dict[str, Any] | None = None) -> None:
    out = out or sys.stdout
    status = "ok" if result.success else f"FAILED {result.error.code}"
    print(f"{status}  ({result.execution_time_ms:.2f} ms on {result.node_id})", file=out)
    if result.error:
        print(f"  error: {error_line(result.error)}", file=out)
        hint = param_hint(params or {}) if result.error.code == "RUNTIME_ERROR" else None
        if hint:
            print(f"  {hint}", file=out)
    if result.success and not result.signals and result.result is None:
        print("no signals", file=out)
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
    if metrics_mean_something(result, last_bar):
        print_performance(result.performance, out)
    elif result.signals:
        print("performance: not shown (no completed trade from one signal on the last bar; return a "
              "Series/array per bar, or use `strategy-node backtest`, for metrics)"
              if last_bar is not None and all(s.timestamp == last_bar for s in result.signals)
              else "performance: no trades from these signals", file=out)
    if result.result is not None:
        print(f"result: {json.dumps(result.result)[:500]}", file=out)
    for line in result.logs[-20:]:
        print(f"  log: {line}", file=out)


def print_performance(p: Performance, out=None) -> None:
    out = out or sys.stdout
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


CLASSIFY_NEEDS = (
    "{path} defines classify_symbol(symbol), a raw-data strategy that reads bars by symbol. Run it over "
    "stored bars with `strategy-node screen {path} --symbols SYMBOL [...] --timeframe 1d` (store them first "
    "with `strategy-node bars load FILE.csv --symbol SYMBOL --timeframe 1d`), or give exec --symbol SYMBOL "
    "(with --bars FILE.csv to use that file as SYMBOL's bars)"
)


async def cmd_exec(args: argparse.Namespace) -> int:
    from .backtest import _inline_bars
    from .screen import defines, print_screen, screen

    code = read_strategy(args.strategy)
    params = parse_params(args.param)
    classify = defines(code, "classify_symbol") and not defines(code, "strategy")
    if classify and not args.symbol:
        raise SystemExit("error: " + CLASSIFY_NEEDS.format(path=args.strategy))
    if classify and not args.bars:  # the symbol's stored bars: a one-symbol screen
        result = await screen(args, code, [args.symbol])
        _emit_json(result) if args.json else print_screen(result, args.timeframe or "1d")
        return 0 if result.success and not result.results[0].error else 1
    if not args.bars:
        raise SystemExit("error: exec needs --bars FILE.csv (timestamp,open,high,low,close[,volume]); "
                         "for bars already in the store use `strategy-node backtest FILE --symbol S`")
    timeframe = args.timeframe or ("1d" if classify else "")
    client = await _client(args)  # first: with no server, say so before reading a large file
    try:
        bars = _inline_bars(args.bars)
        result = await client.execute(code, bars, symbol=args.symbol or "", timeframe=timeframe,
                                      parameters=params, timeout_ms=args.timeout_ms)
    finally:
        await client.close()
    if args.json:
        _emit_json(result)
        return 0 if result.success else 1
    from contracts import ns_to_iso, to_epoch_ns

    last_bar = ns_to_iso(int(to_epoch_ns(bars.timestamp[-1:])[0])) if bars.timestamp else None
    print_execute(result, last_bar=last_bar, params=params)
    if classify and result.success:
        verdict = "passes" if result.result else "does not pass"
        print(f"classify_symbol({args.symbol!r}) returned {json.dumps(result.result)}: {args.symbol} {verdict}")
    return 0 if result.success else 1


async def cmd_validate(args: argparse.Namespace) -> int:
    code = read_strategy(args.strategy)
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
        print(f"invalid: {result.error.code}: {error_line(result.error)}")
    return 0 if result.valid else 1


def local_liveness(path: str, max_age: float) -> int:
    """0 when this pod's node is alive: its heartbeat is fresh and it is on NATS (or has been
    off it for less than NATS_DISCONNECTED_EXIT_SECONDS). Reads only the file; never NATS."""
    from ..connectivity import check_heartbeat

    alive, why = check_heartbeat(path, max_age)
    print(why, file=sys.stdout if alive else sys.stderr)
    return 0 if alive else 1


async def cmd_health(args: argparse.Namespace) -> int:
    if args.local:
        from ..config import Settings

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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (strategy-node COMMAND --help for each)")

    cli_run.register(sub)  # run: its help lists every environment variable

    def client_parser(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
        p.add_argument("--json", action="store_true", help="print the reply as JSON")
        return p

    p = client_parser("exec", "run a strategy file over a CSV of bars (any of the three styles)")
    p.add_argument("strategy", help="a .py file: strategy(data), script code over df, or classify_symbol(symbol)")
    p.add_argument("--bars", help="CSV/Parquet with timestamp,open,high,low,close[,volume] (required, except "
                                  "for a classify_symbol file given --symbol: then the stored bars)")
    p.add_argument("--symbol", help="the bars' symbol (what classify_symbol receives; its stored series without --bars)")
    p.add_argument("--timeframe", help="the bars' timeframe, e.g. 1d (default 1d for classify_symbol)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a strategy parameter (value parsed as JSON, else text); repeatable")
    p.add_argument("--timeout-ms", type=int, help="wall-clock limit of the run (default: the node's)")
    p.set_defaults(func=cmd_exec)

    p = client_parser("validate", "compile and policy-check a strategy file")
    p.add_argument("strategy", help="a .py strategy file")
    p.set_defaults(func=cmd_validate)

    p = client_parser("health", "ask a node for its health")
    p.add_argument("--ready", action="store_true",
                   help="exit 0 only when status is ok; asks this pod's node ($NODE_ID) when set (readiness probe)")
    p.add_argument("--node", help="ask this node id only (strategy.v1.health.<id>)")
    p.add_argument("--local", action="store_true",
                   help="liveness without asking NATS: this node's heartbeat file is fresh and says it is "
                        "connected (or disconnected for less than NATS_DISCONNECTED_EXIT_SECONDS)")
    p.add_argument("--max-age", type=float, default=20.0, help="with --local: seconds (default 20)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for a reply (default 3)")
    p.set_defaults(func=cmd_health)
    cli_jobs.register(sub)  # submit, result (durable jobs)
    cli_backtest.register(sub)  # bars load/ls, backtest
    cli_screen.register(sub)  # screen (classify_symbol over stored symbols)
    cli_refdata.register(sub)  # refdata load (reference data for the accessors)
    cli_live.register(sub)  # bars publish / replay-live (live feeds)
    cli_hosting.register(sub)  # strategies, deployments, signals, logs (hosted strategies)
    return parser


def main(argv: list[str] | None = None) -> None:
    from . import connect as cli_connect

    argv = list(sys.argv[1:] if argv is None else argv)
    cli_connect.debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if args.command == "run":
        from ..serve import run

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
