"""`python -m bench [--quick|--tiny] [--json out.json] [--nats-url URL] [--node-pid PID]`.

Besides the node's cases: the in-process INSECURE BASELINE (bench/inprocess.py) in one and two
processes, the fork floor (bench/forkfloor.py), open-loop latency at fixed arrival rates
(bench/openloop.py) and issue 18's targets as ratios to those baselines (bench/ratios.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from contracts import subjects

from .profiles import PROFILES


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="fewer iterations, smaller backtests (about 2-3 min)")
    size.add_argument("--tiny", action="store_true", help="smoke-test sizes (numbers mean nothing)")
    p.add_argument("--json", metavar="PATH", help="write the full result as JSON here")
    p.add_argument("--nats-url", help="target a running node through this broker instead of starting one")
    p.add_argument("--node-pid", type=int, help="with --nats-url: the node's pid, to find its zygote for "
                                                 "memory and CPU figures")
    p.add_argument("--encoding", choices=("json", "msgpack"), default="json")
    p.add_argument("--node-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the node started by the bench (e.g. MAX_WORKERS=8)")
    p.add_argument("--case", action="append", dest="cases", metavar="NAME",
                   help="run only these cases (repeatable); echo is always run. Also: inprocess (the four "
                        "in-process baseline cases), forkfloor, openloop (open-loop rows of the cases run), "
                        "saturation (the warm cases and the two-process baseline interleaved at their best "
                        "concurrency)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    profile = PROFILES["quick" if args.quick else "tiny" if args.tiny else "full"]
    if args.nats_url and not args.nats_url.startswith(("nats://127.0.0.1", "nats://localhost", "127.0.0.1",
                                                       "localhost")):
        print("refusing: the bench runs bounded load loops against 127.0.0.1 only", file=sys.stderr)
        return 2
    node_env = {}
    for item in args.node_env:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--node-env takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        node_env[key] = value
    only = tuple(dict.fromkeys(["echo", *args.cases])) if args.cases else None

    from .report import render
    from .runner import run

    encoding = subjects.MSGPACK if args.encoding == "msgpack" else subjects.JSON
    coro = run(profile, nats_url=args.nats_url, node_pid=args.node_pid, encoding=encoding,
               node_env=node_env, only=only, log=lambda s: print(s, file=sys.stderr, flush=True))
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        import asyncio

        result = asyncio.run(coro)
    else:
        result = uvloop.run(coro)
    print(render(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
        print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
