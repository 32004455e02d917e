"""`strategy-node strategies ...` and `deployments ...`: hosted strategies (signals/logs: follow.py).

    strategy-node strategies put sma sma.py            # a new version, validated like `validate`
    strategy-node strategies ls | get NAME [--version N] | versions NAME | rm NAME
    strategy-node deployments create sma-live --strategy sma --symbols AAPL,MSFT --timeframe 1m
    strategy-node deployments ls | get ID | runs ID | history ID | pause ID | resume ID | stop ID | run ID | rm ID
    strategy-node deployments update ID [--version N] [--lookback N] [--param k=v ...] [--overlap skip]
    strategy-node deploy FILE --symbols AAPL --timeframe 1m [...]   # node/cli/deploy.py

The tenant is whoever the connection authenticates as (its NATS account).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Awaitable, Callable

import msgspec


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")


def register(sub: argparse._SubParsersAction) -> None:
    st = sub.add_parser("strategies", help="the strategy registry: put, ls, get, versions, rm")
    st_sub = st.add_subparsers(dest="strategies_command", required=True, metavar="put|ls|get|versions|rm")
    p = st_sub.add_parser("put", help="upload a strategy file as a new version (validated first)")
    _common(p)
    p.add_argument("name", help="the strategy's name (1-64 of A-Z a-z 0-9 _ -)")
    p.add_argument("file", help="a .py strategy file")
    p.add_argument("--description", default="", help="a note kept with this version")
    p.set_defaults(func=cmd_strategies, op="put")
    p = st_sub.add_parser("ls", help="list your strategies")
    _common(p)
    p.set_defaults(func=cmd_strategies, op="list")
    for name, op, help_ in (("get", "get", "print a version's source (default: the latest)"),
                            ("versions", "versions", "list a strategy's versions"),
                            ("rm", "delete", "delete a strategy and all its versions")):
        p = st_sub.add_parser(name, help=help_)
        _common(p)
        p.add_argument("name", help="the strategy's name")
        if name == "get":
            p.add_argument("--version", type=int, help="this version (default: the latest)")
        p.set_defaults(func=cmd_strategies, op=op)

    dp = sub.add_parser("deployments", help="deployments: create, ls, get, update, pause, resume, stop, run, runs, "
                        "history, rm")
    dp_sub = dp.add_subparsers(dest="deployments_command", required=True,
                               metavar="create|ls|get|update|pause|resume|stop|run|runs|history|rm")
    p = dp_sub.add_parser("create", help="deploy a strategy version on symbols x a timeframe")
    _common(p)
    p.add_argument("id", help="the deployment's id (1-64 of A-Z a-z 0-9 _ -)")
    p.add_argument("--strategy", required=True, help="a strategy name from `strategies ls`")
    p.add_argument("--version", type=int, help="default: the latest")
    p.add_argument("--symbols", required=True, help="comma-separated")
    p.add_argument("--timeframe", required=True, help="the bars' timeframe, e.g. 1m, 1d")
    _options(p, create=True)
    p.set_defaults(func=cmd_deployments, op="create")
    p = dp_sub.add_parser("update", help="change a deployment (only the options given)")
    _common(p)
    p.add_argument("id", help="the deployment's id")
    p.add_argument("--version", type=int, help="move it to this version of its strategy")
    p.add_argument("--symbols", help="comma-separated")
    p.add_argument("--timeframe", help="run on this timeframe's bars instead")
    _options(p, create=False)
    p.set_defaults(func=cmd_deployments, op="update")
    p = dp_sub.add_parser("ls", help="status of every deployment at a glance")
    _common(p)
    p.set_defaults(func=cmd_deployments, op="list")
    for name, op, help_ in (("get", "get", "a deployment and its status"), ("pause", "pause", "stop running on new bars"),
                            ("resume", "resume", "run on new bars again"), ("stop", "stop", "stop (run-now refused too)"),
                            ("run", "run", "run once now on each symbol's newest bar"),
                            ("runs", "runs", "recent run records"),
                            ("history", "history", "who changed what and when (version, desired state, schedule, ...)"),
                            ("state", "state", "the strategy's current `state`, per symbol"),
                            ("logs", "logs", "its last log lines, newest last (live: `strategy-node logs ID -f`)"),
                            ("rm", "delete", "delete it, its status and queued triggers")):
        p = dp_sub.add_parser(name, help=help_)
        _common(p)
        p.add_argument("id", help="the deployment's id")
        if name == "runs":
            p.add_argument("--limit", type=int, default=20, help="the newest N records (default 20)")
        if name == "history":
            p.add_argument("--limit", type=int, help="the newest N changes (default: every one kept, up to 64)")
        if name == "state":
            p.add_argument("--symbol", help="only this symbol's state (default: every symbol)")
        if name == "logs":
            p.add_argument("-n", "--lines", type=int, default=100, dest="limit", help="the last N lines (default 100)")
        p.set_defaults(func=cmd_deployments, op=op)


def _options(p: argparse.ArgumentParser, create: bool) -> None:
    p.add_argument("--lookback", type=int, help="bars handed to each run" + (" (default 500)" if create else ""))
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="a strategy parameter (JSON value); repeatable")
    p.add_argument("--timeout-ms", type=int, help="wall-clock limit of each run (default: the node's)")
    p.add_argument("--memory-mb", type=int, help="memory limit of each run (default: the node's)")
    p.add_argument("--overlap", choices=("skip", "queue_one", "allow"),
                   help="a new bar while the previous run goes on" + (" (default skip)" if create else ""))
    p.add_argument("--warm", action="store_true", default=None,
                   help="reuse a warm sandbox worker of this deployment's own (nodes need TENANT_WARM_RUNS > 0)")
    p.add_argument("--schedule", help='run on a schedule instead of every new bar: a 6-field cron '
                   '("0 */5 9-15 * * MON-FRI"), "@every 5m", "@at 2026-12-01T09:15:00Z", or an offset from '
                   'the --session\'s open or close ("open+5m", "close-10m")' + ("" if create else '; "" removes it'))
    p.add_argument("--tz", help="the schedule's IANA time zone, e.g. Asia/Kolkata (default UTC)")
    p.add_argument("--window", help='only fire between these times of day, in the schedule\'s zone: '
                   '"09:20-15:10", "MON-FRI 09:20-15:10"' + ("" if create else '; "" removes it'))
    p.add_argument("--session", help="fire only while this exchange is in session, not on its holidays "
                   "(exchange_calendars MIC: XNYS, XNAS, XLON, XBOM or XNSE for NSE/BSE, ...)"
                   + ("" if create else '; "" removes it'))
    p.add_argument("--catchup", type=int, dest="catchup_s", metavar="SECONDS",
                   help="skip (and record) a fire older than this when taken" + (" (default 300)" if create else ""))
    p.add_argument("--env", action="append", metavar="KEY=VALUE",
                   help="a plain environment value, read-only `env` in the strategy; repeatable"
                   + ("" if create else " (replaces the whole mapping)"))
    p.add_argument("--secret", action="append", dest="secret_names", metavar="NAME",
                   help="hand this secret (`secrets set`) to each run as read-only `secrets`; repeatable"
                   + ("" if create else " (replaces the list)"))
    if create:
        p.add_argument("--paused", action="store_true", help="create it paused")


async def hosting_client(args: argparse.Namespace):
    from .connect import connect
    from ..hosting.client import HostingClient

    nc = await connect(args)
    return nc, HostingClient(nc, tenant=getattr(args, "tenant", "local"))


async def hosting_call(args: argparse.Namespace, call: Callable[[Any], Awaitable[Any]]) -> tuple[Any, int]:
    """(the reply, 0) of `call(hosting_client)` on a connection of its own, or (None, the exit
    code) after printing why: 1 for the node's refusal (its code and message), 2 for a request
    this side found malformed."""
    from ..hosting.client import HostingError

    nc, hosting = await hosting_client(args)
    try:
        return await call(hosting), 0
    except HostingError as exc:
        return None, _fail(exc.error)
    except (msgspec.ValidationError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None, 2
    finally:
        await nc.drain()


def _emit(obj: Any) -> None:
    print(msgspec.json.encode(obj).decode())


def _fail(error: Any) -> int:
    print(f"error: {error.code}: {error.message}", file=sys.stderr)
    return 1


async def cmd_strategies(args: argparse.Namespace) -> int:
    from .inputs import read_strategy

    code = read_strategy(args.file) if args.op == "put" else None

    async def call(hosting: Any) -> Any:
        if args.op == "put":
            return await hosting.put_strategy(args.name, code, args.description)
        if args.op == "list":
            return await hosting.list_strategies()
        if args.op == "get":
            return await hosting.get_strategy(args.name, args.version)
        if args.op == "versions":
            return await hosting.strategy_versions(args.name)
        return await hosting.delete_strategy(args.name)

    reply, failed = await hosting_call(args, call)
    if failed:
        return failed
    if args.json:
        _emit(reply)
    elif args.op == "put":
        print(f"{reply.strategy.name} version {reply.strategy.version} stored ({reply.strategy.style} style)")
        if reply.dropped_versions:  # the retention of MAX_VERSIONS_PER_STRATEGY, said where it happens
            print(f"dropped old version(s) {', '.join(map(str, reply.dropped_versions))}: no deployment ran them")
    elif args.op == "list":
        print(f"{'NAME':<24} {'LATEST':>6} {'VERSIONS':>8}  STYLE     CREATED")
        for s in reply.strategies:
            print(f"{s.name:<24} {s.latest:>6} {s.versions:>8}  {s.style:<9} {s.created_at}")
    elif args.op == "get":
        sys.stdout.write(reply.strategy.code)
    elif args.op == "versions":
        for v in reply.versions:
            print(f"v{v.version:<4} {v.created_at}  {v.style:<9} {v.description}")
    else:
        print(f"{args.name} deleted")
    return 0


def _deployment_fields(args: argparse.Namespace) -> dict[str, Any]:
    from .inputs import parse_params

    fields: dict[str, Any] = {}
    for name in ("version", "lookback", "timeout_ms", "memory_mb", "overlap", "warm", "schedule", "tz", "catchup_s",
                 "session", "window", "timeframe"):
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    if getattr(args, "symbols", None):
        fields["symbols"] = [s.strip() for s in args.symbols.split(",") if s.strip()]
    if args.param:
        fields["parameters"] = parse_params(args.param)
    if getattr(args, "paused", False):
        fields["desired"] = "paused"
    if getattr(args, "env", None):
        env = {}
        for item in args.env:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--env {item!r}: give KEY=VALUE")
            env[key] = value
        fields["env"] = env
    if getattr(args, "secret_names", None):
        fields["secrets"] = list(args.secret_names)
    return fields


async def cmd_deployments(args: argparse.Namespace) -> int:
    async def call(hosting: Any) -> Any:
        if args.op == "create":
            fields = _deployment_fields(args)
            return await hosting.create_deployment(args.id, strategy=args.strategy, symbols=fields.pop("symbols"),
                                                   timeframe=fields.pop("timeframe"), **fields)
        if args.op == "update":
            return await hosting.update_deployment(args.id, **_deployment_fields(args))
        if args.op == "history":
            return await hosting.history(args.id, args.limit or 64)
        return await hosting.deployment(args.op, getattr(args, "id", None), getattr(args, "limit", None),
                                        symbol=getattr(args, "symbol", None))

    reply, failed = await hosting_call(args, call)
    if failed:
        return failed
    if args.json:
        _emit(reply)
        return 0
    if args.op == "list":
        print(f"{'ID':<20} {'STRATEGY':<20} {'SYMBOLS':<20} {'TF':<5} {'STATE':<8} {'RUNS':>6} {'ERR':>4} {'SIG':>5}  "
              f"{'NEXT FIRE':<25}  LAST RUN")
        for view in reply.deployments:
            d, s = view.deployment, view.status
            last = s.last_run if s else None
            print(f"{d.id:<20} {f'{d.strategy}@v{d.version}':<20} {','.join(d.symbols)[:20]:<20} {d.timeframe:<5} "
                  f"{(s.state if s else d.desired):<8} {(s.runs if s else 0):>6} {(s.errors if s else 0):>4} "
                  f"{(s.signals if s else 0):>5}  {((s.next_fire if s else None) or '-'):<25}  "
                  + (f"{last.bar_time} {last.symbol} {last.status}" if last else "-"))
    elif args.op == "history":
        print_history(reply.history)
    elif args.op == "runs":
        for r in reply.runs:
            signal = r.signal.type if r.signal else "-"
            error = f" {r.error.code}: {r.error.message}" if r.error else ""
            print(f"{r.bar_time} {r.symbol:<10} {r.status:<7} {signal:<5} {r.duration_ms:8.1f} ms {r.node_id}{error}")
    elif args.op == "state":
        for symbol, state in reply.states.items():
            print(f"{symbol}: {msgspec.json.encode(state).decode()}")
        for symbol in reply.states_omitted:
            print(f"{symbol}: (too large to list with the others: --symbol {symbol})")
        if not reply.states and not reply.states_omitted:
            print(f"{args.id}: no state stored yet")
    elif args.op == "logs":
        if reply.logs_truncated:
            print("(older lines left out to fit the message size)")
        for logs in reply.logs:
            for line in logs.lines:
                print(f"{logs.bar_time} {logs.symbol} | {line.rstrip()}")
    elif args.op == "run":
        print(f"{args.id}: triggered ({reply.run_id})")
    elif args.op == "delete":
        print(f"{args.id} deleted")
    else:
        d, s = reply.deployment, reply.status
        print(f"{d.id}: {d.strategy}@v{d.version} on {','.join(d.symbols)} {d.timeframe}, lookback {d.lookback}, "
              f"overlap {d.overlap}, desired {d.desired}" + (f"; state {s.state}, {s.runs} runs, {s.errors} errors, "
                                                               f"{s.signals} signals" if s else ""))
        if d.schedule:
            print(f"  schedule {d.schedule!r} ({d.tz or 'UTC'}), catch-up {d.catchup_s}s"
                  + (f", window {d.window}" if d.window else "") + (f", session {d.session}" if d.session else "")
                  + f"; next fire {(s.next_fire if s else None) or '-'}"
                  + (f"; {s.fires_outside} fires outside ({s.fire_note})" if s and s.fires_outside else ""))
    return 0


def print_history(changes: list[Any]) -> None:
    """One line per revision: the version, desired state and schedule spelled out, other changed
    fields by name (a create names only those three)."""
    print(f"{'REV':>4}  {'AT':<24}  {'BY':<16}  {'CHANGE':<7}  WHAT")
    before = None
    for c in changes:
        d = c.deployment
        shown = {"version": f"v{d.version}", "desired": d.desired,
                 "schedule": (repr(d.schedule) + (f" {d.tz}" if d.tz else "")) if d.schedule else "none"}
        fields = list(shown) if before is None else c.changed
        what = [f"{f}={shown[f]}" if f in shown else f for f in fields]
        print(f"{c.revision:>4}  {c.at:<24}  {c.by[:16]:<16}  {c.change:<7}  {', '.join(what) or '-'}")
        before = d
