"""INSECURE BASELINE, not a product path: the in-process design this project replaces.

`python -m bench.inprocess_server URL [--threads N] SUBJECT[:QUEUE] ...` is a responder in its
own process that does, per request, what a "RestrictedPython in the service's own process"
service does: it decodes the same request bytes with the same contracts (`ExecuteRequest`,
JSON or msgpack by `Content-Type`), compiles the strategy with the sandbox's RestrictedPython
compile path (`sandbox.compiler.CompileCache`, keyed by the source's sha256, as a reasonable
in-process service would cache it), builds the same Job (`node.jobs.execute_job`) and runs it
with the sandbox's own runtime (`sandbox.runtime.run`: same frame, same strategy API, same
signals, indicators and metrics) in a thread pool *inside this process*. There is no process
isolation, no lockdown, no seccomp, no rlimits, no deadline kill, and the guards' violation
record is process-global (shared by the pool's threads): user code runs next to the service's
own memory and credentials. It exists so `python -m bench` can measure what isolation costs,
side by side with the node, on the same bytes. Never deploy it.

The reply is the same ExecuteResult the node sends (sized against the server's max_payload
before it is published, with the node's error headers), so the client checks it the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

# As in the zygote: one BLAS thread (the comparison is per request, not per BLAS pool).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import nats  # noqa: E402

from bench.procs import until_stopped  # noqa: E402
from contracts import ExecuteRequest, ExecuteResult, decode  # noqa: E402
from contracts.codec import content_type  # noqa: E402
from node import sizing  # noqa: E402
from node.config import Settings  # noqa: E402
from node.endpoints import error_headers  # noqa: E402
from node.failures import error_of  # noqa: E402
from node.jobs import check_language, execute_job  # noqa: E402
from sandbox import runtime  # noqa: E402
from sandbox.compiler import CompileCache  # noqa: E402

LABEL = "INSECURE BASELINE (bench only): RestrictedPython in the responder's own process, no isolation"


class InProcessService:
    """Decode → compile (cached by source hash) → Job → runtime.run → ExecuteResult bytes."""

    def __init__(self, max_payload: int, node_id: str) -> None:
        self.settings = Settings.from_env({})
        self.node_id = node_id
        self.max_payload = max_payload
        self.cache = CompileCache(maxsize=1024)
        self._cache_lock = threading.Lock()  # the LRU is not thread-safe; a service would lock it

    def handle(self, data: bytes, kind: str) -> tuple[bytes, dict[str, str]]:
        """One request, start to finish (runs in a pool thread); returns the reply and headers."""
        t0 = time.perf_counter()
        request_id = None
        try:
            req = decode(data, ExecuteRequest, kind)
            request_id = req.request_id
            check_language(req.language)
            budget_ms = req.timeout_ms if req.timeout_ms is not None else self.settings.default_timeout_ms
            with self._cache_lock:
                compiled, _hit = self.cache.get(req.code)
            job = execute_job(req, self.settings, compiled, budget_ms)
            outcome = runtime.run(job)  # in this very process: the insecure part
            result = ExecuteResult(
                success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
                performance=outcome.performance, result=outcome.result, logs=outcome.logs,
                error=outcome.error,
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply, as in the node
            result = ExecuteResult(success=False, error=error_of(exc, "inprocess"))
        result.request_id = request_id
        result.node_id = self.node_id
        result.execution_time_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        result, body = sizing.fit_reply(result, kind, self.max_payload)
        headers = dict(error_headers(result.error, kind))
        sizing.check(self.max_payload, body, headers, "the reply")
        return body, headers


async def serve(url: str, subjects: list[tuple[str, str | None]], threads: int) -> None:
    nc = await nats.connect(url, name=f"bench-inprocess-{os.getpid()}", max_reconnect_attempts=5)
    service = InProcessService(nc.max_payload, f"inprocess-{os.getpid()}")
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inprocess")
    loop = asyncio.get_running_loop()
    publish = nc.publish

    async def work(msg) -> None:
        try:
            body, headers = await loop.run_in_executor(pool, service.handle, msg.data, content_type(msg.headers))
            await publish(msg.reply, body, headers=headers)
        except Exception as exc:  # noqa: BLE001 - a lost connection; the client times out
            print(f"inprocess: could not answer: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    async def on_msg(msg) -> None:
        if msg.reply:
            # Like the node: the subscription callback hands off and returns, so requests overlap.
            asyncio.ensure_future(work(msg))

    for subject, queue in subjects:
        await nc.subscribe(subject, queue=queue or "", cb=on_msg, pending_msgs_limit=1_000_000,
                           pending_bytes_limit=1 << 30)
    await nc.flush()
    print(f"inprocess ready pid {os.getpid()} threads {threads}: {LABEL}", flush=True)
    await until_stopped()
    await nc.drain()
    pool.shutdown(wait=False, cancel_futures=True)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.inprocess_server", description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("subjects", nargs="+", metavar="SUBJECT[:QUEUE]")
    p.add_argument("--threads", type=int, default=4, help="thread pool size (default 4, the node's MAX_WORKERS)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    subjects = [(s.partition(":")[0], s.partition(":")[2] or None) for s in args.subjects]
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(serve(args.url, subjects, args.threads))
    else:
        uvloop.run(serve(args.url, subjects, args.threads))


if __name__ == "__main__":
    main()
