"""`strategy-node screen`: a `classify_symbol(symbol)` file over symbols from the bar store.

    strategy-node screen STRATEGY.py --symbols AAPL MSFT NVDA --timeframe 1d
        [--universe SPY ...] [--start T] [--end T] [--max-bars N] [--param k=v ...] [--json]

Prints one row per symbol: whether it passed, its bar count, and what `classify_symbol`
returned or the error it ended in. Exit 0 when the screen ran (whatever passed), 1 when it
could not run at all (bad request, compile error), 2 when NATS cannot be reached.
"""

from __future__ import annotations

import argparse
import ast
import json
from typing import Any

from contracts import ScreenRequest, ScreenResult


def defines(code: str, name: str) -> bool:
    """True when the file defines a top-level function `name` (without running it)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return False
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name
               for node in tree.body)


def symbols_of(values: list[str] | None) -> list[str]:
    """`--symbols A B`, `--symbols A,B` or both."""
    return [s for v in values or [] for s in v.replace(",", " ").split()]


def register(sub: Any) -> None:
    p = sub.add_parser("screen", help="run a classify_symbol(symbol) strategy over symbols from the bar store",
                       description="Run a raw-data strategy (def classify_symbol(symbol) -> bool) once per "
                                   "symbol over bars loaded with `strategy-node bars load`, and print a table.")
    p.add_argument("strategy", help="a .py file defining classify_symbol(symbol)")
    p.add_argument("--symbols", nargs="+", required=True, metavar="SYMBOL",
                   help="symbols to classify (space or comma separated), each stored in BARS")
    p.add_argument("--timeframe", default="1d", help="timeframe of the stored series (default 1d)")
    p.add_argument("--universe", nargs="+", metavar="SYMBOL",
                   help="more symbols the accessors may read (default: just --symbols)")
    p.add_argument("--start", help="first bar time (ISO-8601 or epoch ms), inclusive")
    p.add_argument("--end", help="last bar time, inclusive")
    p.add_argument("--max-bars", type=int, default=1000, help="at most the last N bars of each symbol (default 1000)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a strategy parameter (value parsed as JSON, else text); repeatable")
    p.add_argument("--timeout-ms", type=int, help="per symbol's run (default: the node's)")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the ScreenResult as JSON")
    p.set_defaults(func=cmd_screen)


async def screen(args: argparse.Namespace, code: str, symbols: list[str]) -> ScreenResult:
    from .connect import strategy_client
    from .inputs import parse_params
    from .backtest import _when

    fields = dict(universe=symbols_of(getattr(args, "universe", None)) or None, timeframe=args.timeframe or "1d",
                  start=_when(getattr(args, "start", None)), end=_when(getattr(args, "end", None)),
                  max_bars=getattr(args, "max_bars", 1000), parameters=parse_params(args.param),
                  timeout_ms=args.timeout_ms)
    ScreenRequest(code=code, symbols=symbols, **fields)  # a bad field fails here, before connecting
    client = await strategy_client(args)
    try:
        return await client.screen(code, symbols, **fields)
    finally:
        await client.close()


async def cmd_screen(args: argparse.Namespace) -> int:
    from .inputs import read_strategy
    from .output import _emit_json

    code = read_strategy(args.strategy)
    if not defines(code, "classify_symbol"):
        raise SystemExit(f"error: {args.strategy} defines no classify_symbol(symbol); screen runs raw-data "
                         f"strategies (`def classify_symbol(symbol): ...`); for strategy(data) or script "
                         f"files use `strategy-node exec` or `strategy-node backtest`")
    result = await screen(args, code, symbols_of(args.symbols))
    if args.json:
        _emit_json(result)
    else:
        print_screen(result, args.timeframe or "1d")
    return 0 if result.success else 1


def _cell(value: Any, width: int) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def print_screen(result: ScreenResult, timeframe: str) -> None:
    from .output import error_line

    if not result.success:
        print(f"FAILED {result.error.code}  ({result.execution_time_ms:.1f} ms)")
        print(f"  error: {error_line(result.error)}")
        return
    rows = result.results
    print(f"screened {len(rows)} symbols ({timeframe}) in {result.execution_time_ms:.1f} ms on {result.node_id}: "
          f"{len(result.passed)} passed")
    width = max([6] + [len(r.symbol) for r in rows])
    print(f"{'SYMBOL':<{width}}  {'PASSED':<6}  {'BARS':>6}  RESULT")
    for r in rows:
        passed = "yes" if r.passed else ("error" if r.error else "no")
        what = f"{r.error.code}: {error_line(r.error)}" if r.error else _cell(r.result, 60)
        print(f"{r.symbol:<{width}}  {passed:<6}  {r.bars:>6,}  {_cell(what, 100)}")
    if result.passed:
        print("passed: " + " ".join(result.passed))
    for line in result.logs[-20:]:
        print(f"  log: {line}")
