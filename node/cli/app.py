"""`strategy-node`: serve, and client commands that print readable results (or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from . import backtest, bars, execute, follow, health, hosting, jobs, quotas, refdata, run, screen, secrets, validate, web
from . import connect as cli_connect
from . import deploy as deploy_cmd


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="strategy-node", description=__doc__)
    parser.add_argument("--debug", action="store_true",
                        help="show full tracebacks and NATS connection errors (accepted after the command too)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands (strategy-node COMMAND --help for each)")

    run.register(sub)  # run: its help lists every environment variable
    execute.register(sub)  # exec
    validate.register(sub)  # validate
    health.register(sub)  # health
    jobs.register(sub)  # submit, result (durable jobs)
    bars.register(sub)  # bars load/ls/publish/replay-live
    backtest.register(sub)  # backtest
    screen.register(sub)  # screen (classify_symbol over stored symbols)
    refdata.register(sub)  # refdata load (reference data for the accessors)
    hosting.register(sub)  # strategies, deployments (hosted strategies)
    deploy_cmd.register(sub)  # deploy FILE: a new version and its deployment in one step
    secrets.register(sub)  # secrets set/ls/rm/rotate (hosted strategies)
    quotas.register(sub)  # quotas (the tenant's limits of hosted objects and what it has)
    follow.register(sub)  # signals, logs --follow
    web.register(sub)  # web (the dashboard)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    cli_connect.debug = "--debug" in argv  # accepted anywhere on the line, not only before the command
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    if args.command == "run":
        from ..serve import run as serve

        sys.exit(serve())
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
