"""Hosted strategies, measured: `python -m bench.hosting [--bars N] [--deployments N] [--repeats N]`.

Starts its own nats-server (JetStream) and one `python -m node run` (fresh sandbox process per
run, the node's defaults) and, side by side with a raw NATS echo of a bar-sized message, measures:

* bar -> signal, 1 deployment: from before a one-bar chunk is published to BARS (through the
  bar store, as `bars publish` does) until its signal arrives on `signals.local.<dep>.<symbol>`
  (the subject the SIGNALS stream stores; the message is delivered once stored). p50/p99 over
  `--bars` bars, one at a time;
* 100 deployments on one symbol: one new bar, until the last of the 100 signals arrives;
  median of `--repeats`;
* deployment-runs per second: 100 / that time (fan-out, pulls, sandbox runs, publishing).

Prints one JSON object. Trivial strategy (`return 'BUY'`), lookback 20.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUY = "def strategy(data):\n    return 'BUY'\n"
DAY_NS = 86_400 * 1_000_000_000


def _bar(i: int):
    from contracts import BarArrays

    ts = np.array([1_704_067_200_000_000_000 + i * DAY_NS], dtype=np.int64)
    px = np.array([100.0 + (i % 7)])
    return BarArrays.from_numpy(ts, open=px, high=px + 1, low=px - 1, close=px, volume=np.array([1000.0]))


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 3)


async def _echo_ms(nc, n: int) -> dict:
    async def echo(msg) -> None:
        await nc.publish(msg.reply, msg.data)

    sub = await nc.subscribe("bench.hosting.echo", cb=echo)
    payload = bytes(_bar(0).timestamp) * 6  # a one-bar chunk's size
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await nc.request("bench.hosting.echo", payload, timeout=5)
        times.append((time.perf_counter() - t0) * 1000)
    await sub.unsubscribe()
    return {"p50_ms": _pct(times, 50), "p99_ms": _pct(times, 99)}


async def run(bars: int, deployments: int, repeats: int, warm: bool = False) -> dict:
    import nats

    from backtest.store import BarStore
    from node.embedded import EmbeddedServer
    from node.hosting.client import HostingClient

    server = EmbeddedServer().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "JOBS_", "NODE_"))}
    env.update({"NATS_URL": server.url, "NODE_ID": "bench-hosting", "LOG_LEVEL": "WARNING",
                "HEARTBEAT_FILE": os.path.join(tempfile.mkdtemp(prefix="bench-hosting-"), "hb")})
    if warm:  # warm workers per deployment (opt-in): one per deployment-version, enough for 100
        env.update({"TENANT_WARM_RUNS": "100000", "TENANT_WARM_WORKERS": "1", "TENANT_WARM_MAX": str(deployments + 2)})
    node = subprocess.Popen([sys.executable, "-m", "node", "run"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        for _ in range(300):
            try:
                await js.consumer_info("STRATEGY_TRIGGERS", "strategy-triggers")
                await js.consumer_info("BARS", "strategy-fanout")
                break
            except Exception:  # noqa: BLE001 - the node is still starting
                await asyncio.sleep(0.1)
        hosting = HostingClient(nc, timeout=30)
        store = BarStore(js, nc)
        await hosting.put_strategy("buy", BUY)
        result = {"echo": await _echo_ms(nc, 200), "node_workers": os.environ.get("MAX_WORKERS", "node default"),
                  "warm": warm}

        # 1 deployment: bar -> signal, one bar at a time.
        for i in range(20):
            await store.load("ONE", "1d", _bar(i))
        await hosting.create_deployment("one", strategy="buy", symbols=["ONE"], timeframe="1d", lookback=20,
                                        overlap="allow", warm=warm)
        await asyncio.sleep(1.0)  # the fan-out's watch has it
        sub = await nc.subscribe("signals.local.one.ONE")
        times = []
        for i in range(20, 20 + bars):
            t0 = time.perf_counter()
            await store.load("ONE", "1d", _bar(i))
            await sub.next_msg(timeout=10)
            times.append((time.perf_counter() - t0) * 1000)
        await sub.unsubscribe()
        steady = times[5:] or times
        result["bar_to_signal_1_deployment"] = {"bars": len(steady), "p50_ms": _pct(steady, 50),
                                                "p99_ms": _pct(steady, 99)}

        # N deployments on one symbol: one bar -> the last of N signals.
        for i in range(20):
            await store.load("MANY", "1d", _bar(i))
        for d in range(deployments):
            await hosting.create_deployment(f"many{d}", strategy="buy", symbols=["MANY"], timeframe="1d",
                                            lookback=20, overlap="allow", warm=warm)
        await asyncio.sleep(1.0)
        sub = await nc.subscribe("signals.local.*.MANY")
        lasts = []
        for r in range(repeats):
            t0 = time.perf_counter()
            await store.load("MANY", "1d", _bar(20 + r))
            for _ in range(deployments):
                await sub.next_msg(timeout=60)
            lasts.append((time.perf_counter() - t0) * 1000)
        await sub.unsubscribe()
        median = statistics.median(lasts)
        result[f"last_signal_{deployments}_deployments"] = {"runs_ms": [round(x, 1) for x in lasts],
                                                             "median_ms": round(median, 1)}
        result["deployment_runs_per_s"] = round(deployments / (median / 1000), 1)
        return result
    finally:
        await nc.close()
        node.terminate()
        try:
            node.wait(30)
        except subprocess.TimeoutExpired:
            node.kill()
        server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.hosting", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bars", type=int, default=100, help="bars of the 1-deployment latency case")
    p.add_argument("--deployments", type=int, default=100, help="deployments of the fan-out case")
    p.add_argument("--repeats", type=int, default=3, help="new bars of the fan-out case (median)")
    p.add_argument("--warm", action="store_true", help="deployments opt in to warm workers of their own")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.bars, args.deployments, args.repeats, args.warm)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
