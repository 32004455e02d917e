"""`strategy-node deploy FILE`: one command from a strategy file to a running deployment.

    strategy-node deploy sma.py --symbols AAPL,MSFT --timeframe 1m
    strategy-node deploy sma.py --symbols AAPL --timeframe 1m --schedule "open+5m" --session XNYS
    strategy-node deploy orb.py --symbols RELIANCE --timeframe 5m --schedule "0 */5 9-15 * * MON-FRI" \\
        --tz Asia/Kolkata --session XNSE --window 09:20-15:10 --env MODE=paper --secret BROKER_KEY

FILE becomes a new version of strategy `--name` (default: the file's stem); deployment `--id`
(default: the strategy's name) is created on it, or moved to it when it exists (then only the
options given change). One request, `strategy.v1.deployments.deploy`: every option is checked
before the version is stored.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .hosting import _common, _deployment_fields, _emit, _options, hosting_call


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="upload a strategy file as a new version and (re)deploy it in one step")
    _common(p)
    p.add_argument("file", help="a .py strategy file")
    p.add_argument("--name", help="the strategy's name (default: the file's stem)")
    p.add_argument("--id", dest="deployment_id", help="the deployment's id (default: the strategy's name)")
    p.add_argument("--description", default="", help="a note kept with this version")
    p.add_argument("--symbols", help="comma-separated (required for a new deployment)")
    p.add_argument("--timeframe", help="the bars' timeframe, e.g. 1m, 1d (required for a new deployment)")
    _options(p, create=True)
    p.set_defaults(func=cmd_deploy)


async def cmd_deploy(args: argparse.Namespace) -> int:
    from .inputs import read_strategy

    code = read_strategy(args.file)
    name = args.name or Path(args.file).stem
    try:
        fields = _deployment_fields(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    reply, failed = await hosting_call(args, lambda hosting: hosting.deploy(
        code, strategy=name, id=args.deployment_id, description=args.description, **fields))
    if failed:
        return failed
    if args.json:
        _emit(reply)
        return 0
    d, s = reply.deployment, reply.status
    print(f"{d.strategy} version {reply.strategy_version} stored; deployment {d.id} "
          f"{'created' if d.change == 'deploy' and d.created_at == d.updated_at else 'updated'}: "
          f"{','.join(d.symbols)} {d.timeframe}, desired {d.desired}"
          + (f"; schedule {d.schedule!r}" + (f" ({d.tz})" if d.tz else "") + (f", window {d.window}" if d.window else "")
             + (f", session {d.session}" if d.session else "") + f"; next fire {(s.next_fire if s else None) or '-'}"
             if d.schedule else ""))
    if reply.dropped_versions:  # the retention of MAX_VERSIONS_PER_STRATEGY, said where it happens
        print(f"dropped old version(s) {', '.join(map(str, reply.dropped_versions))} of {d.strategy}: "
              "no deployment ran them")
    return 0
