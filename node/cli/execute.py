"""`strategy-node exec`: run a strategy file over a CSV of bars (any of the three styles)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .connect import strategy_client, client_parser
from .inputs import parse_params, read_strategy
from .output import _emit_json, print_execute


def register(sub: Any) -> None:
    p = client_parser(sub, "exec", "run a strategy file over a CSV of bars (any of the three styles)")
    p.add_argument("strategy", help="a .py file: strategy(data), script code over df, or classify_symbol(symbol)")
    p.add_argument("--bars", help="CSV/Parquet with timestamp,open,high,low,close[,volume] (required, except "
                                  "for a classify_symbol file given --symbol: then the stored bars)")
    p.add_argument("--symbol", help="the bars' symbol (what classify_symbol receives; its stored series without --bars)")
    p.add_argument("--timeframe", help="the bars' timeframe, e.g. 1d (default 1d for classify_symbol)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="a strategy parameter (value parsed as JSON, else text); repeatable")
    p.add_argument("--timeout-ms", type=int, help="wall-clock limit of the run (default: the node's)")
    p.set_defaults(func=cmd_exec)


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
    client = await strategy_client(args)  # first: with no server, say so before reading a large file
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
