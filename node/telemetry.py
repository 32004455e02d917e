"""OpenTelemetry for the node: a span per request, a child span per sandbox run, and metrics.

Configuration is the standard OTEL_* environment (read once, when the Node is built):

    OTEL_SDK_DISABLED=true          no spans, no metrics (W3C context is still passed through)
    OTEL_TRACES_EXPORTER            otlp | console | none (comma list); default: `otlp` when an
    OTEL_METRICS_EXPORTER           OTLP endpoint is configured, else `none`. This differs from
                                    the spec's default (otlp) on purpose: a node without a
                                    collector should not retry exports for ever.
    OTEL_EXPORTER_OTLP_ENDPOINT     (or OTEL_EXPORTER_OTLP_{TRACES,METRICS}_ENDPOINT)
    OTEL_EXPORTER_OTLP_PROTOCOL     http/protobuf (default, as the spec says; port 4318) | grpc
                                    (port 4317); also per signal:
                                    OTEL_EXPORTER_OTLP_{TRACES,METRICS}_PROTOCOL
    OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG], OTEL_PROPAGATORS,
    OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL, OTEL_EXPORTER_OTLP_HEADERS, ... as the SDK reads them.

The OTLP exporters are separate packages (`opentelemetry-exporter-otlp-proto-http`, which the
container image installs, or `-proto-grpc`) and imported only when asked for; if missing, the node logs a warning naming
the package and runs without that exporter.

Spans: one SERVER span per request named after its subject (`strategy.v1.execute`), started
when the request arrives (queue wait included) as a child of the caller's `traceparent` /
`tracestate` NATS headers; the reply carries the node span's `traceparent`. Attributes:
`strategy.id`, `strategy.user_hash` (sha256 of user_id, first 16 hex; the raw id is never
recorded), `strategy.bar_count`, `strategy.compile_cache_hit`, `strategy.error_code`,
`strategy.node_id`, `strategy.request_id`. The sandbox pool adds an INTERNAL `sandbox.run`
span (`sandbox.child_pid`, `sandbox.run_ms`, `sandbox.outcome`).

Metrics (meter `strategy-exec-node`):
    strategy.request.duration        histogram, ms        {endpoint, error_code ("OK" on success)}
    strategy.request.errors          counter              {endpoint, error_code}
    strategy.compile_cache.lookups   counter              {result: hit|miss}
    strategy.compile_cache.hit_ratio gauge (observable)   0..1 since start
    strategy.requests.in_flight      gauge (observable)   admitted requests (running + queued)
    strategy.requests.queued         gauge (observable)   admission queue depth
    strategy.sandbox.children        gauge (observable)   {state: idle|busy}
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
from typing import Any, Iterable, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode

from . import __version__
from . import logs

log = logging.getLogger("node.telemetry")
requests_log = logging.getLogger("node.requests")

SCOPE = "strategy-exec-node"
LATENCY_BUCKETS_MS = (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000, 2500, 5000, 10000, 30000)
# Failures that are the node's own (or its capacity's), not the strategy's or the caller's.
_NODE_FAULTS = frozenset({"INTERNAL", "OVERLOADED"})

_OTLP_PACKAGES = {
    "grpc": ("opentelemetry.exporter.otlp.proto.grpc", "opentelemetry-exporter-otlp-proto-grpc"),
    "http/protobuf": ("opentelemetry.exporter.otlp.proto.http", "opentelemetry-exporter-otlp-proto-http"),
}


def user_hash(user_id: str) -> str:
    """What spans record instead of a user id: the first 16 hex digits of its sha256."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class _HeaderGetter(Getter):
    """NATS headers are case-preserving: accept `traceparent` however the caller spelled it."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            for name, candidate in carrier.items():
                if name.lower() == key:
                    value = candidate
                    break
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier)


_getter = _HeaderGetter()


def _has_trace_headers(headers: Mapping[str, str] | None) -> bool:
    if not headers:
        return False
    if "traceparent" in headers:
        return True
    return any(name.lower() == "traceparent" for name in headers)


# -- the request span ---------------------------------------------------------------------------

def _log_reply(endpoint: str, reply: Any, code: str | None) -> None:
    """The per-request log line (DEBUG on `node.requests`); carries the request id."""
    if requests_log.isEnabledFor(logging.DEBUG):
        millis = getattr(reply, "execution_time_ms", None)
        requests_log.debug("%s %s%s", endpoint, code or "OK",
                           f" in {millis:.3f} ms" if isinstance(millis, float) else "",
                           extra={"error_code": code})


def _code(reply: Any) -> str | None:
    error = getattr(reply, "error", None)
    return str(error.code) if error is not None else None


class PlainScope:
    """The request scope when there is neither a span to record nor a context to pass on."""

    __slots__ = ("_endpoint",)
    traced = False  # no trace context to write into the reply's headers

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint

    def __enter__(self) -> "PlainScope":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def finish(self, reply: Any) -> None:
        _log_reply(self._endpoint, reply, _code(reply))


class RequestScope:
    """One request: its span (started on arrival) made current inside the request task.

    Use `with scope:` in the task that handles the request, and `scope.finish(reply)` once the
    reply is known; leaving the block ends the span.
    """

    __slots__ = ("span", "context", "_token", "_endpoint")

    traced = True  # the reply carries its trace context (Telemetry.inject)

    def __init__(self, span: trace.Span, context: otel_context.Context, endpoint: str) -> None:
        self.span = span
        self.context = context
        self._token: object | None = None
        self._endpoint = endpoint

    def __enter__(self) -> "RequestScope":
        self._token = otel_context.attach(self.context)
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        try:
            if exc is not None and self.span.is_recording():
                self.span.record_exception(exc)
                self.span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
            self.span.end()

    def finish(self, reply: Any) -> None:
        """Record what the reply says (error code, request id) and log the request."""
        code = _code(reply)
        span = self.span
        if span.is_recording():
            request_id = getattr(reply, "request_id", None)
            if request_id:
                span.set_attribute("strategy.request_id", request_id)
            if code is not None:
                span.set_attribute("strategy.error_code", code)
                span.set_attribute("error.type", code)
                if code in _NODE_FAULTS:
                    span.set_status(Status(StatusCode.ERROR, code))
        _log_reply(self._endpoint, reply, code)


def annotate_request(req: Any) -> None:
    """Called by a handler once its request is decoded: span attributes and the log request id.

    Works for any request Struct (execute, validate, backtest, ...): missing fields are skipped.
    """
    span = annotate_ids(getattr(req, "request_id", None), getattr(req, "strategy_id", None),
                        getattr(req, "user_id", None))
    if span is None:
        return
    bars = getattr(req, "bars", None)
    rows = getattr(req, "market_data", None)
    if bars is not None:
        span.set_attribute("strategy.bar_count", len(bars.timestamp))
    elif rows is not None:
        span.set_attribute("strategy.bar_count", len(rows))


def annotate_ids(request_id: str | None, strategy_id: str | None, user_id: str | None) -> Any:
    """The ids part of `annotate_request` (the log request id, span attributes); returns the
    current span when it records, else None."""
    if request_id:
        logs.request_id.set(request_id)
    span = trace.get_current_span()
    if not span.is_recording():
        return None
    if request_id:
        span.set_attribute("strategy.request_id", request_id)
    if strategy_id:
        span.set_attribute("strategy.id", strategy_id)
    if user_id:
        span.set_attribute("strategy.user_hash", user_hash(user_id))
    return span


# -- providers from the environment -----------------------------------------------------------

def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() == "true"


def _exporter_names(env: Mapping[str, str], signal: str) -> list[str]:
    raw = env.get(f"OTEL_{signal.upper()}_EXPORTER", "").strip()
    if not raw:
        endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    return [] if "none" in names else names


def _otlp_exporter(env: Mapping[str, str], signal: str) -> Any | None:
    protocol = (env.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL")
                or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip().lower()
    if protocol not in _OTLP_PACKAGES:
        log.warning("OTLP protocol %r is not supported for %s (use grpc or http/protobuf); "
                    "%s are not exported", protocol, signal, signal)
        return None
    package, dist = _OTLP_PACKAGES[protocol]
    module_name = f"{package}.{'trace_exporter' if signal == 'traces' else 'metric_exporter'}"
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        log.warning("OTEL_%s_EXPORTER asks for otlp (%s) but %s is not installed: "
                    "pip install %s; %s are not exported",
                    signal.upper(), protocol, dist, dist, signal)
        return None
    # The exporter reads its endpoint, headers, TLS and timeout from OTEL_EXPORTER_OTLP_*.
    return module.OTLPSpanExporter() if signal == "traces" else module.OTLPMetricExporter()


def _exporters(env: Mapping[str, str], signal: str) -> list[Any]:
    found = []
    for name in _exporter_names(env, signal):
        if name == "otlp":
            exporter = _otlp_exporter(env, signal)
        elif name == "console":
            if signal == "traces":
                from opentelemetry.sdk.trace.export import ConsoleSpanExporter

                exporter = ConsoleSpanExporter()
            else:
                from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

                exporter = ConsoleMetricExporter()
        else:
            log.warning("OTEL_%s_EXPORTER=%s is not supported here (otlp, console, none); ignored",
                        signal.upper(), name)
            exporter = None
        if exporter is not None:
            found.append(exporter)
    return found


def _resource(settings: Any, env: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.resources import Resource

    attributes = {
        "service.version": __version__,
        "service.instance.id": settings.node_id,
        "deployment.environment.name": settings.environment,
    }
    if not env.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "strategy-exec-node"
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME (from os.environ).
    return Resource.create(attributes)


def providers_from_env(settings: Any, env: Mapping[str, str] | None = None) -> tuple[Any, Any, bool]:
    """(tracer provider, meter provider, owned) from OTEL_*; no-op providers where nothing exports."""
    env = os.environ if env is None else env
    if _flag(env, "OTEL_SDK_DISABLED"):
        return trace.NoOpTracerProvider(), otel_metrics.NoOpMeterProvider(), False
    span_exporters = _exporters(env, "traces")
    metric_exporters = _exporters(env, "metrics")
    if not span_exporters and not metric_exporters:
        return trace.NoOpTracerProvider(), otel_metrics.NoOpMeterProvider(), False
    resource = _resource(settings, env)
    tracer_provider: Any = trace.NoOpTracerProvider()
    meter_provider: Any = otel_metrics.NoOpMeterProvider()
    if span_exporters:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tracer_provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER
        for exporter in span_exporters:
            tracer_provider.add_span_processor(BatchSpanProcessor(exporter))
    if metric_exporters:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[PeriodicExportingMetricReader(e) for e in metric_exporters],
        )
    return tracer_provider, meter_provider, True


# -- the node's telemetry ---------------------------------------------------------------------

class Telemetry:
    """Spans and metrics of one node. `bind(node)` hooks it to the node's parts.

    Pass `tracer_provider` / `meter_provider` to use given providers (tests: in-memory
    exporters); otherwise they come from the OTEL_* environment (`providers_from_env`) and,
    when something is exported, are also installed as the process-wide providers.
    """

    def __init__(self, settings: Any, tracer_provider: Any = None, meter_provider: Any = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.owned = False
        if tracer_provider is None and meter_provider is None:
            tracer_provider, meter_provider, self.owned = providers_from_env(settings, env)
            if self.owned:
                if not isinstance(tracer_provider, trace.NoOpTracerProvider):
                    trace.set_tracer_provider(tracer_provider)
                if not isinstance(meter_provider, otel_metrics.NoOpMeterProvider):
                    otel_metrics.set_meter_provider(meter_provider)
        self.tracer_provider = tracer_provider or trace.NoOpTracerProvider()
        self.meter_provider = meter_provider or otel_metrics.NoOpMeterProvider()
        self.tracing = not isinstance(self.tracer_provider, trace.NoOpTracerProvider)
        self.metering = not isinstance(self.meter_provider, otel_metrics.NoOpMeterProvider)
        self.tracer = self.tracer_provider.get_tracer(SCOPE, __version__)
        self.meter = self.meter_provider.get_meter(SCOPE, __version__)
        self._node_attrs = {"strategy.node_id": settings.node_id, "messaging.system": "nats",
                            "messaging.operation.type": "process"}
        self._bound: Any = None
        if self.metering:
            self._instruments()

    # -- spans ------------------------------------------------------------------------------
    def request(self, subject: str, headers: Mapping[str, str] | None) -> RequestScope | PlainScope:
        """The scope of one arriving request; its span starts now (so queue wait counts)."""
        endpoint = subject.rsplit(".", 1)[-1]
        if not self.tracing:
            if not _has_trace_headers(headers):
                return PlainScope(endpoint)
            # Not recording, but the caller's context still passes through to the reply.
            parent = propagate.extract(headers, getter=_getter)
            return RequestScope(trace.get_current_span(parent), parent, endpoint)
        parent = propagate.extract(headers, getter=_getter) if _has_trace_headers(headers) else otel_context.Context()
        span = self.tracer.start_span(
            subject, context=parent, kind=SpanKind.SERVER,
            attributes={**self._node_attrs, "messaging.destination.name": subject},
        )
        return RequestScope(span, trace.set_span_in_context(span, parent), endpoint)

    @staticmethod
    def inject(headers: MutableMapping[str, str]) -> None:
        """Write the current context (`traceparent`, `tracestate`) into reply headers."""
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(headers)

    # -- metrics ----------------------------------------------------------------------------
    def _instruments(self) -> None:
        m = self.meter
        self._latency = m.create_histogram(
            "strategy.request.duration", unit="ms",
            description="Time from decode to reply per request, by endpoint and error code",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self._errors = m.create_counter(
            "strategy.request.errors", unit="{error}", description="Failed requests by error code")
        self._lookups = m.create_counter(
            "strategy.compile_cache.lookups", unit="{lookup}",
            description="Compile cache lookups by result (hit or miss)")
        self._attrs_hit = {"result": "hit"}
        self._attrs_miss = {"result": "miss"}

    def bind(self, node: Any) -> None:
        """Hook into a Node: sandbox spans, the Metrics listener, observable gauges."""
        self._bound = node
        if self.tracing:
            node.pool.tracer = self.tracer
        if not self.metering:
            if self.tracing:
                node.metrics.listeners.append(_SpanOnlyListener())
            return
        node.metrics.listeners.append(self)
        m = self.meter
        m.create_observable_gauge("strategy.compile_cache.hit_ratio", [self._observe_hit_ratio], unit="1",
                                  description="Compile cache hits / lookups since start")
        m.create_observable_gauge("strategy.requests.in_flight", [self._observe_in_flight], unit="{request}",
                                  description="Requests admitted and not yet answered (running + queued)")
        m.create_observable_gauge("strategy.requests.queued", [self._observe_queued], unit="{request}",
                                  description="Requests waiting for a worker slot")
        m.create_observable_gauge("strategy.sandbox.children", [self._observe_pool], unit="{process}",
                                  description="Sandbox children ready (idle) and running a job (busy)")

    # Metrics listener (node.metrics.Metrics.listeners): called on the request path.
    def compile(self, hit: bool) -> None:
        self._lookups.add(1, self._attrs_hit if hit else self._attrs_miss)
        _annotate_hit(hit)

    def finished(self, endpoint: str, error: Any, millis: float) -> None:
        code = str(error) if error is not None else "OK"
        attrs = {"endpoint": endpoint, "error_code": code}
        self._latency.record(millis, attrs)
        if error is not None:
            self._errors.add(1, attrs)

    # Observable callbacks: run in the metric reader's thread at collection time.
    def _observe_hit_ratio(self, _options: Any) -> Iterable[Any]:
        metrics = self._bound.metrics
        total = metrics.cache_hits + metrics.cache_misses
        if total:
            yield otel_metrics.Observation(metrics.cache_hits / total)

    def _observe_in_flight(self, _options: Any) -> Iterable[Any]:
        yield otel_metrics.Observation(self._bound.admission.in_flight)

    def _observe_queued(self, _options: Any) -> Iterable[Any]:
        yield otel_metrics.Observation(self._bound.admission.queued)

    def _observe_pool(self, _options: Any) -> Iterable[Any]:
        state = self._bound.pool.state()
        yield otel_metrics.Observation(state.ready, {"state": "idle"})
        yield otel_metrics.Observation(state.busy, {"state": "busy"})

    # -- lifecycle --------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Flush and stop providers this object built from the environment."""
        if not self.owned:
            return
        for provider in (self.tracer_provider, self.meter_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                try:
                    stop()
                except Exception:  # noqa: BLE001 - an exporter failing at exit is not fatal
                    log.debug("telemetry shutdown failed", exc_info=True)


def _annotate_hit(hit: bool) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("strategy.compile_cache_hit", hit)


class _SpanOnlyListener:
    """Metrics listener when spans are recorded but no metrics are: the cache-hit attribute."""

    @staticmethod
    def compile(hit: bool) -> None:
        _annotate_hit(hit)

    @staticmethod
    def finished(endpoint: str, error: Any, millis: float) -> None:
        return None
