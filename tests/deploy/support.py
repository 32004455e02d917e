"""Shared helpers of the deploy/ tests: paths, test passwords, NATS connections per user."""

from __future__ import annotations

import asyncio
import os
from contextlib import contextmanager
from pathlib import Path

import nats

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PERMISSIONS_CONF = DEPLOY / "nats" / "permissions.conf"

# permissions.conf reads passwords from the server's environment (test values only).
PASSWORDS = {
    "node": "test-node-password",
    "client": "test-client-password",
    "client2": "test-client2-password",
    "ingest": "test-ingest-password",
}
PASSWORD_ENV = {
    "STRATEGY_NODE_PASSWORD": PASSWORDS["node"],
    "STRATEGY_CLIENT_PASSWORD": PASSWORDS["client"],
    "STRATEGY_CLIENT2_PASSWORD": PASSWORDS["client2"],
    "STRATEGY_INGEST_PASSWORD": PASSWORDS["ingest"],
}
INBOX_PREFIX = {"client": "_INBOX_client", "client2": "_INBOX_client2", "ingest": "_INBOX_ingest", "node": None}


@contextmanager
def password_env():
    """Put the passwords into os.environ (nats-server children inherit it), then restore."""
    saved = {k: os.environ.get(k) for k in PASSWORD_ENV}
    os.environ.update(PASSWORD_ENV)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Connections:
    """Opens NATS connections as the configured users, records each one's async errors
    (permission violations arrive via error_cb) and closes them all at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._open: list[nats.NATS] = []
        self.errors: dict[int, list[str]] = {}

    async def connect(self, user: str, inbox_prefix: str | None = "default", **kwargs) -> nats.NATS:
        errors: list[str] = []

        async def error_cb(exc: Exception) -> None:
            errors.append(str(exc))

        if inbox_prefix == "default":
            inbox_prefix = INBOX_PREFIX[user]
        options = dict(
            user=user,
            password=PASSWORDS[user],
            error_cb=error_cb,
            allow_reconnect=False,
            connect_timeout=2,
        )
        if inbox_prefix:
            options["inbox_prefix"] = inbox_prefix
        options.update(kwargs)
        nc = await nats.connect(self.url, **options)
        self._open.append(nc)
        self.errors[id(nc)] = errors
        return nc

    def errors_of(self, nc: nats.NATS) -> list[str]:
        return self.errors[id(nc)]

    async def wait_for_error(self, nc: nats.NATS, needle: str, timeout: float = 2.0) -> str:
        """The first recorded error containing `needle` (case-insensitive)."""
        await nc.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for err in self.errors_of(nc):
                if needle.lower() in err.lower():
                    return err
            if loop.time() > deadline:
                raise AssertionError(f"no error containing {needle!r}; got {self.errors_of(nc)}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for nc in self._open:
            if not nc.is_closed:
                await nc.close()
        self._open.clear()
