"""Sessions (node/web/sessions.py): a signed cookie names one, idle ones end and close their
person's NATS connection, the oldest gives way when too many are open, and a cookie signed by
another process (or edited) names nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import nats

from node.web.sessions import Sessions, User


def run(coro):
    """asyncio.run on a thread of its own (a module's Playwright may keep a loop in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(30)


async def _user(url: str, name: str) -> User:
    return User(name=name, tenant="local", account=None, nc=await nats.connect(url))


def test_an_idle_session_ends_and_closes_its_nats_connection(nats_url):
    async def go():
        sessions = Sessions(idle_s=0.3)
        session = await sessions.start(await _user(nats_url, "a"))
        cookie = sessions.cookie_of(session)
        assert sessions.find(cookie) is session
        await asyncio.sleep(0.4)
        assert sessions.find(cookie) is None
        await asyncio.sleep(0.1)  # the close runs on the loop
        assert session.user.nc.is_closed

    run(go())


def test_the_oldest_session_gives_way_when_too_many_are_open(nats_url):
    async def go():
        sessions = Sessions(idle_s=60, max_sessions=2)
        first = await sessions.start(await _user(nats_url, "a"))
        time.sleep(0.01)
        second = await sessions.start(await _user(nats_url, "b"))
        third = await sessions.start(await _user(nats_url, "c"))
        assert sessions.find(sessions.cookie_of(first)) is None and first.user.nc.is_closed
        assert sessions.find(sessions.cookie_of(second)) is second
        assert sessions.find(sessions.cookie_of(third)) is third
        await sessions.close_all()
        assert second.user.nc.is_closed and third.user.nc.is_closed

    run(go())


def test_a_cookie_from_another_process_or_edited_names_nothing(nats_url):
    async def go():
        mine, theirs = Sessions(idle_s=60), Sessions(idle_s=60)
        session = await mine.start(await _user(nats_url, "a"))
        cookie = mine.cookie_of(session)
        forged = theirs.serializer.dumps(session.id)  # the right id, signed with another key
        assert theirs.find(cookie) is None and mine.find(forged) is None
        assert mine.find(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
        assert mine.find(mine.pre_cookie("x")) is None  # a sign-in form token is not a session
        await mine.close_all()

    run(go())
