"""OpenTelemetry through the real NATS path: caller span → node span → sandbox.run span.

A dedicated node with in-memory exporters serves its own nats-server (the session node serves
the same queue group on the shared server, so a request there might not reach this one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import nats
import pytest
import pytest_asyncio
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from contracts import subjects
from node.config import Settings
from node.embedded import EmbeddedServer
from node.logs import JsonFormatter
from node.service import Node
from node.telemetry import Telemetry, providers_from_env, user_hash
from tests.support import columnar_bars

NODE_ID = "telemetry-node"
BUY = "def strategy(data):\n    return 'BUY'\n"


class Traced:
    def __init__(self, node: Node, nc, exporter: InMemorySpanExporter, reader: InMemoryMetricReader,
                 caller: trace.Tracer) -> None:
        self.node, self.nc, self.exporter, self.reader, self.caller = node, nc, exporter, reader, caller

    async def request(self, payload, subject: str = subjects.EXECUTE, raw: bytes | None = None,
                      caller_span: str | None = None):
        """A request as an instrumented client sends it; returns (reply msg, caller span)."""
        data = raw if raw is not None else json.dumps(payload).encode()
        if caller_span is None:
            return await self.nc.request(subject, data, timeout=15), None
        with self.caller.start_as_current_span(caller_span, kind=SpanKind.CLIENT) as span:
            headers: dict[str, str] = {}
            propagate.inject(headers)
            msg = await self.nc.request(subject, data, timeout=15, headers=headers)
        return msg, span

    async def spans_of(self, trace_id: int, names: set[str], timeout: float = 5.0):
        """This trace's finished spans, once all of `names` are there (a span ends after its reply)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            spans = [s for s in self.exporter.get_finished_spans() if s.context.trace_id == trace_id]
            if names <= {s.name for s in spans} or loop.time() > deadline:
                return {s.name: s for s in spans}
            await asyncio.sleep(0.02)

    def metrics(self) -> dict[str, list]:
        data = self.reader.get_metrics_data()
        found: dict[str, list] = {}
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        return found


@pytest_asyncio.fixture(scope="module")
async def traced(tmp_path_factory):
    server = EmbeddedServer(jetstream=False).start()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    heartbeat = tmp_path_factory.mktemp("telemetry") / "heartbeat"
    settings = Settings.from_env({"MAX_WORKERS": "2", "SANDBOX_READY": "2", "MAX_TIMEOUT_SECONDS": "10",
                                  "NODE_ID": NODE_ID, "HEARTBEAT_FILE": str(heartbeat)})
    telemetry = Telemetry(settings, tracer_provider=tracer_provider, meter_provider=meter_provider)
    node = Node(settings, server.url, telemetry=telemetry)
    await node.start()
    nc = await nats.connect(server.url)
    # The caller's own SDK, as an instrumented client would have; its spans land in the same list.
    caller = tracer_provider.get_tracer("test-caller")
    try:
        yield Traced(node, nc, exporter, reader, caller)
    finally:
        await nc.drain()
        await node.stop()
        server.close()
        tracer_provider.shutdown()
        meter_provider.shutdown()


def _traceparent(headers) -> tuple[int, int]:
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return int(trace_id, 16), int(span_id, 16)


async def test_one_trace_from_caller_through_node_to_sandbox(traced):
    user = "alice@example.com"
    msg, caller = await traced.request(
        {"code": BUY, "bars": columnar_bars(30), "user_id": user, "strategy_id": "strat-42",
         "request_id": "req-trace-1"},
        caller_span="client.execute",
    )
    assert json.loads(msg.data)["success"] is True
    trace_id = caller.get_span_context().trace_id

    spans = await traced.spans_of(trace_id, {"client.execute", subjects.EXECUTE, "sandbox.run"})
    node_span, run_span = spans[subjects.EXECUTE], spans["sandbox.run"]

    # One trace, linked caller → node → sandbox.
    assert {s.context.trace_id for s in spans.values()} == {trace_id}
    assert node_span.kind is SpanKind.SERVER
    assert node_span.parent.span_id == caller.get_span_context().span_id
    assert run_span.parent.span_id == node_span.context.span_id

    # The reply continues the trace from the node's span.
    reply_trace, reply_span = _traceparent(msg.headers)
    assert (reply_trace, reply_span) == (trace_id, node_span.context.span_id)

    attrs = dict(node_span.attributes)
    assert attrs["strategy.id"] == "strat-42"
    assert attrs["strategy.user_hash"] == hashlib.sha256(user.encode()).hexdigest()[:16] == user_hash(user)
    assert user not in {str(v) for v in attrs.values()}  # never the raw id
    assert attrs["strategy.bar_count"] == 30
    assert isinstance(attrs["strategy.compile_cache_hit"], bool)
    assert attrs["strategy.node_id"] == NODE_ID
    assert attrs["strategy.request_id"] == "req-trace-1"
    assert "strategy.error_code" not in attrs

    run = dict(run_span.attributes)
    assert run["sandbox.child_pid"] > 0 and run["sandbox.child_pid"] not in traced.node.pool.ready_children()
    assert run["sandbox.run_ms"] > 0
    assert run["sandbox.outcome"] == "OK"


async def test_failing_requests_carry_their_error_code(traced):
    msg, caller = await traced.request({"code": 5}, caller_span="client.bad")
    assert json.loads(msg.data)["error"]["code"] == "INVALID_REQUEST"
    trace_id = caller.get_span_context().trace_id
    spans = await traced.spans_of(trace_id, {subjects.EXECUTE})
    assert spans[subjects.EXECUTE].attributes["strategy.error_code"] == "INVALID_REQUEST"
    assert "sandbox.run" not in spans  # rejected before a child was spent
    assert _traceparent(msg.headers)[0] == trace_id

    msg, caller = await traced.request(
        {"code": "def strategy(data):\n    return 1 / 0\n", "bars": columnar_bars(5)}, caller_span="client.crash")
    assert json.loads(msg.data)["error"]["code"] == "RUNTIME_ERROR"
    spans = await traced.spans_of(caller.get_span_context().trace_id, {subjects.EXECUTE, "sandbox.run"})
    assert spans[subjects.EXECUTE].attributes["strategy.error_code"] == "RUNTIME_ERROR"
    assert spans["sandbox.run"].attributes["sandbox.outcome"] == "RUNTIME_ERROR"


async def test_a_request_without_traceparent_starts_a_new_trace(traced):
    msg, _ = await traced.request({"code": BUY, "bars": columnar_bars(3)})
    trace_id, span_id = _traceparent(msg.headers)
    spans = await traced.spans_of(trace_id, {subjects.EXECUTE, "sandbox.run"})
    assert spans[subjects.EXECUTE].context.span_id == span_id
    assert spans[subjects.EXECUTE].parent is None


async def test_metrics_latency_errors_cache_and_gauges(traced):
    def count(points, **attrs):
        return sum(p.count if hasattr(p, "count") else p.value for p in points
                   if all(p.attributes.get(k) == v for k, v in attrs.items()))

    before = traced.metrics()
    source = "def strategy(data):\n    return 'SELL'  # metrics test\n"
    for _ in range(2):  # the second run of a source is a compile cache hit
        assert json.loads((await traced.request({"code": source, "bars": columnar_bars(5)}))[0].data)["success"]
    await traced.request({"code": BUY, "bars": "not bars"})  # INVALID_REQUEST
    after = traced.metrics()

    latency = "strategy.request.duration"
    assert count(after[latency], endpoint="execute", error_code="OK") - \
        count(before.get(latency, []), endpoint="execute", error_code="OK") == 2
    assert count(after[latency], endpoint="execute", error_code="INVALID_REQUEST") >= 1
    errors = "strategy.request.errors"
    assert count(after[errors], endpoint="execute", error_code="INVALID_REQUEST") - \
        count(before.get(errors, []), endpoint="execute", error_code="INVALID_REQUEST") == 1
    assert count(after[errors], error_code="OK") == 0  # successes are not errors

    lookups = "strategy.compile_cache.lookups"
    assert count(after[lookups], result="hit") - count(before.get(lookups, []), result="hit") >= 1
    assert count(after[lookups], result="miss") >= 1
    (ratio,) = after["strategy.compile_cache.hit_ratio"]
    metrics = traced.node.metrics
    assert 0 < ratio.value < 1
    assert ratio.value == pytest.approx(metrics.cache_hits / (metrics.cache_hits + metrics.cache_misses))

    children = {p.attributes["state"]: p.value for p in after["strategy.sandbox.children"]}
    assert set(children) == {"idle", "busy"} and children["busy"] == 0
    assert children["idle"] == traced.node.pool.state().ready
    assert [p.value for p in after["strategy.requests.in_flight"]] == [0]
    assert [p.value for p in after["strategy.requests.queued"]] == [0]


async def test_json_logs_carry_the_request_id_and_trace_id(traced):
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Capture()
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("node.requests")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        msg, caller = await traced.request(
            {"code": BUY, "bars": columnar_bars(3), "request_id": "req-log-7"}, caller_span="client.logs")
        await asyncio.sleep(0.05)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    entries = [json.loads(line) for line in lines]
    ours = [e for e in entries if e.get("request_id") == "req-log-7"]
    assert ours, entries
    assert ours[0]["trace_id"] == format(caller.get_span_context().trace_id, "032x")
    assert ours[0]["msg"].startswith("execute OK")
    # The request id lives in the request's task only: nothing else picked it up.
    assert all(e.get("request_id") in (None, "req-log-7") for e in entries)


# -- configuration from OTEL_* ------------------------------------------------------------------

SETTINGS = Settings.from_env({"NODE_ID": "cfg-node"})


def test_nothing_is_exported_by_default_or_when_disabled():
    for env in ({}, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
                {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}):
        tracer_provider, meter_provider, owned = providers_from_env(SETTINGS, env)
        assert isinstance(tracer_provider, trace.NoOpTracerProvider), env
        assert type(meter_provider).__name__ == "NoOpMeterProvider" and not owned


@pytest.mark.parametrize("env, package", [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "opentelemetry-exporter-otlp-proto-http"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
     "opentelemetry-exporter-otlp-proto-grpc"),
])
def test_missing_otlp_exporter_is_a_clear_warning(caplog, env, package):
    module = package.replace("-", ".")
    try:
        __import__(module)
    except ImportError:
        pass
    else:
        pytest.skip(f"{package} is installed here")
    with caplog.at_level(logging.WARNING, logger="node.telemetry"):
        tracer_provider, _, _ = providers_from_env(SETTINGS, env)
    assert isinstance(tracer_provider, trace.NoOpTracerProvider)
    assert f"pip install {package}" in caplog.text


def test_console_exporter_builds_sdk_providers():
    tracer_provider, meter_provider, owned = providers_from_env(
        SETTINGS, {"OTEL_TRACES_EXPORTER": "console", "OTEL_METRICS_EXPORTER": "none"})
    try:
        assert isinstance(tracer_provider, TracerProvider) and owned
        assert tracer_provider.resource.attributes["service.instance.id"] == "cfg-node"
        assert type(meter_provider).__name__ == "NoOpMeterProvider"
    finally:
        tracer_provider.shutdown()


def test_callers_context_passes_through_a_node_that_records_nothing():
    telemetry = Telemetry(SETTINGS, env={})
    assert not telemetry.tracing
    incoming = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "vendor=opaque"}
    scope = telemetry.request(subjects.EXECUTE, incoming)
    assert scope.traced  # the node's reply path injects for this scope (service._respond)
    reply: dict[str, str] = {}
    with scope:
        telemetry.inject(reply)
    assert reply == incoming
    # No traceparent in, none out: the reply path skips the injection altogether.
    reply = {}
    plain = telemetry.request(subjects.EXECUTE, {"Content-Type": "application/json"})
    assert not plain.traced
    with plain:
        telemetry.inject(reply)
    assert reply == {}


async def test_a_warm_run_is_traced_like_a_fresh_one(tmp_path):
    """The warm path (node/raw_execute.py: bars decoded by the tenant's worker) records the same
    span attributes and continues the caller's trace into the reply."""
    server = EmbeddedServer(jetstream=False).start()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = Settings.from_env({"MAX_WORKERS": "2", "SANDBOX_READY": "1", "MAX_TIMEOUT_SECONDS": "10",
                                  "NODE_ID": NODE_ID, "HEARTBEAT_FILE": str(tmp_path / "heartbeat"),
                                  "TENANT_WARM_RUNS": "10", "TRUST_BODY_USER_ID": "true"})
    node = Node(settings, server.url, telemetry=Telemetry(settings, tracer_provider=tracer_provider,
                                                          meter_provider=MeterProvider()))
    await node.start()
    nc = await nats.connect(server.url)
    try:
        traced = Traced(node, nc, exporter, InMemoryMetricReader(), tracer_provider.get_tracer("test-caller"))
        user = "carol@example.com"
        msg, caller = await traced.request(
            {"code": BUY, "bars": columnar_bars(25), "user_id": user, "strategy_id": "strat-w",
             "request_id": "req-warm-1"}, caller_span="client.warm")
        assert json.loads(msg.data)["success"] is True
        assert node.pool.warm_children()  # it ran in the tenant's warm worker
        trace_id = caller.get_span_context().trace_id
        spans = await traced.spans_of(trace_id, {subjects.EXECUTE, "sandbox.run"})
        node_span = spans[subjects.EXECUTE]
        assert _traceparent(msg.headers) == (trace_id, node_span.context.span_id)
        attrs = dict(node_span.attributes)
        assert attrs["strategy.bar_count"] == 25
        assert attrs["strategy.id"] == "strat-w"
        assert attrs["strategy.request_id"] == "req-warm-1"
        assert attrs["strategy.user_hash"] == user_hash(user)
        assert spans["sandbox.run"].attributes["sandbox.warm_run"] == 1

        untraced = await nc.request(subjects.EXECUTE, json.dumps(
            {"code": BUY, "bars": columnar_bars(25), "user_id": user}).encode(), timeout=15)
        assert json.loads(untraced.data)["success"] is True
        assert "traceparent" in untraced.headers  # the node's own span, with no caller context
    finally:
        await nc.drain()
        await node.stop()
        server.close()
        tracer_provider.shutdown()
