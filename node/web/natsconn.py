"""One NATS connection per signed-in person, made with THEIR credentials.

The web process holds no NATS credentials of its own: at sign-in it connects as the person (NATS
user + password, or a token), so what they may see and do is exactly what NATS lets that user
see and do, and the node keys everything by the account the server vouches for.

The tenant token (`local` on a server without accounts or for users of the node's own account,
else the account name: node/hosting/naming.py) only picks which subjects the dashboard follows
(`signals.<tenant>.…`, `strategy.logs.<tenant>.…`, `$KV.DEPLOYMENT_STATUS.<tenant>.…`); NATS
permissions decide whether that subscription is allowed. The account comes from the server
(`$SYS.REQ.USER.INFO`, answered for the user's own connection), never from a form field.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import nats
import nats.errors
from nats.aio.client import Client

from contracts import Health, decode, subjects
from node.hosting.client import HostingClient
from node.hosting.naming import LOCAL_TENANT, tenant_token
from node import nats_internals
from node.identity import GLOBAL_ACCOUNT, Caller, own_account

CONNECT_TIMEOUT_S = 3.0
INBOX_PREFIX_OF_USER = "_INBOX_{user}"  # deploy/nats/permissions.conf: each client's own inbox prefix


class SignInRefused(Exception):
    """Shown on the sign-in form (never a stack trace): NATS refused, or is not reachable."""


@dataclass(frozen=True)
class Credentials:
    user: str = ""
    password: str = ""
    token: str = ""
    inbox_prefix: str = ""

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user:
            out["user"] = self.user
            out["password"] = self.password
        elif self.token:
            out["token"] = self.token
        prefix = self.inbox_prefix or (INBOX_PREFIX_OF_USER.format(user=self.user) if self.user else "")
        if prefix:
            out["inbox_prefix"] = prefix
        return out


async def connect_as(url: str, creds: Credentials, on_error=None) -> Client:
    """A long-lived connection as the person (reconnects on its own); SignInRefused with a reason."""
    errors: list[str] = []

    async def error_cb(exc: Exception) -> None:
        errors.append(str(exc))
        if on_error is not None:
            await on_error(exc)

    try:
        # The first connect fails fast (a wrong password must not retry forever) ...
        nc = await nats.connect(url, connect_timeout=CONNECT_TIMEOUT_S, max_reconnect_attempts=-1,
                                reconnect_time_wait=1.0, allow_reconnect=False, error_cb=error_cb,
                                **creds.options())
        # ... and the live connection then reconnects for as long as the session lasts.
        nc.options["allow_reconnect"] = True
        nats_internals.tolerate_late_pongs(nc)  # a PONG after a flush's timeout must not end its read loop
        return nc
    except nats.errors.NoServersError:
        if any("authorization" in e.lower() for e in errors):
            raise SignInRefused("NATS refused these credentials") from None
        raise SignInRefused(f"NATS at {safe_url(url)} is not reachable") from None
    except Exception as exc:  # noqa: BLE001 - every way a first connect fails is a line on the form
        text = str(exc).lower()
        if "authorization" in text or any("authorization" in e.lower() for e in errors):
            raise SignInRefused("NATS refused these credentials") from None
        raise SignInRefused(f"NATS at {safe_url(url)} is not reachable") from None


async def tenant_of(nc: Client) -> tuple[str, str | None]:
    """(tenant token, account) of the connection, as the server and the node see it."""
    account = await own_account(nc)
    if account is None or account == GLOBAL_ACCOUNT:
        return LOCAL_TENANT, account
    node_account = None
    try:
        msg = await nc.request(subjects.HEALTH, b"{}", timeout=2.0)
        node_account = decode(msg.data, Health).nats_account
    except Exception:  # noqa: BLE001 - no node answering: the account is still the tenant
        pass
    if account == node_account:
        return LOCAL_TENANT, account
    return tenant_token(Caller(account=account)), account


async def server_requires_auth(url: str, timeout: float = 3.0) -> bool:
    """Whether the NATS server at `url` asks for credentials: its INFO line, read before any
    CONNECT is sent (so nothing is attempted with or without credentials)."""
    for target in url.split(","):
        parsed = urlparse(target.strip() if "://" in target else f"nats://{target.strip()}")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 4222), timeout)
        except (OSError, asyncio.TimeoutError):
            continue
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
        if line.startswith(b"INFO "):
            info = json.loads(line[5:])
            return bool(info.get("auth_required")) or parsed.username is not None
    raise SignInRefused(f"NATS at {safe_url(url)} is not reachable")


def safe_url(url: str) -> str:
    """The URL without any user:password part (it may be shown on a page or in a log)."""
    parts = []
    for target in url.split(","):
        parsed = urlparse(target.strip())
        host = parsed.hostname or ""
        parts.append(f"{parsed.scheme or 'nats'}://{host}{f':{parsed.port}' if parsed.port else ''}")
    return ",".join(parts)


async def user_nats(request: Any) -> Client:
    """The signed-in user's own NATS connection."""
    from .auth import require_user

    user = await require_user(request)
    return user.nc


async def hosting(request: Any) -> HostingClient:
    """A HostingClient over the user's connection, following the user's tenant subjects."""
    from .auth import require_user

    user = await require_user(request)
    return HostingClient(user.nc, tenant=user.tenant, timeout=10.0)

