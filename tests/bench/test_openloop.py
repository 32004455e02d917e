"""Open-loop phases: arrivals follow the schedule, never the replies (through a real nats-server).

Not a performance test: the timings asserted are the schedule's and a deliberately slow
responder's, with wide margins.
"""

from __future__ import annotations

import asyncio

import nats
import numpy as np
import pytest

from bench.openloop import HALF_MAX, open_loop_phase, rates_for, schedule

SLOW_S = 0.25


def _ok(_data: bytes):
    return None, None


async def _responder(nc, subject: str, delay: float | None):
    """Replies after `delay` seconds, each request on its own (None: never replies)."""

    async def reply(msg) -> None:
        await asyncio.sleep(delay)
        await nc.publish(msg.reply, b"ok")

    async def on_msg(msg) -> None:
        if delay is not None:
            asyncio.ensure_future(reply(msg))

    sub = await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return sub


def test_poisson_arrivals_have_the_mean_rate_and_fixed_arrivals_are_evenly_spaced():
    offsets = schedule(20_000, 50.0, "poisson", seed=1)
    assert offsets[0] == 0.0 and np.all(np.diff(offsets) >= 0)
    assert np.mean(np.diff(offsets)) == pytest.approx(1 / 50.0, rel=0.03)
    assert np.std(np.diff(offsets)) == pytest.approx(1 / 50.0, rel=0.05)  # exponential: sd = mean
    assert np.array_equal(schedule(5, 20.0, "poisson", 7), schedule(5, 20.0, "poisson", 7))  # same seed, same schedule
    assert np.allclose(schedule(4, 20.0, "fixed", 0), [0.0, 0.05, 0.10, 0.15])
    with pytest.raises(ValueError, match="arrivals"):
        schedule(3, 20.0, "bursty", 0)


def test_rates_are_the_fixed_ones_then_half_the_closed_loop_maximum():
    assert rates_for((20, 50, 100), True, 333.0) == [("20", 20.0), ("50", 50.0), ("100", 100.0), (HALF_MAX, 166.5)]
    assert rates_for((20,), True, None) == [("20", 20.0)]  # no maximum measured: no 50 % row
    assert rates_for((20,), False, 500.0) == [("20", 20.0)]


async def test_the_sender_never_waits_for_replies(nats_url):
    nc = await nats.connect(nats_url)
    try:
        sub = await _responder(nc, "bench.test.openloop.slow", SLOW_S)
        # 10 requests at 50/s: ~0.2 s of sending. A sender that waited for each 0.25 s reply
        # would need 2.5 s; the open loop keeps the schedule and every reply is ~0.25 s late.
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        stats, nxt = await open_loop_phase(nc, "bench.test.openloop.slow", lambda i: b"x", _ok, None,
                                           rate=50.0, count=10, seconds=10.0, timeout=5.0, start_index=7,
                                           arrivals="fixed")
        elapsed = loop.time() - t0
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert nxt == 17 and stats["ok"] == 10 and stats["errors"] == 0
    assert elapsed < 1.5, elapsed
    assert stats["sent_rps"] > 30  # ~50/s, however slow the replies
    assert SLOW_S * 1000 <= stats["p50_ms"] < SLOW_S * 1000 + 500
    assert stats["offered_rps"] == 50.0 and stats["arrivals"] == "fixed"


async def test_requests_without_a_reply_count_as_client_timeouts(nats_url):
    nc = await nats.connect(nats_url)
    try:
        sub = await _responder(nc, "bench.test.openloop.silent", None)
        stats, _ = await open_loop_phase(nc, "bench.test.openloop.silent", lambda i: b"x", _ok, None,
                                         rate=100.0, count=3, seconds=1.0, timeout=0.3)
        await sub.unsubscribe()
    finally:
        await nc.close()
    assert stats["ok"] == 0 and stats["error_codes"] == {"CLIENT_TIMEOUT": 3}
    assert stats["p50_ms"] is None and stats["achieved_rps"] is None
