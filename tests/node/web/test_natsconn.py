"""Sign-in connections are the person's own (node/web/natsconn.py), against real nats-servers:
a token user, a refused token, the refusal that comes fast, and what the server's INFO says
about credentials before any are sent."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import pytest

from node.embedded import EmbeddedServer
from node.web.natsconn import Credentials, SignInRefused, connect_as, safe_url, server_requires_auth, tenant_of

TOKEN = "web-token-5e1f"


def run(coro):
    """asyncio.run on a thread of its own (the session's Playwright keeps a loop in this one)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(30)


@pytest.fixture(scope="module")
def token_server():
    server = EmbeddedServer(jetstream=False, extra_args=["--auth", TOKEN]).start()
    yield server
    server.close()


def test_a_token_user_signs_in_and_is_the_local_tenant(token_server):
    async def go():
        nc = await connect_as(token_server.url, Credentials(token=TOKEN))
        try:
            assert nc.is_connected
            assert await tenant_of(nc) == ("local", "$G")  # a server without accounts: one tenant
        finally:
            await nc.close()

    run(go())


def test_a_wrong_token_is_refused_quickly_and_clearly(token_server):
    async def go():
        started = time.monotonic()
        with pytest.raises(SignInRefused, match="NATS refused these credentials"):
            await connect_as(token_server.url, Credentials(token="not-it"))
        return time.monotonic() - started

    assert run(go()) < 5  # one attempt, not a reconnect loop


def test_the_server_info_tells_whether_credentials_are_required(token_server, nats_url):
    assert run(server_requires_auth(token_server.url)) is True
    assert run(server_requires_auth(nats_url)) is False


def test_an_unreachable_server_is_a_clear_refusal():
    with pytest.raises(SignInRefused, match="not reachable"):
        run(server_requires_auth("nats://127.0.0.1:1"))


def test_a_url_shown_on_a_page_never_carries_a_password():
    assert safe_url("nats://bob:s3cret@nats.example:4222,nats://n2:4222") == "nats://nats.example:4222,nats://n2:4222"
