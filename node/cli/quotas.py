"""`strategy-node quotas`: the calling tenant's quotas of hosted objects (contracts/quotas.py).

    strategy-node quotas          # each limit, what you have now, and what a create at the limit meets
    strategy-node quotas --json   # the QuotaReply
"""

from __future__ import annotations

import argparse

from .hosting import _common, _emit, hosting_call

AT_LIMIT = {"refused": "a new one is refused",
            "oldest_unused_dropped": "the oldest versions no deployment runs are dropped"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quotas", help="your quotas of hosted objects and what you have now")
    _common(p)
    p.set_defaults(func=cmd_quotas)


async def cmd_quotas(args: argparse.Namespace) -> int:
    reply, failed = await hosting_call(args, lambda hosting: hosting.quotas())
    if failed:
        return failed
    if args.json:
        _emit(reply)
        return 0
    print(f"tenant {reply.tenant}")
    print(f"{'QUOTA':<22} {'USED':>8} {'LIMIT':>8}  {'SETTING':<28} AT THE LIMIT")
    for q in reply.quotas:
        print(f"{q.name:<22} {q.used:>8} {q.limit:>8}  {q.setting:<28} {AT_LIMIT.get(q.at_limit, q.at_limit)}"
              + (f" (most: {q.strategy})" if q.strategy else ""))
    return 0
