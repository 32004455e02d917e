"""Execute in a tenant's warm worker without decoding the bars on the event loop (issue 18).

The node's event loop is one thread; a warm worker is a process of its own, and a tenant may
hold several. Decoding ~53 KB of JSON bars into Python lists and converting them to arrays was
most of the node's own work per warm request, serialized on that one thread. On this path the
node decodes only the request's small fields (`ExecuteHead`: the bars are skipped as raw bytes,
`msgspec.Raw`, without building a value per number) and sends the request's bytes as they
arrived to the worker, which decodes the whole request and checks its bars there
(sandbox/request_bars.py).

Strictness is the same as on the decoding path (`Endpoints.execute_decoded`), by construction:

* `ExecuteHead` declares the same fields with the same types and limits as `ExecuteRequest`, and
  refuses unknown ones; a request it cannot decode takes the decoding path, which gives the
  canonical error;
* the node's checks run in the same order as on the decoding path (language, compile, limits,
  parameters); when one fails, the full request is decoded on the loop: if that fails, its error
  is the one the decoding path would have given first, else the check's own error is;
* the worker decodes the same bytes with the same decoder and runs the same bar checks; when it
  refuses them, the node runs its own checks on those bytes and answers with their error. Should
  the node's checks pass where the worker's did not, the request takes the decoding path.

So every error code and message is the one the decoding path gives; only well-formed requests
(the common case) skip the node-side decode. Identity is unchanged: the tenant comes from the
verified NATS identity (node/identity.py), the body's `user_id` only narrows it.

Only runs that need nothing else from the bars on the node take this path: a strategy whose
accessors read reference data (chosen by the bars' times) and classify-style code go the
decoding way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from backtest.refdata_preload import code_names, wants_refdata
from contracts import ErrorCode, ExecuteRequest, ExecuteResult, ExecutionError, decode
from contracts.subjects import MSGPACK
from sandbox.protocol import Job, OutputLimits
from sandbox.request_bars import ExecuteHead, present

from . import identity
from .failures import error_of
from .jobs import bars_of, check_language, check_parameters as job_check_parameters, run_limits
from .telemetry import annotate_ids

if TYPE_CHECKING:
    from .endpoints import Endpoints

_DECODERS = {MSGPACK: msgspec.msgpack.Decoder(ExecuteHead)}
_JSON = msgspec.json.Decoder(ExecuteHead)

class CodeMemo:
    """The compile, marshalled code and eligibility of the sources warm requests send, keyed by
    the source text itself (issue 18: a tenant sends the same code run after run; looking it up
    in the compile cache hashed the whole source with sha256 on every request).

    The key is the str: a dict lookup compares the text itself after its hash, so two sources
    never share an entry, whatever their hashes. Only sources that compiled are held (a failing
    one goes to the compile cache, which keeps the failure and raises it again). A hit counts
    as a compile-cache hit, as the cache lookup it replaces would have. Bounded: cleared when
    full. Eligible: not classify-style and reads no reference data, a fact of the compile."""

    MAX = 256

    __slots__ = ("cache", "_entries")

    def __init__(self, cache) -> None:
        self.cache = cache
        self._entries: dict[str, tuple] = {}

    def get(self, source: str) -> tuple:
        """(compiled, hit, the code's bytes for the Job, eligible); raises as CompileCache.get."""
        entry = self._entries.get(source) if type(source) is str else None
        if entry is not None:
            self.cache.hits += 1
            return entry
        compiled, hit = self.cache.get(source)
        eligible = compiled.style != "classify" and not wants_refdata(code_names(compiled.code))
        entries = self._entries
        if len(entries) >= self.MAX:
            entries.clear()
        code = compiled.to_bytes()
        entries[source] = (compiled, True, code, eligible)
        return compiled, hit, code, eligible


def head_of(data: bytes, kind: str) -> ExecuteHead | None:
    """The request's small fields, or None: it does not decode here, or it does not carry
    exactly one of `bars` / `market_data` (the decoding path answers it)."""
    try:
        head = _DECODERS.get(kind, _JSON).decode(data)
    except Exception:  # noqa: BLE001 - any failure: the decoding path gives the canonical error
        return None
    if present(head.bars) == present(head.market_data):
        return None
    return head


class Declined(Exception):
    """This request takes the decoding path; `compiled` carries the compile already done for it."""

    def __init__(self, compiled: tuple | None = None) -> None:
        super().__init__()
        self.compiled = compiled


def _canonical(data: bytes, kind: str, exc: BaseException, request_id: str | None) -> ExecuteResult:
    """The reply of the decoding path for `data`, given that `exc` is the first error of the
    checks that follow the decode: the decode's own error when there is one, else `exc`."""
    try:
        decode(data, ExecuteRequest, kind)
    except ExecutionError as decoded:
        return ExecuteResult(success=False, error=error_of(decoded, "execute"))
    return ExecuteResult(success=False, error=error_of(exc, "execute"), request_id=request_id)


def _refused(data: bytes, kind: str, request_id: str | None) -> ExecuteResult | None:
    """The decoding path's reply to a request whose bars a worker refused, every check before
    the bars having passed (None: the node's checks accept it)."""
    try:
        req = decode(data, ExecuteRequest, kind)
    except ExecutionError as exc:
        return ExecuteResult(success=False, error=exc.info())  # no request id: it did not decode
    try:
        bars = bars_of(req)
        if bars is None or bars.count == 0:
            raise ExecutionError(ErrorCode.INVALID_REQUEST,
                                 "no bars: send at least one bar in `bars` or `market_data`")
    except ExecutionError as exc:
        return ExecuteResult(success=False, error=exc.info(), request_id=request_id)
    return None


async def execute_in_worker(ep: "Endpoints", data: bytes, kind: str, received: float) -> ExecuteResult:
    """The reply to a warm-eligible request, its bars decoded by the worker. Raises Declined when
    the request takes the decoding path instead (not eligible, or the worker refused bars the
    node's own checks accept)."""
    head = head_of(data, kind)
    if head is None:
        raise Declined
    tenant = identity.tenant_of(head.user_id)
    if not tenant:
        raise Declined  # a fresh child: the decoding path (nothing to win by moving the decode)
    request_id = head.request_id
    span = annotate_ids(request_id, head.strategy_id, head.user_id)  # the recording span, or None
    try:
        check_language(head.language)
        compiled, hit, code, eligible = ep.warm_code.get(head.code)
    except Exception as exc:  # noqa: BLE001 - the decoding path's error for the same bytes
        return _canonical(data, kind, exc, request_id)
    if not eligible:
        raise Declined((compiled, hit))
    ep.metrics.compile(hit)
    try:
        _, memory_mb = run_limits(head, ep.settings)
        job_check_parameters(head.parameters)
        budget_ms = head.timeout_ms if head.timeout_ms is not None else ep.settings.default_timeout_ms
        timeout_ms = ep._remaining_ms(received, budget_ms)
    except Exception as exc:  # noqa: BLE001
        return _canonical(data, kind, exc, request_id)
    job = Job(kind="execute", code=code, bars=None, symbol=head.symbol,
              timeframe=head.timeframe, parameters=head.parameters, timeout_ms=timeout_ms,
              memory_mb=memory_mb, limits=OutputLimits(), request=data, request_kind=kind)
    try:
        outcome = await ep.pool.run(job, tenant=tenant)
    except Exception as exc:  # noqa: BLE001 - as on the decoding path: every failure is a reply
        return ExecuteResult(success=False, error=error_of(exc, "execute"), request_id=request_id)
    if outcome.invalid_request:
        refused = _refused(data, kind, request_id)
        if refused is None:
            raise Declined  # the node accepts what the worker refused: the decoding path runs it
        return refused
    if span is not None:
        span.set_attribute("strategy.bar_count", outcome.bar_count)
    return ExecuteResult(
        success=outcome.success, signals=outcome.signals, indicators=outcome.indicators,
        performance=outcome.performance, result=outcome.result, logs=outcome.logs, error=outcome.error,
        request_id=request_id,
    )
