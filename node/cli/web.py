"""`strategy-node web`: the dashboard, served over HTTP by a process that talks to the fleet only
over NATS, as each signed-in person.

    strategy-node web --insecure-local                 # against the README's embedded node
    strategy-node web --nats-url nats://nats:4222 --bind 0.0.0.0 --port 8080 --tls-cert c.pem --tls-key k.pem

People sign in with their NATS user and password (or a token). A NATS server with no
credentials configured cannot tell people apart: the dashboard refuses to start against one
unless --insecure-local, which serves 127.0.0.1 only (one anonymous local user).
"""

from __future__ import annotations

import argparse
import os

from .connect import DEFAULT_URL


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="serve the web dashboard (sign in with your NATS user)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nats-url", help=f"NATS URL (default: $NATS_URL or {DEFAULT_URL})")
    p.add_argument("--bind", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--insecure-local", action="store_true",
                   help="allow a NATS server without credentials; serves 127.0.0.1 only, no sign-in")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.set_defaults(func=cmd_web)


async def cmd_web(args: argparse.Namespace) -> int:
    import sys

    from ..web.app import StartRefused, WebSettings, serve

    if bool(args.tls_cert) != bool(args.tls_key):
        print("error: give --tls-cert and --tls-key together", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    settings = WebSettings(nats_url=args.nats_url or os.environ.get("NATS_URL") or DEFAULT_URL,
                           bind=args.bind or "127.0.0.1", port=args.port, insecure_local=args.insecure_local,
                           tls_cert=args.tls_cert, tls_key=args.tls_key)
    try:
        await serve(settings)
    except StartRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
