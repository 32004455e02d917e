"""From a decoded request to a sandbox Job: bars, limits and the compiled code.

Everything a client can get wrong is caught here, before a child process is spent on it.
"""

from __future__ import annotations

from contracts import (
    BarArrays,
    ErrorCode,
    ExecutionError,
    first_out_of_order,
    from_columns,
    from_rows,
)
from contracts.values import check_parameters as shared_check_parameters
from sandbox.compiler import CompileCache, CompiledStrategy
from sandbox.protocol import Job, OutputLimits

from .config import Settings

LANGUAGES = ("python", "python3", "py")


def check_language(language: str) -> None:
    if language.strip().lower() not in LANGUAGES:
        raise ExecutionError(ErrorCode.UNSUPPORTED_LANGUAGE,
                             f"language {language[:32]!r} is not supported; this node runs: python")


def bars_of(req) -> BarArrays | None:
    """Columnar or row bars as arrays, with the time axis checked."""
    try:
        if req.bars is not None:
            arrays = from_columns(req.bars)
        elif req.market_data is not None:
            arrays = from_rows(req.market_data)
        else:
            return None
    except ValueError as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid bars: {exc}") from None
    disorder = first_out_of_order(arrays.column("timestamp"))
    if disorder is not None:
        i, repeated = disorder
        what = "repeats" if repeated else "goes back in time from"
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"invalid bars: timestamp[{i}] {what} timestamp[{i - 1}]; bars must be in increasing time order")
    return arrays


def check_parameters(parameters: dict) -> None:
    """The shared value check (contracts.values; every request type also runs it at decode)."""
    try:
        shared_check_parameters(parameters)
    except (ValueError, RecursionError) as exc:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid parameters: {exc}") from None


def run_limits(req, settings: Settings) -> tuple[int, int]:
    max_ms = int(settings.max_timeout_seconds * 1000)
    timeout_ms = req.timeout_ms if req.timeout_ms is not None else settings.default_timeout_ms
    if timeout_ms > max_ms:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"timeout_ms {timeout_ms} exceeds this node's limit of {max_ms}")
    memory_mb = req.memory_mb if req.memory_mb is not None else settings.default_memory_mb
    if memory_mb > settings.max_memory_mb:
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             f"memory_mb {memory_mb} exceeds this node's limit of {settings.max_memory_mb}")
    return timeout_ms, memory_mb


def compile_code(cache: CompileCache, code: str) -> tuple[CompiledStrategy, bool]:
    return cache.get(code)


def execute_job(req, settings: Settings, compiled: CompiledStrategy, timeout_ms: int) -> Job:
    _, memory_mb = run_limits(req, settings)
    check_parameters(req.parameters)
    bars = bars_of(req)
    if (bars is None or bars.count == 0) and compiled.style != "classify":
        raise ExecutionError(ErrorCode.INVALID_REQUEST,
                             "no bars: send at least one bar in `bars` or `market_data`")
    return Job(
        kind="execute", code=compiled.to_bytes(), bars=bars, symbol=req.symbol,
        timeframe=req.timeframe, parameters=req.parameters, timeout_ms=timeout_ms,
        memory_mb=memory_mb, limits=OutputLimits(),
    )
