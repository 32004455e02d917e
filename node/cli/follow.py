"""`strategy-node signals DEPLOYMENT --follow` and `logs DEPLOYMENT --follow`: a deployment's live output.

    strategy-node signals sma-live --follow            # live signals of every symbol
    strategy-node logs sma-live --follow               # live run logs

`--tenant` only tells `logs`/`signals` which subjects to follow (`local` without accounts, else
the account name); the tenant is whoever the connection authenticates as (its NATS account).
"""

from __future__ import annotations

import argparse
import json

import msgspec

from contracts import Signal
from contracts.hosting import RunLogs

from .hosting import hosting_client


def register(sub: argparse._SubParsersAction) -> None:
    for name, help_ in (("signals", "follow a deployment's signals live"), ("logs", "follow a deployment's run logs live")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
        p.add_argument("--json", action="store_true", help="one JSON object per line")
        p.add_argument("deployment", help="the deployment's id")
        p.add_argument("--follow", "-f", action="store_true", required=True, help="stream them as they come (Ctrl-C stops)")
        p.add_argument("--tenant", default="local", help="your NATS account name when tenants are accounts (default: local)")
        p.set_defaults(func=cmd_follow, what=name)


async def cmd_follow(args: argparse.Namespace) -> int:
    nc, hosting = await hosting_client(args)
    try:
        if args.what == "signals":
            async for symbol, signal in hosting.follow_signals(args.deployment):
                _print_signal(args, symbol, signal)
        else:
            async for logs in hosting.follow_logs(args.deployment):
                _print_logs(args, logs)
    finally:
        await nc.close()
    return 0


def _print_signal(args: argparse.Namespace, symbol: str, signal: Signal) -> None:
    if args.json:
        print(json.dumps({"symbol": symbol, **msgspec.to_builtins(signal)}), flush=True)
    else:
        price = f" @ {signal.price:g}" if signal.price is not None else ""
        print(f"{signal.timestamp} {symbol} {signal.type}{price}" + (f"  {signal.reason}" if signal.reason else ""), flush=True)


def _print_logs(args: argparse.Namespace, logs: RunLogs) -> None:
    if args.json:
        print(msgspec.json.encode(logs).decode(), flush=True)
        return
    for line in logs.lines:
        print(f"{logs.bar_time} {logs.symbol} | {line.rstrip()}", flush=True)
