"""How CLI commands reach NATS, and what they tell a user when they cannot.

A command fails within about a second with one line that names the URL and what to do:
no server listening, no node serving the subject, JetStream switched off on the server.
Full tracebacks only with `--debug` (node.cli.main).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

DEFAULT_URL = "nats://127.0.0.1:4222"
START_HINT = "start a node with `strategy-node run` (it embeds a nats-server), or point --url / NATS_URL at one"
JETSTREAM_HINT = ("start nats-server with JetStream on (`nats-server -js`, or `jetstream {}` in its config); "
                  "the node's embedded server (`strategy-node run` without NATS_URL) has it on")

# Set by node.cli.main from --debug: nats-py's own connection errors are printed only then.
debug = False


class CliError(Exception):
    """A failure the CLI reports as one line (exit code 2) without a traceback."""


def url_of(args: argparse.Namespace) -> str:
    return getattr(args, "url", None) or os.environ.get("NATS_URL") or DEFAULT_URL


async def _quiet(exc: Exception) -> None:
    if debug:
        import sys
        import traceback

        traceback.print_exception(exc, file=sys.stderr)


def connect_kwargs(error_cb: Any = None) -> dict[str, Any]:
    """nats.connect options for a short-lived command: one retry, no 2-minute reconnect loop."""
    from ..nats_auth import connect_options

    return dict(connect_timeout=1.0, max_reconnect_attempts=1, reconnect_time_wait=0.2,
                error_cb=error_cb or _quiet, **connect_options(os.environ))


async def connect(args: argparse.Namespace, error_cb: Any = None):
    """A plain nats-py connection to the command's URL, or CliError saying how to get one.
    `error_cb`: the connection's asynchronous errors (e.g. a permission the server refused)."""
    import nats

    url = url_of(args)
    try:
        return await nats.connect(url, **connect_kwargs(error_cb))
    except Exception as exc:  # noqa: BLE001 - every way the first connect fails becomes one line
        raise CliError(explain(exc, url) or f"cannot reach NATS at {url}: {type(exc).__name__}: {exc}") from exc


async def require_jetstream(nc: Any, url: str) -> None:
    """CliError unless the server answers JetStream's API."""
    import nats.errors
    import nats.js.errors

    try:
        await nc.jetstream().account_info()
    except (nats.js.errors.ServiceUnavailableError, nats.errors.NoRespondersError, nats.errors.TimeoutError,
            asyncio.TimeoutError) as exc:
        raise CliError(f"this command needs JetStream, which the NATS server at {url} does not offer: "
                       f"{JETSTREAM_HINT}") from exc


def explain(exc: BaseException, url: str) -> str | None:
    """One line for a failure a user can fix, or None for one that is a bug."""
    import nats.errors
    import nats.js.errors

    if isinstance(exc, CliError):
        return str(exc)
    if isinstance(exc, (nats.errors.NoServersError, ConnectionError)):
        return f"cannot reach NATS at {url}: no server is listening there; {START_HINT}"
    if isinstance(exc, nats.errors.AuthorizationError):
        return f"NATS at {url} refused the credentials (NATS_CREDS, NATS_USER/NATS_PASSWORD, NATS_TOKEN, NATS_NKEY_SEED)"
    if isinstance(exc, nats.errors.NoRespondersError):
        return f"no node is serving at {url}; {START_HINT}"
    if isinstance(exc, (nats.js.errors.ServiceUnavailableError, nats.js.errors.NoStreamResponseError)):
        return (f"no JetStream stream answered at {url}: JetStream is off on that server, or no node has "
                f"created its streams yet. {JETSTREAM_HINT}; then start a node there")
    if isinstance(exc, (nats.errors.TimeoutError, asyncio.TimeoutError)):
        return f"no reply from a node at {url} in time; is one running? ({START_HINT})"
    if isinstance(exc, nats.errors.ConnectionClosedError):
        return f"the connection to NATS at {url} closed during the command"
    if isinstance(exc, ValueError):
        return str(exc)
    return None


def client_parser(sub: Any, name: str, help_: str) -> argparse.ArgumentParser:
    """A request command's parser with the options every one of them takes: --url and --json."""
    p = sub.add_parser(name, help=help_)
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print the reply as JSON")
    return p


async def connect_jetstream(args: argparse.Namespace, error_cb: Any = None):
    """A connection to a server with JetStream (bars, reference data and durable jobs live there), or
    one clear line why not."""
    nc = await connect(args, error_cb)
    try:
        await require_jetstream(nc, url_of(args))
    except BaseException:
        await nc.close()
        raise
    return nc


async def strategy_client(args: argparse.Namespace):
    """A StrategyClient owning a fresh fail-fast connection."""
    from ..client import StrategyClient

    return StrategyClient(await connect(args), owns_connection=True)
