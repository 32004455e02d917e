"""Open-loop latency: requests arrive at a fixed mean rate whatever the replies do.

A closed loop at concurrency 1 sends the next request only when the last reply is in, so a
system that does work *after* its reply (a fresh-process node refilling its ready child) gets
that time for free, and one that is idle between requests never shows what an idle start costs.
Here the sender follows a schedule and never waits for a reply:

* **Arrivals**: Poisson by default (exponential gaps with the given mean rate, from a fixed
  seed, so every system gets the same schedule at a given rate); `fixed` = one request every
  1/rate s. The sender sleeps until each arrival's due time and publishes the request with its
  own reply subject (`<inbox>.<i>`); one wildcard subscription collects every reply. A sender
  that falls behind (due time already past) publishes at once; how late it was is reported
  (`send_lag_ms_p50/p99`), so a row whose schedule the client could not keep says so.
* **Latency**: from just before the publish to the reply's arrival in the client
  (perf_counter_ns), successful replies only; failures by error code, and requests without a
  reply within the timeout as CLIENT_TIMEOUT.
* **Achieved rate**: the rate replies came back at, (successful replies - 1) / (last reply -
  first reply): about the offered rate for a system that keeps up, lower for one that falls
  behind. `sent_rps` is how fast the requests went out, (requests - 1) / (last send - first send).
* A phase sends min(rate x seconds, the profile's request cap) requests (at least 1).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Awaitable, Callable

import numpy as np

from .stats import summarize

ARRIVALS = ("poisson", "fixed")


def schedule(n: int, rate: float, arrivals: str, seed: int) -> np.ndarray:
    """Offsets in seconds of n arrivals at `rate` per second, the first at 0."""
    if n <= 0:
        return np.zeros(0)
    if arrivals == "fixed":
        return np.arange(n, dtype=np.float64) / rate
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be one of {ARRIVALS}, not {arrivals!r}")
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


async def open_loop_phase(nc, subject: str, make: Callable[[int], bytes], check, headers: dict | None,
                          rate: float, count: int, seconds: float, timeout: float, start_index: int = 0,
                          arrivals: str = "poisson", seed: int = 18, node_time: bool = True) -> tuple[dict, int]:
    """One open-loop phase at `rate` req/s; returns (stats, next request index)."""
    n = max(1, min(count, int(round(rate * seconds))))
    offsets = schedule(n, rate, arrivals, seed)
    clock = time.perf_counter_ns
    sent: dict[str, int] = {}
    latencies: list[int] = []
    node_ms: list[float] = []
    errors: Counter = Counter()
    finished = asyncio.Event()
    last_reply = 0
    first_reply = None
    inbox = nc.new_inbox()

    async def on_reply(msg) -> None:
        nonlocal last_reply, first_reply
        now = clock()
        t0 = sent.pop(msg.subject, None)
        if t0 is None:
            return  # a late or duplicate reply
        code, server_ms = check(msg.data)
        if code is None:
            last_reply = now
            first_reply = now if first_reply is None else first_reply
            latencies.append(now - t0)
            if server_ms is not None:
                node_ms.append(server_ms)
        else:
            errors[code] += 1
        if not sent and issued == n:
            finished.set()

    sub = await nc.subscribe(inbox + ".*", cb=on_reply, pending_msgs_limit=1_000_000,
                             pending_bytes_limit=1 << 30)
    await nc.flush()  # the reply subscription exists before the first request goes out
    lags: list[float] = []
    issued = 0
    publish = nc.publish
    base = time.perf_counter() + 0.002
    first_send = None
    for k in range(n):
        due = base + float(offsets[k])
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags.append(max(0.0, time.perf_counter() - due))
        index = start_index + k
        reply = f"{inbox}.{index}"
        payload = make(index)
        now = clock()
        if first_send is None:
            first_send = now
        sent[reply] = now
        issued += 1
        await publish(subject, payload, reply=reply, headers=headers)
    send_end = clock()
    if sent:
        try:
            await asyncio.wait_for(finished.wait(), timeout)
        except asyncio.TimeoutError:
            pass
    if sent:
        errors["CLIENT_TIMEOUT"] += len(sent)
        sent.clear()
    await sub.unsubscribe()
    wall = (max(last_reply, send_end) - first_send) / 1e9 if first_send is not None else 0.0
    stats = summarize(latencies, wall, 0, errors)
    stats.pop("concurrency", None)
    stats.pop("throughput_rps", None)
    span = (last_reply - first_reply) / 1e9 if first_reply is not None else 0.0
    lag = np.asarray(lags) * 1000
    stats.update(
        offered_rps=round(float(rate), 2), arrivals=arrivals,
        sent_rps=round((n - 1) / ((send_end - first_send) / 1e9), 2) if n > 1 and send_end > first_send else None,
        achieved_rps=round((len(latencies) - 1) / span, 2) if len(latencies) > 1 and span > 0 else None,
        send_lag_ms_p50=round(float(np.percentile(lag, 50)), 4), send_lag_ms_p99=round(float(np.percentile(lag, 99)), 4),
    )
    if node_time and node_ms:
        stats["node_p50_ms"] = round(float(np.median(node_ms)), 4)
    return stats, start_index + n


# Which closed-loop case each open-loop system is (its max = that case's peak throughput).
SYSTEMS = (
    "echo", "inprocess_trivial", "inprocess2_trivial", "trivial", "warm_trivial",
    "inprocess_sma", "inprocess2_sma", "sma", "warm_sma",
)
HALF_MAX = "half_max"


def rates_for(rates: tuple[float, ...], half_max: bool, peak_rps: float | None) -> list[tuple[str, float]]:
    """(row key, rate) pairs: the fixed rates, then 50 % of the system's closed-loop maximum."""
    out = [(f"{r:g}", float(r)) for r in rates]
    if half_max and peak_rps:
        out.append((HALF_MAX, round(peak_rps / 2, 2)))
    return out


async def run_section(nc, by_name: dict, result: dict, profile, headers: dict | None, index: int,
                      log: Callable[[str], None],
                      started: Callable[[], Awaitable[int | None]] | None = None) -> tuple[dict, int]:
    """Every system whose closed-loop case ran, at every rate of the profile; returns the section.
    `started`: the node's count of sandbox children started so far; a node system's row records
    how many it started during the row (a fresh run's replacements, a warm worker started or
    replaced, a warm run that fell back to a fresh child), so a slow row can be told apart."""
    section: dict = {
        "arrivals": profile.openloop_arrivals, "rates": list(profile.openloop_rates),
        "half_max": profile.openloop_half_max, "seconds": profile.openloop_seconds,
        "max_requests": profile.openloop_requests, "systems": {},
    }
    for system in SYSTEMS:
        entry = result["cases"].get(system)
        case = by_name.get(system)
        if case is None or entry is None or entry.get("status") != "ok":
            continue
        peak = entry.get("peak_throughput_rps")
        rows: dict = {}
        section["systems"][system] = {"case": system, "closed_loop_max_rps": peak, "rows": rows}
        of_node = started is not None and system != "echo" and not system.startswith("inprocess")
        for key, rate in rates_for(profile.openloop_rates, profile.openloop_half_max, peak):
            await asyncio.sleep(profile.settle_s)
            before = await started() if of_node else None
            # the same schedule for every system at a given rate (seed by rate, not by system)
            stats, index = await open_loop_phase(
                nc, case.subject, case.make_payload, case.check, headers, rate, profile.openloop_requests,
                profile.openloop_seconds, profile.request_timeout_s, index, profile.openloop_arrivals,
                seed=int(rate * 100) + 18, node_time=case.node_time)
            if before is not None:
                after = await started()
                stats["children_started"] = None if after is None else after - before
            rows[key] = stats
            p50 = "-" if stats["p50_ms"] is None else f"{stats['p50_ms']:.3f}"
            p99 = "-" if stats["p99_ms"] is None else f"{stats['p99_ms']:.3f}"
            errs = f"  errors {stats['error_codes']}" if stats["errors"] else ""
            if stats.get("children_started"):
                errs += f"  children started {stats['children_started']}"
            log(f"   open loop {system:<20} {rate:8.1f}/s  n={stats['ok']:<4} p50 {p50}  p99 {p99} ms  "
                f"achieved {stats['achieved_rps']}/s  send lag p99 {stats['send_lag_ms_p99']:.2f} ms{errs}")
    return section, index
