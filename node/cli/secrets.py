"""`strategy-node secrets set|ls|rm|rotate`: the tenant's encrypted secrets (node/hosting/secrets.py).

    strategy-node secrets set API_KEY --from-env BROKER_API_KEY   # the value from that variable
    strategy-node secrets set API_KEY --from-file key.txt          # ... or a file (or stdin)
    strategy-node secrets ls                                       # names and key ids, never values
    strategy-node secrets rm API_KEY
    strategy-node secrets rotate                                   # re-encrypt under the newest key

A value is never taken from the command line (it would show in `ps` and shell history).
"""

from __future__ import annotations

import argparse
import os
import sys

from .hosting import _common, _emit, hosting_call


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("secrets", help="encrypted secrets for deployments: set, ls, rm, rotate")
    sp_sub = sp.add_subparsers(dest="secrets_command", required=True, metavar="set|ls|rm|rotate")
    p = sp_sub.add_parser("set", help="create or replace a secret (value from --from-env, --from-file or stdin)")
    _common(p)
    p.add_argument("name", help="the secret's name (A-Z a-z 0-9 _, not starting with a digit)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--from-env", metavar="VAR", help="read the value from this environment variable")
    src.add_argument("--from-file", metavar="PATH", help="read the value from this file (one trailing newline dropped)")
    p.set_defaults(func=cmd_secrets, op="put")
    p = sp_sub.add_parser("ls", help="list your secrets: names and key ids only")
    _common(p)
    p.set_defaults(func=cmd_secrets, op="list")
    p = sp_sub.add_parser("rm", help="delete a secret (refused while a deployment names it)")
    _common(p)
    p.add_argument("name", help="the secret's name")
    p.set_defaults(func=cmd_secrets, op="delete")
    p = sp_sub.add_parser("rotate", help="re-encrypt your secrets under the nodes' newest key")
    _common(p)
    p.set_defaults(func=cmd_secrets, op="rotate")


def _value(args: argparse.Namespace) -> str:
    if args.from_env:
        value = os.environ.get(args.from_env)
        if value is None:
            raise ValueError(f"--from-env {args.from_env}: that environment variable is not set")
        return value
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as fh:
            text = fh.read()
    else:
        text = sys.stdin.read()
    return text[:-1] if text.endswith("\n") else text


async def cmd_secrets(args: argparse.Namespace) -> int:
    try:
        value = _value(args) if args.op == "put" else None
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    async def call(hosting):
        if args.op == "put":
            return await hosting.set_secret(args.name, value)
        if args.op == "list":
            return await hosting.list_secrets()
        if args.op == "delete":
            return await hosting.delete_secret(args.name)
        return await hosting.rotate_secrets()

    reply, failed = await hosting_call(args, call)  # a malformed name or empty value: exit 2
    if failed:
        return failed
    if args.json:
        _emit(reply)
    elif args.op == "put":
        print(f"{reply.secret.name} stored (encrypted under key {reply.secret.key_id})")
    elif args.op == "list":
        print(f"{'NAME':<32} {'KEY':<12} UPDATED")
        for s in reply.secrets:
            print(f"{s.name:<32} {s.key_id:<12} {s.updated_at}")
    elif args.op == "delete":
        print(f"{args.name} deleted")
    else:
        print(f"{reply.rotated} secret(s) re-encrypted under the newest key")
    return 0
