"""Names: the tenant token of a caller, Key-Value keys and subjects of hosted strategies.

The tenant is the verified NATS account of the request (node/identity.py): an account that
imported the service. A request from the node's own account, or from any client of a server
without accounts (the embedded development server), belongs to the operator's tenant `local`.
The token is used inside keys and subjects, so an account name outside [A-Za-z0-9_-] (or longer
than 64) becomes `h` + the first 32 hex digits of its SHA-256: one tenant, one token, always.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone

from contracts import subjects

from ..identity import Caller

LOCAL_TENANT = "local"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def tenant_token(caller: Caller) -> str:
    account = caller.account
    if account is None:
        return LOCAL_TENANT
    if _TOKEN.match(account) and account != LOCAL_TENANT:
        return account
    return "h" + hashlib.sha256(account.encode()).hexdigest()[:32]


def strategy_key(tenant: str, name: str, version: int) -> str:
    return f"{tenant}.{name}.{version:08d}"


def strategy_prefix(tenant: str, name: str | None = None) -> str:
    return f"{tenant}.{name}.>" if name else f"{tenant}.>"


def deployment_key(tenant: str, deployment: str) -> str:
    return f"{tenant}.{deployment}"


def run_key(tenant: str, deployment: str, run_id: str) -> str:
    return f"{tenant}.{deployment}.{run_id}"


def trigger_id(tenant: str, deployment: str, version: int, symbol: str, bar_ns: int) -> str:
    """Deployment + version + symbol + bar time: the dedupe id of a trigger (Nats-Msg-Id)."""
    return f"{tenant}.{deployment}.v{version}.{symbol}.{bar_ns}"


def run_token(trigger: str) -> str:
    """A trigger id as one KV key token (dots of symbols and the id become '_')."""
    return hashlib.sha256(trigger.encode()).hexdigest()[:24]


def signals_subject(tenant: str, deployment: str, symbol: str) -> str:
    return f"{subjects.SIGNALS}.{tenant}.{deployment}.{symbol}"


def logs_subject(tenant: str, deployment: str) -> str:
    return f"{subjects.LOGS}.{tenant}.{deployment}"


def triggers_subject(tenant: str, deployment: str) -> str:
    return f"{subjects.TRIGGERS}.{tenant}.{deployment}"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def now_iso() -> str:
    return iso_of(utc_now())


def iso_of(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
