"""Sessions of the dashboard, kept in the web process's memory.

A random id in a signed cookie (itsdangerous, a key made at start) maps to the person's NATS
connection and CSRF token. Nothing durable is in a session: losing them all (a restart of the
web process) only means signing in again, and the NATS connection could not outlive the
process anyway. Sessions end after `idle_s` without a request, on sign-out, or (oldest first)
when `max_sessions` are open.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import itsdangerous


@dataclass
class User:
    name: str
    tenant: str
    account: str | None
    nc: Any
    anonymous: bool = False


@dataclass
class Session:
    id: str
    user: User
    csrf: str
    created: float = field(default_factory=time.monotonic)
    seen: float = field(default_factory=time.monotonic)


class Sessions:
    """In-memory sessions (see the module docstring for why memory is acceptable here)."""

    def __init__(self, idle_s: float, max_sessions: int = 1000) -> None:
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._by_id: dict[str, Session] = {}
        self.shared: list[User] = []  # users whose connection outlives their sessions (anonymous)
        self.serializer = itsdangerous.URLSafeTimedSerializer(secrets.token_bytes(32), salt="strategy-node-web")

    def cookie_of(self, session: Session) -> str:
        return self.serializer.dumps(session.id)

    def pre_cookie(self, token: str) -> str:
        return self.serializer.dumps({"pre": token})

    def pre_token(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            value = self.serializer.loads(cookie, max_age=3600)
        except itsdangerous.BadData:
            return None
        return value.get("pre") if isinstance(value, dict) else None

    def find(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            sid = self.serializer.loads(cookie, max_age=self.idle_s * 4)
        except itsdangerous.BadData:
            return None
        session = self._by_id.get(sid) if isinstance(sid, str) else None
        if session is None:
            return None
        now = time.monotonic()
        if now - session.seen > self.idle_s:
            asyncio.ensure_future(self.end(session))
            return None
        session.seen = now
        return session

    async def start(self, user: User) -> Session:
        if len(self._by_id) >= self.max_sessions:
            oldest = min(self._by_id.values(), key=lambda s: s.seen)
            await self.end(oldest)
        session = Session(id=secrets.token_urlsafe(32), user=user, csrf=secrets.token_urlsafe(32))
        self._by_id[session.id] = session
        return session

    async def end(self, session: Session) -> None:
        self._by_id.pop(session.id, None)
        if session.user in self.shared:
            return
        try:
            await session.user.nc.close()
        except Exception:  # noqa: BLE001 - already closed
            pass

    async def close_all(self) -> None:
        for session in list(self._by_id.values()):
            await self.end(session)
        for user in self.shared:
            try:
                await user.nc.close()
            except Exception:  # noqa: BLE001 - already closed
                pass
