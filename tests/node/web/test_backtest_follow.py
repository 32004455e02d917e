"""Following a dashboard backtest run (node/web/pages/backtest_runs.follow_run) through a real
node: the stored result is the source of truth, so a result stored without a push still ends
the follow with what was stored."""

from __future__ import annotations

import time
import uuid

from node import jobs_client
from node.web.pages.backtest_runs import RECHECK_S, RunForm, RunToken, follow_run
from tests.support import columnar_bars


async def events_of(nc, token: RunToken, limit_s: float) -> list[dict]:
    return [event async for event in follow_run(nc, token, limit_s=limit_s)]


async def test_a_result_stored_without_a_push_ends_the_follow_with_its_error(nc):
    # The node refuses to push to a reply subject it may not publish to (here: not an inbox;
    # with tenant accounts: outside the account's JOB_REPLY_PREFIXES) and stores the refusal.
    token = RunToken(id=uuid.uuid4().hex, inbox="_INBOX_nobody", form=RunForm(
        strategy="s", symbol="X", timeframe="1d"), version=1)
    await jobs_client.submit(nc, "backtest", {"code": "def strategy(data):\n    return 'BUY'\n",
                                              "bars": columnar_bars(30)},
                             job_id=token.id, reply_to=token.inbox)
    started = time.monotonic()
    events = await events_of(nc, token, limit_s=30)
    assert time.monotonic() - started < 3 * RECHECK_S + 5  # found in the store, not after the limit
    assert events[-1]["event"] == "done", events
    error = events[-1]["summary"]["error"]
    assert error["code"] == "INVALID_REQUEST" and "Strategy-Reply-To '_INBOX_nobody'" in error["message"]
