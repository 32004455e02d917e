"""NATS authentication and TLS from environment variables.

`connect_options(os.environ)` turns the deployment's NATS_* variables into keyword arguments
for `nats.connect()` (nats-py), so the same container image works with any of the server's
auth schemes without code changes:

    NATS_CREDS          path of a .creds file (JWT + nkey seed; decentralized auth)
    NATS_NKEY_SEED      path of an nkey seed file
    NATS_USER           user name; with NATS_PASSWORD
    NATS_PASSWORD
    NATS_TOKEN          bearer token
    NATS_TLS_CA         CA bundle that verifies the server (default: system trust store)
    NATS_TLS_CERT       client certificate (mutual TLS); with NATS_TLS_KEY
    NATS_TLS_KEY
    NATS_INBOX_PREFIX   reply-subject prefix; must match the user's subscribe permission
                        (deploy/nats/permissions.conf gives each client its own prefix)

Exactly one credential kind may be set: a server receiving two would pick one silently and an
operator would debug the wrong secret. Empty values count as unset, because Kubernetes
manifests often template variables to "". Errors name the variable, never its value.
"""

from __future__ import annotations

import os
import re
import ssl
from typing import Any, Mapping

__all__ = ["connect_options", "is_inbox_subject", "AuthConfigError", "RESPONSE_PREFIX"]


class AuthConfigError(ValueError):
    """The NATS_* environment is contradictory or points at files that do not exist."""


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _existing_file(env: Mapping[str, str], name: str) -> str | None:
    path = _get(env, name)
    if path is not None and not os.path.isfile(path):
        raise AuthConfigError(f"{name} points at a file that does not exist")
    return path


def _tls_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    if key and not cert:
        raise AuthConfigError("NATS_TLS_KEY is set without NATS_TLS_CERT")
    # create_default_context verifies the server certificate and host name; with no CA file
    # it trusts the system store (public CAs), otherwise only the given bundle.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        # key=None is fine when the certificate file also holds the private key.
        context.load_cert_chain(certfile=cert, keyfile=key)
    return context


def connect_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Keyword arguments for `nats.connect()` from NATS_* variables; {} when none are set.

    Raises AuthConfigError for contradictory settings or missing files.
    """
    options: dict[str, Any] = {}

    creds = _existing_file(env, "NATS_CREDS")
    seed = _existing_file(env, "NATS_NKEY_SEED")
    user = _get(env, "NATS_USER")
    password = _get(env, "NATS_PASSWORD")
    token = _get(env, "NATS_TOKEN")

    if password and not user:
        raise AuthConfigError("NATS_PASSWORD is set without NATS_USER")
    kinds = [
        name
        for name, present in (
            ("NATS_CREDS", creds),
            ("NATS_NKEY_SEED", seed),
            ("NATS_USER/NATS_PASSWORD", user),
            ("NATS_TOKEN", token),
        )
        if present
    ]
    if len(kinds) > 1:
        raise AuthConfigError("set only one NATS credential kind, got: " + ", ".join(kinds))

    if creds:
        options["user_credentials"] = creds
    elif seed:
        options["nkeys_seed"] = seed
    elif user:
        options["user"] = user
        if password:
            options["password"] = password
    elif token:
        options["token"] = token

    ca = _existing_file(env, "NATS_TLS_CA")
    cert = _existing_file(env, "NATS_TLS_CERT")
    key = _existing_file(env, "NATS_TLS_KEY")
    if ca or cert or key:
        options["tls"] = _tls_context(ca, cert, key)

    inbox_prefix = _get(env, "NATS_INBOX_PREFIX")
    if inbox_prefix:
        if any(c in inbox_prefix for c in " \t\r\n*>") or inbox_prefix.endswith("."):
            raise AuthConfigError("NATS_INBOX_PREFIX must be a literal subject prefix")
        options["inbox_prefix"] = inbox_prefix

    return options


def is_inbox_subject(subject: str | None) -> bool:
    """True when `subject` is safe to publish a reply to: an inbox, or the server's reply
    subject of an imported request.

    A requester chooses the reply subject (of a request, or in a durable job's reply header).
    Answering whatever it names makes the node a confused deputy: a client could set the
    reply to `strategy.results.<someone's job id>` and the node, which may publish results,
    would store the client's output as that job's result. The server's permissions stop
    replies into the JetStream API (deploy/nats/permissions.conf) but cannot tell a reply
    from the node's own result publishing, so the node must refuse non-inbox reply subjects.
    Every NATS client's inboxes, including custom prefixes such as `_INBOX_client`, pass, and
    so does `_R_.<id>...`: the subject nats-server gives a request that reached the node's
    account through a service import (the tenant's own reply subject stays in its account).
    """
    if not subject:
        return False
    first = subject.split(".", 1)[0]
    if not (first.startswith("_INBOX") or first == RESPONSE_PREFIX):
        return False
    return "." in subject and not subject.endswith(".")


# First token of the reply subject the server puts on a request that crossed a service import.
RESPONSE_PREFIX = "_R_"


_DENIED = re.compile(r'permissions violation for (?:publish|subscription) to "([^"]+)"', re.IGNORECASE)


def denied_subject(error: BaseException | str) -> str | None:
    """The subject of a `Permissions Violation` the server sent the connection (as nats-py hands
    it to the error callback, lowercased), or None for any other error."""
    match = _DENIED.search(str(error))
    return match.group(1) if match else None
