"""How little a warm request can cost a node built on this stack: the node's skeleton, measured.

Issue 18 asks for node CPU per warm request <= 0.3 ms. This tool measures, in one run, what the
parts of a warm request cost on their own, each in a responder process of its own on the same
stack as the node (nats-py on uvloop, msgspec), all sent the same trivial execute request (53 KB
of JSON bars at 1,000 bars) and each answering with a ~1 KB reply:

  echo    a plain subscription that answers every request
  micro   a nats-py micro endpoint (the node's endpoints are micro endpoints)
  head    + the request's small fields decoded, bars skipped (`ExecuteHead`, as the node)
  task    + the answer from a task of its own per request (the node's admission starts one)
  worker  + the request handed to a stub warm worker in another process over a sandbox
          `Channel` as a `Job`, its `Outcome` decoded into an `ExecuteResult` and encoded, and
          its `Scrubbed` report awaited before the worker takes another run: the node's warm
          exchange without any of the node's own checks, identity, admission or bookkeeping
  busy    the same, the stub worker burning `--busy-ms` of CPU per job (a real run's share of
          the cores and caches; the responder is otherwise the same)
  node    the real node (`python -m node run`, warm workers, the bench's tenant)

Each responder's CPU per request comes from the scheduler's clock of every thread of its
process (bench/saturation.py's `sched_ns`), over `--rounds` rounds of `--requests` requests at
`--concurrency` in flight, the systems taking turns within each round. The stub workers' and
sandbox children's CPU is not counted: this is about the process that talks to NATS.

`python -m bench.skeleton [--requests 3000] [--rounds 3] [--concurrency 16] [--busy-ms 1.2]`
prints a table and (with --json PATH) writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

SYSTEMS = ("echo", "micro", "head", "task", "worker", "busy", "node")
REPLY = b'{"success":true,"pad":"' + b"x" * 1000 + b'"}'
CONTENT_TYPE = {"Content-Type": "application/json"}


# -- the stub warm worker -----------------------------------------------------------------------
def stub_worker(fd: int, busy_ms: float) -> None:
    """Answer every job frame with a fixed Outcome frame and then a clean Scrubbed report."""
    from sandbox.protocol import HEADER, Outcome, Scrubbed, frame, job_encoder

    sock = socket.socket(fileno=fd)
    sock.setblocking(True)
    outcome = frame(job_encoder.encode(Outcome(success=True)))
    report = frame(job_encoder.encode(Scrubbed(clean=True, cpu_ms=0.0, failure="")))
    scratch = bytearray(4 << 20)  # walked while busy, as a run walks its data
    buf = b""
    while True:
        while len(buf) < HEADER.size or len(buf) < HEADER.size + HEADER.unpack_from(buf)[0]:
            chunk = sock.recv(1 << 20)
            if not chunk:
                return
            buf += chunk
        buf = buf[HEADER.size + HEADER.unpack_from(buf)[0]:]
        if busy_ms > 0:
            end = time.thread_time() + busy_ms / 1000.0
            while time.thread_time() < end:
                for i in range(0, len(scratch), 4096):
                    scratch[i] = (scratch[i] + 1) & 0xFF
        sock.sendall(outcome)
        sock.sendall(report)


# -- the responders -----------------------------------------------------------------------------
async def serve(url: str, system: str, subject: str, busy_ms: float) -> None:
    import msgspec
    import nats
    from nats.micro import add_service

    from contracts import ExecuteResult
    from contracts.codec import encode
    from sandbox.channel import Channel
    from sandbox.protocol import HEADER, Job, OutputLimits, job_encoder, outcome_decoder, scrubbed_decoder
    from sandbox.request_bars import ExecuteHead

    from .procs import until_stopped

    nc = await nats.connect(url, name=f"bench-skeleton-{system}")
    head = msgspec.json.Decoder(ExecuteHead)
    loop = asyncio.get_running_loop()
    if system == "echo":
        async def on_msg(msg) -> None:
            await nc.publish(msg.reply, REPLY, headers=CONTENT_TYPE)

        await nc.subscribe(subject, cb=on_msg, pending_msgs_limit=1_000_000, pending_bytes_limit=1 << 30)
    else:
        idle: list[Channel] = []
        waiting: list[asyncio.Future] = []
        stubs = []
        if system in ("worker", "busy"):
            for _ in range(2):  # the bench's tenant has two warm workers
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                ours.setblocking(False)
                stubs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.skeleton", "stub-worker", str(theirs.fileno()),
                     str(busy_ms if system == "busy" else 0.0)], pass_fds=[theirs.fileno()]))
                theirs.close()
                idle.append(Channel(ours))

        def release(channel: Channel) -> None:
            while waiting:
                waiter = waiting.pop(0)
                if not waiter.done():
                    waiter.set_result(channel)
                    return
            idle.append(channel)

        async def exchange(data: bytes, fields) -> bytes:
            channel = idle.pop() if idle else None
            if channel is None:
                waiter = loop.create_future()
                waiting.append(waiter)
                channel = await waiter
            job = Job(kind="execute", code=b"", bars=None, symbol=fields.symbol, timeframe=fields.timeframe,
                      parameters=fields.parameters, timeout_ms=5_000, memory_mb=256, limits=OutputLimits(),
                      request=data, request_kind="application/json")
            body = job_encoder.encode(job)
            outcome = outcome_decoder.decode(await channel.exchange(HEADER.pack(len(body)), body, 5.0))
            report = channel.receive(5.0)
            report.add_done_callback(lambda done: (scrubbed_decoder.decode(done.result()), release(channel)))
            result = ExecuteResult(success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
                                   performance=outcome.performance, result=outcome.result, logs=outcome.logs,
                                   error=outcome.error)
            return encode(result, "application/json")

        async def answer(req) -> None:
            fields = head.decode(req.data)
            body = await exchange(req.data, fields) if system in ("worker", "busy") else REPLY
            await req.respond(body, headers=CONTENT_TYPE)

        async def handler(req) -> None:
            if system == "micro":
                await req.respond(REPLY, headers=CONTENT_TYPE)
            elif system == "head":
                head.decode(req.data)
                await req.respond(REPLY, headers=CONTENT_TYPE)
            else:
                asyncio.ensure_future(answer(req))

        service = await add_service(nc, name=f"skeleton-{system}", version="0.0.1")
        await service.add_endpoint(name="run", subject=subject, handler=handler)
    await nc.flush()
    print(f"skeleton {system} ready", flush=True)
    await until_stopped()
    await nc.close()


# -- the driver ---------------------------------------------------------------------------------
async def measure(requests: int, rounds: int, concurrency: int, busy_ms: float, log=print) -> dict:
    import nats

    from contracts import subjects
    from node.embedded import EmbeddedServer

    from . import cases
    from .procs import spawn, wait_for_line
    from .runner import wait_healthy
    from .saturation import sched_ns

    server = EmbeddedServer().start()
    procs = []
    nc = None
    try:
        subject = {s: f"bench.skeleton.{s}" for s in SYSTEMS if s != "node"}
        for system in subject:
            procs.append(spawn(f"skeleton-{system}", ["-m", "bench.skeleton", "serve", server.url, system,
                                                      subject[system], str(busy_ms)], {}))
        node = spawn("node", ["-m", "node", "run"], {"NATS_URL": server.url, **cases.WARM_NODE_ENV})
        procs.append(node)
        subject["node"] = subjects.EXECUTE
        for proc in procs[:-1]:
            wait_for_line(proc, "ready", 60)
        wait_for_line(node, "ready on", 120)
        pids = {s: p.pid for s, p in zip(SYSTEMS, procs)}
        nc = await nats.connect(server.url, name="bench-skeleton-client", pending_size=64 * 1024 * 1024)
        await wait_healthy(nc, 60)
        payload = cases.encoder(subjects.JSON)(
            {"code": cases.TRIVIAL, "bars": cases.columnar_bars(1_000), "symbol": "BENCH", "timeframe": "1d",
             "user_id": cases.WARM_TENANT})

        async def burst(system: str, n: int) -> tuple[int, int]:
            ok = 0
            left = iter(range(n))

            async def client() -> None:
                nonlocal ok
                for _ in left:
                    msg = await nc.request(subject[system], payload, timeout=30)
                    ok += b'"success":true' in msg.data
            before = sched_ns(pids[system])
            await asyncio.gather(*(client() for _ in range(concurrency)))
            return ok, sched_ns(pids[system]) - before

        for system in SYSTEMS:  # warm every path up (the node's workers, caches)
            await burst(system, max(concurrency, requests // 10))
        per_round: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        for r in range(rounds):
            for system in SYSTEMS if r % 2 == 0 else tuple(reversed(SYSTEMS)):
                ok, ns = await burst(system, requests)
                if ok != requests:
                    raise RuntimeError(f"{system}: {requests - ok} of {requests} requests failed")
                per_round[system].append(ns / 1e6 / requests)
            log(f"round {r + 1}: " + "  ".join(f"{s} {per_round[s][-1]:.3f}" for s in SYSTEMS))
        return {"requests": requests, "rounds": rounds, "concurrency": concurrency, "busy_ms": busy_ms,
                "request_bytes": len(payload), "cpu_clock": "schedstat (ns, all threads)",
                "cpu_ms_per_request": {s: round(statistics.median(v), 4) for s, v in per_round.items()},
                "rounds_cpu_ms_per_request": {s: [round(x, 4) for x in v] for s, v in per_round.items()}}
    finally:
        if nc is not None:
            await nc.close()
        for proc in reversed(procs):
            proc.stop()
        server.close()


def render(result: dict) -> str:
    cpu = result["cpu_ms_per_request"]
    lines = [f"| responder ({result['concurrency']} in flight, {result['rounds']} rounds x {result['requests']} "
             f"requests of {result['request_bytes']} bytes) | CPU ms per request (median of rounds) | rounds |",
             "|---|---:|---|"]
    for system in SYSTEMS:
        rounds = " ; ".join(f"{x:.3f}" for x in result["rounds_cpu_ms_per_request"][system])
        lines.append(f"| {system} | {cpu[system]:.3f} | {rounds} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stub-worker"]:
        stub_worker(int(argv[1]), float(argv[2]))
        return
    if argv[:1] == ["serve"]:
        import uvloop

        uvloop.run(serve(argv[1], argv[2], argv[3], float(argv[4])))
        return
    p = argparse.ArgumentParser(prog="python -m bench.skeleton", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=3_000, help="requests per system per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--busy-ms", type=float, default=1.2, help="CPU the busy stub worker burns per job")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    import uvloop

    result = uvloop.run(measure(args.requests, args.rounds, args.concurrency, args.busy_ms))
    print(render(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
