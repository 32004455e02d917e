"""`strategy-node bars load|ls|publish|replay-live`: the bar series in the BARS stream.

    strategy-node bars load FILE.csv|FILE.parquet --symbol S --timeframe 1d
    strategy-node bars ls
    strategy-node bars publish --symbol AAPL --timeframe 1m 2024-01-02T09:30:00Z 185.1 185.4 184.9 185.2 1200
    strategy-node bars replay-live bars.csv --symbol AAPL --timeframe 1m --speed 60

`bars load` is idempotent (the bar store skips bars it already holds) and shows a progress bar.
`publish` and `replay-live` are live feeds for hosted strategies: each bar is stored as its own
chunk in BARS (backtest/store.py: idempotent, a bar already stored is skipped), which is what a
live feed looks like to the fleet: every new chunk triggers the deployments on its series once
(node/hosting/triggers.py). `replay-live` plays a CSV/Parquet file bar by bar, pausing between
bars for their time difference divided by `--speed` (or a fixed `--interval` in seconds), for
demos and tests.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec
import numpy as np

from .connect import connect_jetstream


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bars` command and its subcommands to the CLI's subparsers."""
    bars = sub.add_parser("bars", help="load and list bar series in the BARS stream")
    bars_sub = bars.add_subparsers(dest="bars_command", required=True, metavar="load|ls|publish|replay-live",
                                   title="commands", help="load: store a file of bars; ls: list the stored series")

    p = bars_sub.add_parser("load", help="store a CSV/Parquet file of bars (idempotent)")
    p.add_argument("file", help="CSV or Parquet: timestamp/date, open, high, low, close[, volume]")
    p.add_argument("--symbol", required=True, help="the series' symbol, e.g. AAPL")
    p.add_argument("--timeframe", required=True, help="e.g. 1m, 1h, 1d")
    p.add_argument("--unit", default="auto", choices=["auto", "s", "ms", "us", "ns"],
                   help="unit of numeric epoch times (default: guessed)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=cmd_bars_load)

    p = bars_sub.add_parser("ls", help="list the stored series")
    _common(p)
    p.set_defaults(func=cmd_bars_ls)

    p = bars_sub.add_parser("publish", help="store one new bar (a live feed's bar: triggers the deployments on it)")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--symbol", required=True, help="the series' symbol")
    p.add_argument("--timeframe", required=True, help="e.g. 1m, 1d")
    p.add_argument("time", help="bar time: ISO-8601 or epoch milliseconds")
    for name in ("open", "high", "low", "close"):
        p.add_argument(name, type=float, help=f"the bar's {name} price")
    p.add_argument("volume", type=float, nargs="?", default=0.0, help="the bar's volume (default 0)")
    p.set_defaults(func=cmd_publish)

    p = bars_sub.add_parser("replay-live", help="play a CSV/Parquet of bars as a live feed, bar by bar")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print a JSON summary at the end")
    p.add_argument("file", help="CSV/Parquet with timestamp,open,high,low,close[,volume]")
    p.add_argument("--symbol", required=True, help="the series' symbol")
    p.add_argument("--timeframe", required=True, help="e.g. 1m, 1d")
    p.add_argument("--speed", type=float, default=1.0,
                   help="time multiplier: bars 1 minute apart with --speed 60 come 1 second apart (default 1)")
    p.add_argument("--interval", type=float, help="a fixed pause in seconds between bars instead of --speed")
    p.add_argument("--quiet", action="store_true", help="no line per bar")
    p.set_defaults(func=cmd_replay_live)


async def cmd_bars_load(args: argparse.Namespace) -> int:
    from backtest.loader import ProgressBar, read_bars
    from backtest.store import BarStore

    arrays = read_bars(args.file, unit=args.unit)  # validated before connecting
    nc = await connect_jetstream(args)
    try:
        store = BarStore(nc.jetstream(), nc)
        bar = None if args.quiet or args.json else ProgressBar(arrays.count, f"{args.symbol} {args.timeframe}")
        try:
            report = await store.load(args.symbol, args.timeframe, arrays, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        info = await store.info(args.symbol, args.timeframe)
    finally:
        await nc.drain()
    if args.json:
        _emit({"load": report, "series": info})
    else:
        print(f"{args.symbol} {args.timeframe}: stored {report.bars:,} new bars in {report.stored_chunks:,} chunks, "
              f"skipped {report.skipped_bars:,} already stored ({report.seconds * 1000:.0f} ms); "
              f"series now {info.bars:,} bars {info.first} .. {info.last}")
    return 0


async def cmd_bars_ls(args: argparse.Namespace) -> int:
    from backtest.store import BarStore

    nc = await connect_jetstream(args)
    try:
        series = await BarStore(nc.jetstream(), nc).symbols()
    finally:
        await nc.drain()
    if args.json:
        _emit(series)
        return 0
    if not series:
        print("no series stored")
        return 0
    print(f"{'SYMBOL':<16} {'TF':<6} {'BARS':>12} {'CHUNKS':>7}  FIRST .. LAST")
    for s in series:
        print(f"{s.symbol:<16} {s.timeframe:<6} {s.bars:>12,} {s.chunks:>7,}  {s.first} .. {s.last}")
    return 0


def _emit(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")


def _one(ts_ns: int, o: float, h: float, lo: float, c: float, v: float):
    from contracts import BarArrays

    return BarArrays.from_numpy(np.array([ts_ns], dtype=np.int64), open=np.array([o]), high=np.array([h]),
                                low=np.array([lo]), close=np.array([c]), volume=np.array([v]))


async def cmd_publish(args: argparse.Namespace) -> int:
    from backtest.store import BarStore, parse_time
    from contracts import ns_to_iso

    ts = parse_time(int(args.time) if args.time.isdigit() else args.time, "time")
    bar = _one(ts, args.open, args.high, args.low, args.close, args.volume)
    nc = await connect_jetstream(args)
    try:
        report = await BarStore(nc.jetstream(), nc).load(args.symbol, args.timeframe, bar)
    finally:
        await nc.drain()
    stored = report.bars == 1
    if args.json:
        import json
        print(json.dumps({"symbol": args.symbol, "timeframe": args.timeframe, "time": ns_to_iso(ts), "stored": stored}))
    else:
        print(f"{args.symbol} {args.timeframe} {ns_to_iso(ts)}: " + ("stored" if stored else "already stored (skipped)"))
    return 0


async def cmd_replay_live(args: argparse.Namespace) -> int:
    from backtest.loader import read_bars
    from backtest.store import BarStore
    from contracts import ns_to_iso

    if args.speed <= 0:
        raise SystemExit("error: --speed must be above 0")
    if args.interval is not None and args.interval < 0:
        raise SystemExit("error: --interval must be 0 or more")
    arrays = read_bars(args.file)
    cols = {name: arrays.column(name) for name in ("timestamp", "open", "high", "low", "close", "volume")}
    nc = await connect_jetstream(args)
    stored = skipped = 0
    try:
        store = BarStore(nc.jetstream(), nc)
        ts = cols["timestamp"]
        for i in range(ts.size):
            if i:
                pause = args.interval if args.interval is not None else (int(ts[i]) - int(ts[i - 1])) / 1e9 / args.speed
                await asyncio.sleep(max(0.0, pause))
            report = await store.load(args.symbol, args.timeframe, _one(
                int(ts[i]), *(float(cols[k][i]) for k in ("open", "high", "low", "close", "volume"))))
            stored += report.bars
            skipped += report.skipped_bars
            if not args.quiet and not args.json:
                print(f"{ns_to_iso(int(ts[i]))} {args.symbol} close {float(cols['close'][i]):g}"
                      + ("" if report.bars else " (already stored)"), flush=True)
    finally:
        await nc.drain()
    if args.json:
        import json
        print(json.dumps({"symbol": args.symbol, "timeframe": args.timeframe, "stored": stored, "skipped": skipped}))
    else:
        print(f"replayed {ts.size:,} bars of {args.symbol} {args.timeframe}: {stored:,} new, {skipped:,} already stored",
              file=sys.stderr)
    return 0
