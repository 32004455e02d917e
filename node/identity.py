"""Who sent a request: the tenant identity that the NATS server vouches for.

Everything the node keys by tenant (warm workers, sandbox/warm.py) uses a `Tenant` built here,
never a body field alone.

Requests (core request-reply). When a tenant's account imports the node's service, nats-server
stamps header `Nats-Request-Info` on each request: JSON with `acc` (the importing account),
and, when the import has `share: true`, `user` and other connection details. What the server
does with a header the client sent itself (nats-server `processServiceImport` in
server/client.go, checked against nats-server 2.15 by tests/deploy/test_tenant_identity.py):

* across a service import from a client connection the server builds the header from the
  authenticated connection and *replaces* any client-supplied one, so a forged
  `{"acc": "TENANT_B"}` from account TENANT_A arrives as `{"acc": "TENANT_A", ...}`; the
  request's reply subject becomes `_R_.<id>.<id>` in the node's account;
* inside one account nothing is rewritten: a client of the node's own account can publish any
  header, and it arrives untouched;
* but no client can publish with a reply subject starting `_R_.`: the server reserves that
  prefix for service-import replies and answers "Permissions Violation for Publish with Reply
  of _R_..." (`isReservedReply` in server/client.go), whatever the client's permissions.

So the header is trusted only when the request came through an import, which its `_R_.` reply
subject proves, and it names an account other than the node's own. As a second guard the node
asks the server at start which account it is in (`$SYS.REQ.USER.INFO`): on a server without
accounts (account `$G`, e.g. the embedded development server, where nothing can be imported) or
when it cannot tell, nothing is verified. deploy/nats/permissions.conf also keeps the node's
account closed: account STRATEGY holds only the node and the loader, only the node may publish
request subjects there, and tenants live in accounts of their own. A request without a
verified identity (no header, an inbox reply, a malformed header) never reaches a warm worker,
whatever `user_id` it carries, unless the operator sets TRUST_BODY_USER_ID for a closed
network, which Health reports (`trust_body_user_id`).

Durable jobs. JetStream drops `Nats-Request-Info` from stored messages, so the tenant travels
in the subject: a tenant publishes `strategy.jobs.<kind>` and its import maps that to
`strategy.jobs.<account>.<kind>` of an export with `account_token_position`, which the server
checks against the importing account (importing another account's token is refused when the
config loads). `strategy.jobs.<kind>` (one token after the prefix) comes from the node's own
account: no verified tenant. The same own-account rule applies: on a server without accounts
anyone could publish `strategy.jobs.<any name>.<kind>`, so nothing is verified there.

Within a verified account, the body's `user_id` only narrows the key (a platform account
keeps its end users apart); it never reaches across accounts.

With decentralized auth (operator/JWT) `acc` and the subject token are the account's public key.
The `_R_.` reservation binds client connections; a leaf node connection bound to the node's
account is trusted like a user of that account (nats-server replaces the header a leaf forwards
on an import, but a leaf server is the operator's to trust).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Mapping, NamedTuple

import msgspec

from contracts import subjects

from .nats_auth import RESPONSE_PREFIX

REQUEST_INFO = subjects.REQUEST_INFO_HEADER
MAX_INFO_BYTES = 16_384  # the server's header is a few hundred bytes (a JWT with share: more)
MAX_NAME = 256


class Tenant(NamedTuple):
    """What warm workers are keyed by. `account` is "" only for a trusted body `user_id`."""

    account: str
    user: str
    user_id: str


class _RequestInfo(msgspec.Struct, kw_only=True):
    acc: str = ""
    user: str = ""


_info_decoder = msgspec.json.Decoder(_RequestInfo)


def _name(value: str) -> str | None:
    if not value or len(value) > MAX_NAME or not value.isprintable():
        return None
    return value


@dataclass(frozen=True)
class Caller:
    """The sender of one request or job as far as NATS proves it."""

    account: str | None = None  # verified NATS account; None: not verified
    user: str | None = None  # verified NATS user (imports with share: true)
    trust_body: bool = False  # TRUST_BODY_USER_ID: the operator vouches for body user ids

    @property
    def verified(self) -> bool:
        return self.account is not None

    def tenant(self, user_id: str | None) -> Tenant | None:
        """The warm-worker key of a request carrying `user_id`; None: it must run fresh."""
        if self.account is not None:
            return Tenant(self.account, self.user or "", user_id or "")
        if self.trust_body and user_id:
            return Tenant("", "", user_id)
        return None


GLOBAL_ACCOUNT = "$G"  # every client of a server without accounts: no imports, no tenants
USER_INFO = "$SYS.REQ.USER.INFO"  # answered for any user: its own account and permissions


class Verifier:
    """Turns what a request or job carries into a Caller, given the node's own account.

    Nothing is verified when the node's account is unknown or the global account (a server
    without accounts): every client then shares the node's account, so a header or an account
    token proves nothing. A header naming the node's own account cannot come from an import.
    """

    def __init__(self, own_account: str | None = None, trust_body: bool = False) -> None:
        self.own_account = own_account
        self.trust_body = trust_body

    @property
    def verifies(self) -> bool:
        return self.own_account is not None and self.own_account != GLOBAL_ACCOUNT

    def _caller(self, account: str | None, user: str | None = None) -> Caller:
        if account is None or not self.verifies or account == self.own_account:
            return Caller(trust_body=self.trust_body)
        return Caller(account=account, user=user, trust_body=self.trust_body)

    def request(self, headers: Mapping[str, str] | None, reply: str | None) -> Caller:
        """The caller of a core request: verified only for a server-stamped, imported request."""
        raw = (headers or {}).get(REQUEST_INFO)
        if not raw or not reply or reply.split(".", 1)[0] != RESPONSE_PREFIX or len(raw) > MAX_INFO_BYTES:
            return self._caller(None)
        try:
            info = _info_decoder.decode(raw)
        except (msgspec.DecodeError, UnicodeError):
            return self._caller(None)
        return self._caller(_name(info.acc), _name(info.user))

    def job(self, subject: str) -> tuple[Caller, str]:
        """(caller, kind) of a durable job stored under `strategy.jobs.[<account>.]<kind>`."""
        account, kind = job_parts(subject)
        return self._caller(account), kind


def job_parts(subject: str) -> tuple[str | None, str]:
    """(account token or None, kind) of a job subject `strategy.jobs.[<account>.]<kind>`."""
    rest = subject[len(subjects.JOBS) + 1:] if subject.startswith(subjects.JOBS + ".") else subject
    account, dot, kind = rest.partition(".")
    if not dot:
        return None, rest
    return _name(account), kind


async def own_account(nc, timeout: float = 2.0) -> str | None:
    """The NATS account of connection `nc` (server >= 2.10), or None when it cannot be told."""
    try:
        msg = await nc.request(USER_INFO, b"", timeout=timeout)
        account = msgspec.json.decode(msg.data).get("data", {}).get("account")
    except Exception:  # noqa: BLE001 - no permission, an old server, a timeout: verify nothing
        return None
    return account if isinstance(account, str) and account else None


_current: contextvars.ContextVar[Caller] = contextvars.ContextVar("strategy_caller", default=Caller())


class acting_for:  # noqa: N801 - used as `with acting_for(caller):`, like a function
    """Make `caller` the current one for the handler running inside this block.

    A class rather than a @contextmanager generator: it is entered on every request."""

    __slots__ = ("caller", "_token")

    def __init__(self, caller: Caller) -> None:
        self.caller = caller
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Caller:
        self._token = _current.set(self.caller)
        return self.caller

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def current() -> Caller:
    return _current.get()


def tenant_of(user_id: str | None) -> Tenant | None:
    """The warm-worker key of the request being handled (see Caller.tenant)."""
    return _current.get().tenant(user_id)
