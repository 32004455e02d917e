"""The request handlers: decode, check, run in the sandbox, shape the reply.

Each handler returns the reply Struct; nothing here raises for a bad request, the strategy's
failures or a dead child — every path ends in a reply with an error code.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from contracts import (
    BacktestResult,
    ErrorCode,
    ErrorInfo,
    ExecuteRequest,
    ExecuteResult,
    ExecutionError,
    Health,
    Limits,
    ScreenResult,
    ValidateRequest,
    ValidateResult,
    decode,
    limits as contract_limits,
    subjects,
)
from sandbox.compiler import CompileCache
from sandbox.pool import SandboxPool

from . import __version__, identity
from .config import Settings
from .failures import error_of
from .jobs import check_language, execute_job
from .metrics import Metrics
from .raw_execute import CodeMemo, Declined, execute_in_worker
from .telemetry import annotate_request

log = logging.getLogger("node.endpoints")


class Endpoints:
    """Shared state of one node's handlers: settings, sandbox pool, compile cache, metrics."""

    def __init__(self, settings: Settings, pool: SandboxPool, metrics: Metrics) -> None:
        self.settings = settings
        self.pool = pool
        self.metrics = metrics
        self.cache = CompileCache(maxsize=1024)
        self.warm_code = CodeMemo(self.cache)  # the warm path's lookups by source text (raw_execute)
        self.started = time.monotonic()
        self.nats_connected = lambda: False
        self.admission_state = lambda: (0, 0)
        self.draining = False
        self.nats_account: str | None = None  # the node's own NATS account (node/identity.py)
        # Fills a job's reference data for the accessors (Backtesting.reference_for_job), once the
        # node has its JetStream stores; until then accessors say the data was not loaded.
        self.reference = None

    def _remaining_ms(self, received: float, budget_ms: int) -> int:
        left = budget_ms - int((time.monotonic() - received) * 1000)
        if left <= 0:
            raise ExecutionError(ErrorCode.TIMEOUT,
                                 f"the request's {budget_ms} ms budget ran out before it could start")
        return left

    async def execute(self, data: bytes, kind: str, received: float) -> ExecuteResult:
        t0 = time.perf_counter()
        result = None
        compiled = None
        if self.pool.warm is not None:
            # A tenant's warm run: its worker decodes the bars, not this loop (node/raw_execute.py).
            try:
                result = await execute_in_worker(self, data, kind, received)
            except Declined as declined:
                compiled = declined.compiled
            except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
                result = ExecuteResult(success=False, error=error_of(exc, "execute"))
        if result is None:
            result = await self.execute_decoded(data, kind, received, compiled)
        result.node_id = self.settings.node_id
        result.execution_time_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        self.metrics.finished("execute", result.error.code if result.error else None, result.execution_time_ms)
        return result

    async def execute_decoded(self, data: bytes, kind: str, received: float,
                              compiled: tuple | None = None) -> ExecuteResult:
        """Execute with the whole request decoded here; `compiled`: (CompiledStrategy, hit)
        when the code was already looked up for this request."""
        request_id = None
        try:
            req = decode(data, ExecuteRequest, kind)
            request_id = req.request_id
            annotate_request(req)  # span attributes (hashed user id, bars, ...) and log request id
            check_language(req.language)
            budget_ms = req.timeout_ms if req.timeout_ms is not None else self.settings.default_timeout_ms
            compiled, hit = compiled if compiled is not None else self.cache.get(req.code)
            self.metrics.compile(hit)
            job = execute_job(req, self.settings, compiled, budget_ms)
            if self.reference is not None:
                job = await self.reference(compiled, job)
            job.timeout_ms = self._remaining_ms(received, budget_ms)
            outcome = await self.pool.run(job, tenant=identity.tenant_of(req.user_id))
            result = ExecuteResult(
                success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
                performance=outcome.performance, result=outcome.result, logs=outcome.logs,
                error=outcome.error,
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            result = ExecuteResult(success=False, error=error_of(exc, "execute"))
        result.request_id = request_id
        return result

    async def validate(self, data: bytes, kind: str, received: float) -> ValidateResult:
        t0 = time.perf_counter()
        request_id = None
        try:
            req = decode(data, ValidateRequest, kind)
            request_id = req.request_id
            annotate_request(req)
            check_language(req.language)
            compiled, hit = self.cache.get(req.code)
            self.metrics.compile(hit)
            result = ValidateResult(valid=True, style=compiled.style, imports=list(compiled.imports))
        except Exception as exc:  # noqa: BLE001 - every failure becomes a reply
            result = ValidateResult(valid=False, error=error_of(exc, "validate"))
        result.request_id = request_id
        result.node_id = self.settings.node_id
        result.execution_time_ms = round((time.perf_counter() - t0) * 1000.0, 3)
        self.metrics.finished("validate", result.error.code if result.error else None, result.execution_time_ms)
        return result

    def health(self) -> Health:
        pool = self.pool.state()
        in_flight, queued = self.admission_state()
        connected = self.nats_connected()
        status = "draining" if self.draining else ("ok" if pool.healthy and connected else "degraded")
        s = self.settings
        return Health(
            status=status, version=__version__, node_id=s.node_id,
            uptime_s=round(time.monotonic() - self.started, 3), nats_connected=connected,
            in_flight=in_flight, queued=queued,
            limits=Limits(max_workers=s.max_workers, max_queue=s.max_queue,
                          max_timeout_seconds=s.max_timeout_seconds, max_memory_mb=s.max_memory_mb,
                          max_code_chars=contract_limits.MAX_CODE_CHARS, max_bars=contract_limits.MAX_BARS,
                          max_strategies_per_tenant=s.max_strategies_per_tenant,
                          max_versions_per_strategy=s.max_versions_per_strategy,
                          max_deployments_per_tenant=s.max_deployments_per_tenant,
                          max_secrets_per_tenant=s.max_secrets_per_tenant),
            pool=pool, isolation=list(self.pool.layers), trust_body_user_id=s.trust_body_user_id,
            nats_account=self.nats_account,
        )

    def refused(self, subject: str) -> Any:
        """The OVERLOADED reply for a request that could not even be queued."""
        self.metrics.finished(subject, ErrorCode.OVERLOADED, 0.0)
        error = ErrorInfo(code=ErrorCode.OVERLOADED,
                          message="this node is at capacity; retry shortly or on another node")
        if subject.endswith("validate"):
            return ValidateResult(valid=False, error=error, node_id=self.settings.node_id)
        if subject.startswith(subjects.BACKTEST):
            return BacktestResult(success=False, error=error, node_id=self.settings.node_id)
        if subject == subjects.SCREEN:
            return ScreenResult(success=False, error=error, node_id=self.settings.node_id)
        return ExecuteResult(success=False, error=error, node_id=self.settings.node_id)


def error_headers(error: ErrorInfo | None, kind: str) -> dict[str, str]:
    """The reply's headers (a new dict, the caller's to extend)."""
    headers = {"Content-Type": kind}
    if error is not None:
        headers["Nats-Service-Error"] = error.message[:200].replace("\r", " ").replace("\n", " ")
        headers["Nats-Service-Error-Code"] = _STATUS.get(error.code, "500")
    return headers


_STATUS = {
    ErrorCode.INVALID_REQUEST: "400", ErrorCode.UNSUPPORTED_LANGUAGE: "400",
    ErrorCode.COMPILE_ERROR: "422", ErrorCode.SECURITY_VIOLATION: "403",
    ErrorCode.RUNTIME_ERROR: "422", ErrorCode.TIMEOUT: "408", ErrorCode.MEMORY_LIMIT: "413",
    ErrorCode.OUTPUT_LIMIT: "413", ErrorCode.OVERLOADED: "503", ErrorCode.INTERNAL: "500",
}
