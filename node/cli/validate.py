"""`strategy-node validate`: compile and policy-check a strategy file on a node."""

from __future__ import annotations

import argparse
from typing import Any

from .connect import strategy_client, client_parser
from .inputs import read_strategy
from .output import _emit_json, error_line


def register(sub: Any) -> None:
    p = client_parser(sub, "validate", "compile and policy-check a strategy file")
    p.add_argument("strategy", help="a .py strategy file")
    p.set_defaults(func=cmd_validate)


async def cmd_validate(args: argparse.Namespace) -> int:
    code = read_strategy(args.strategy)
    client = await strategy_client(args)
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
