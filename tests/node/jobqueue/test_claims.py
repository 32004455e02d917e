"""Job id claims (node/jobqueue/claims.py) against a real nats-server: the first message with a
tenant's job id runs, a redelivery of that message runs again, any other message with the id in
the window does not; one tenant's id never holds another's; the window ends."""

from __future__ import annotations

import asyncio

import nats
import pytest
import pytest_asyncio

from node.embedded import EmbeddedServer
from node.jobqueue import CLAIMS_STREAM, Claims, claims_stream_config, claim_subject

pytestmark = pytest.mark.asyncio(loop_scope="module")
WINDOW_S = 1.0


@pytest.fixture(scope="module")
def server():
    server = EmbeddedServer().start()
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def claims(server):
    """Claims on a fresh STRATEGY_JOB_IDS stream for each test."""
    nc = await nats.connect(server.url)
    js = nc.jetstream()
    await js.add_stream(claims_stream_config(WINDOW_S, 1))
    yield Claims(js, 2.0)
    await js.delete_stream(CLAIMS_STREAM)
    await nc.close()


async def test_the_first_message_with_an_id_claims_it(claims):
    assert await claims.claim("TENANT_A.job-1", 10)


async def test_a_redelivery_of_the_claiming_message_may_run_again(claims):
    assert await claims.claim("TENANT_A.job-1", 10)
    assert await claims.claim("TENANT_A.job-1", 10)


async def test_another_message_with_the_same_id_of_the_same_tenant_may_not(claims):
    assert await claims.claim("TENANT_A.job-1", 10)
    assert not await claims.claim("TENANT_A.job-1", 11)


async def test_one_tenants_id_does_not_hold_the_same_id_of_another(claims):
    assert await claims.claim("TENANT_A.job-1", 10)
    assert await claims.claim("TENANT_B.job-1", 11)
    assert await claims.claim("job-1", 12)  # the node's own account: the bare id


async def test_of_two_messages_claiming_at_once_exactly_one_wins(claims):
    won = await asyncio.gather(*(claims.claim("TENANT_A.raced", seq) for seq in range(20, 40)))
    assert won.count(True) == 1


async def test_after_the_window_the_id_can_be_claimed_again(claims):
    assert await claims.claim("TENANT_A.job-2", 10)
    await asyncio.sleep(WINDOW_S + 0.5)
    assert await claims.claim("TENANT_A.job-2", 11)


async def test_a_claim_is_one_message_per_tenant_and_id(claims):
    await claims.claim("TENANT_A.job-3", 10)
    await claims.claim("TENANT_A.job-3", 11)
    info = await claims.js.stream_info(CLAIMS_STREAM, subjects_filter=claim_subject("TENANT_A.job-3"))
    assert info.state.subjects == {"strategy.jobids.TENANT_A.job-3": 1}


async def test_without_the_stream_a_claim_raises_rather_than_allow_the_run(bare_server):
    nc = await nats.connect(bare_server.url)
    try:
        with pytest.raises(Exception):
            await Claims(nc.jetstream(), 1.0).claim("TENANT_A.job-4", 10)
    finally:
        await nc.close()
