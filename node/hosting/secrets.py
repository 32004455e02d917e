"""Tenant secrets: AEAD envelopes in Key-Value under a key-encryption key only nodes hold.

Keys (`SECRETS_KEY_FILE`, a mounted file, or `SECRETS_KEY`, an environment variable): one or
more entries separated by whitespace or commas, each `<key id>:<base64 of 32 bytes>` (a bare
base64 key gets the id `k` + the first 8 hex digits of its SHA-256). The LAST entry is the
newest: puts and `rotate` encrypt under it; every listed key decrypts envelopes naming its id.

Envelope (KV SECRETS, key `<tenant>.<name>`, JSON): `{"v": 1, "kid", "nonce", "ct", "at"}`,
AES-256-GCM (the `cryptography` package) with a fresh 96-bit nonce and the key
`<tenant>.<name>` as associated data, so an envelope copied to another tenant or name does not
decrypt. The clear value is never written to NATS and never sent back to a client.

A node without keys refuses every secret operation and every run of a deployment that names
secrets with a clear error; it serves everything else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from typing import Any

import msgspec
import nats.js.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts import ErrorCode, ExecutionError
from contracts.secrets import SecretInfo

from . import naming, streams

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_json = msgspec.json.Encoder()


class Envelope(msgspec.Struct, kw_only=True):
    v: int
    kid: str
    nonce: str
    ct: str
    at: str = ""


_envelope = msgspec.json.Decoder(Envelope)


def no_keys() -> ExecutionError:
    return ExecutionError(ErrorCode.INVALID_REQUEST,
                          "secrets are not available on this node: it holds no key-encryption key "
                          "(set SECRETS_KEY_FILE or SECRETS_KEY on the nodes)")


class Keyring:
    """The key-encryption keys of this node: id -> 32-byte key, the newest last."""

    def __init__(self, keys: list[tuple[str, bytes]]) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        self.keys = dict(keys)
        self.newest = keys[-1][0]

    def __repr__(self) -> str:  # never the keys themselves
        return f"Keyring(ids={list(self.keys)}, newest={self.newest!r})"

    @classmethod
    def parse(cls, text: str) -> "Keyring":
        keys: list[tuple[str, bytes]] = []
        for entry in re.split(r"[\s,]+", text.strip()):
            if not entry:
                continue
            kid, _, raw = entry.rpartition(":")
            try:
                key = base64.b64decode(raw, validate=True) if "-" not in raw and "_" not in raw \
                    else base64.urlsafe_b64decode(raw)
            except (binascii.Error, ValueError):
                raise ValueError("secrets key: an entry is not base64 (`<id>:<base64 of 32 bytes>`)") from None
            if len(key) != 32:
                raise ValueError(f"secrets key: an entry decodes to {len(key)} bytes; AES-256 needs 32")
            kid = kid or "k" + hashlib.sha256(key).hexdigest()[:8]
            if not _KEY_ID.match(kid):
                raise ValueError(f"secrets key: key id {kid!r} must match [A-Za-z0-9_-]{{1,32}}")
            keys.append((kid, key))
        if not keys:
            raise ValueError("secrets key: no key given")
        return cls(keys)

    @classmethod
    def load(cls, key: str = "", key_file: str = "") -> "Keyring | None":
        """From SECRETS_KEY_FILE (read now) or SECRETS_KEY; None when neither is set."""
        if key_file:
            with open(key_file, encoding="ascii") as fh:
                return cls.parse(fh.read())
        if key:
            return cls.parse(key)
        return None

    # -- envelopes -------------------------------------------------------------------------
    def seal(self, aad: str, value: str) -> bytes:
        nonce = os.urandom(12)
        ct = AESGCM(self.keys[self.newest]).encrypt(nonce, value.encode(), aad.encode())
        return _json.encode(Envelope(v=1, kid=self.newest, nonce=base64.b64encode(nonce).decode(),
                                     ct=base64.b64encode(ct).decode(), at=naming.now_iso()))

    def open(self, aad: str, raw: bytes) -> str:
        env = _envelope.decode(raw)
        key = self.keys.get(env.kid)
        if key is None:
            raise ExecutionError(ErrorCode.INTERNAL, f"secret {aad.split('.', 1)[-1]!r} is sealed under key "
                                 f"{env.kid!r}, which this node does not hold")
        try:
            return AESGCM(key).decrypt(base64.b64decode(env.nonce), base64.b64decode(env.ct), aad.encode()).decode()
        except InvalidTag:
            raise ExecutionError(ErrorCode.INTERNAL, f"secret {aad.split('.', 1)[-1]!r} does not decrypt "
                                 "(a tampered envelope, or a different key under the same id)") from None


class Secrets:
    """The SECRETS bucket of every tenant; every method needs the node's keyring."""

    def __init__(self, kv: Any, keyring: Keyring | None) -> None:
        self.kv = kv
        self.keyring = keyring

    def _ring(self) -> Keyring:
        if self.keyring is None:
            raise no_keys()
        return self.keyring

    async def put(self, tenant: str, name: str, value: str) -> SecretInfo:
        ring = self._ring()
        key = naming.deployment_key(tenant, name)
        await self.kv.put(key, ring.seal(key, value))
        return SecretInfo(name=name, key_id=ring.newest, updated_at=naming.now_iso())

    async def _envelope(self, key: str) -> tuple[Envelope | None, int | None, bytes]:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None, None, b""
        if not entry.value:
            return None, None, b""
        return _envelope.decode(entry.value), entry.revision, entry.value

    async def names(self, tenant: str) -> list[str]:
        return sorted(k.split(".", 1)[1] for k in await streams.keys(self.kv, f"{tenant}.>"))

    async def list(self, tenant: str) -> list[SecretInfo]:
        self._ring()
        out = []
        for name in await self.names(tenant):
            env, _, _ = await self._envelope(naming.deployment_key(tenant, name))
            if env is not None:
                out.append(SecretInfo(name=name, key_id=env.kid, updated_at=env.at))
        return out

    async def delete(self, tenant: str, name: str) -> None:
        self._ring()
        key = naming.deployment_key(tenant, name)
        env, _, _ = await self._envelope(key)
        if env is None:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, f"secret {name!r} not found")
        await self.kv.purge(key)

    async def rotate(self, tenant: str) -> int:
        """Re-encrypt every secret of the tenant not yet under the newest key (compare-and-set)."""
        ring = self._ring()
        done = 0
        for name in await self.names(tenant):
            key = naming.deployment_key(tenant, name)
            env, revision, raw = await self._envelope(key)
            if env is None or env.kid == ring.newest:
                continue
            value = ring.open(key, raw)
            try:
                await self.kv.update(key, ring.seal(key, value), last=revision)
                done += 1
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile: a put sealed it under the newest key already
        return done

    async def require(self, tenant: str, names: list[str]) -> None:
        """Every named secret exists (a deployment that names secrets needs keys and them)."""
        if not names:
            return
        self._ring()
        have = set(await self.names(tenant))
        missing = [n for n in names if n not in have]
        if missing:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 f"invalid request: `$.secrets` names {', '.join(map(repr, missing))}, "
                                 "which this tenant has not set (strategy.v1.secrets.put)")

    async def reveal(self, tenant: str, names: list[str]) -> dict[str, str]:
        """The clear values of a run's named secrets (in this node's memory for the run only)."""
        if not names:
            return {}
        ring = self._ring()
        out = {}
        for name in names:
            key = naming.deployment_key(tenant, name)
            env, _, raw = await self._envelope(key)
            if env is None:
                raise ExecutionError(ErrorCode.RUNTIME_ERROR,
                                     f"secret {name!r} named by the deployment is not set (deleted?)")
            out[name] = ring.open(key, raw)
        return out
