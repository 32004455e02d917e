"""Secrets of hosted strategies: `strategy.v1.secrets.*` (the tenant is the verified NATS caller).

| subject | request -> reply |
|---|---|
| `strategy.v1.secrets.put` | SecretPut -> SecretReply (create or replace; the value is encrypted by the node) |
| `strategy.v1.secrets.list` | SecretRef (no name) -> SecretReply (`secrets`: names and key ids only) |
| `strategy.v1.secrets.delete` | SecretRef -> SecretReply |
| `strategy.v1.secrets.rotate` | SecretRef (no name) -> SecretReply (`rotated`: re-encrypted under the newest key) |

A value never comes back: no reply carries it, and NATS stores only the AEAD envelope
(node/hosting/secrets.py). A deployment names the secrets its runs get (`DeploymentCreate.secrets`).
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from .errors import ErrorInfo

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
SecretName = Annotated[str, msgspec.Meta(pattern=SECRET_NAME_PATTERN)]
MAX_SECRET_CHARS = 8 * 1024
SecretValue = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SECRET_CHARS)]


class SecretPut(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: SecretName
    value: SecretValue


class SecretRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: SecretName | None = None


class SecretInfo(msgspec.Struct, kw_only=True):
    """What a client may know of a secret: never its value."""

    name: str
    key_id: str
    updated_at: str = ""


class SecretReply(msgspec.Struct, kw_only=True):
    ok: bool = False
    secret: SecretInfo | None = None
    secrets: list[SecretInfo] = []
    rotated: int = 0
    error: ErrorInfo | None = None
    node_id: str = ""
