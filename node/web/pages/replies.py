"""JSON answers of the dashboard's page actions: coded errors, strict bodies, NATS failures.

Every action the pages post answers `{"ok": true, ...}` or `{"ok": false, "error": {code,
message, line}}` with the wire contract's error codes (contracts.errors): a bad body is
INVALID_REQUEST naming the field (unknown fields are refused, not ignored), a fleet that does
not answer is TIMEOUT or OVERLOADED, and nothing a client sends is ever INTERNAL.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import nats.errors
from starlette.requests import Request
from starlette.responses import JSONResponse

from contracts import ErrorCode, ErrorInfo, decode, encode, subjects

from ... import sizing

__all__ = ["Refused", "read_body", "nats_request", "ok", "refused", "failure"]

T = TypeVar("T")
MAX_BODY = 512 * 1024  # a strategy's source is at most contracts' Code limit; forms are small


class Refused(Exception):
    def __init__(self, code: ErrorCode | str, message: str, line: int | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.error = ErrorInfo(code=ErrorCode(code), message=message, line=line)
        self.status = status


async def read_body(request: Request, kind: type[T]) -> T:
    """The posted JSON body as `kind` (a forbid_unknown_fields Struct); Refused naming the field."""
    body = await request.body()
    if len(body) > MAX_BODY:
        raise Refused(ErrorCode.INVALID_REQUEST, f"the request body is {len(body):,} bytes; the limit is {MAX_BODY:,}",
                      status=413)
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise Refused(ErrorCode.INVALID_REQUEST, f"the request body is not JSON: {exc}") from None


async def nats_request(nc: Any, subject: str, message: Any, reply_type: type[T], timeout: float = 10.0) -> T:
    """One JSON request as the user, sized (headers included) before it is sent."""
    payload = encode(message)
    headers = {subjects.CONTENT_TYPE: subjects.JSON}
    sizing.check(nc, payload, headers, "the request")
    msg = await nc.request(subject, payload, timeout=timeout, headers=headers)
    return decode(msg.data, reply_type)


def ok(**fields: Any) -> JSONResponse:
    return JSONResponse(msgspec.to_builtins({"ok": True, **fields}))


def refused(error: ErrorInfo | None, status: int = 400) -> JSONResponse:
    error = error or ErrorInfo(code=ErrorCode.INVALID_REQUEST, message="request failed")
    return JSONResponse({"ok": False, "error": msgspec.to_builtins(error)}, status_code=status)


def failure(exc: BaseException) -> JSONResponse:
    """A NATS-side failure as a coded answer (never a stack trace)."""
    if isinstance(exc, Refused):
        return refused(exc.error, exc.status)
    if isinstance(exc, sizing.TooLarge):
        return refused(ErrorInfo(code=ErrorCode.INVALID_REQUEST, message=str(exc)), 413)
    if isinstance(exc, nats.errors.NoRespondersError):
        return refused(ErrorInfo(code=ErrorCode.OVERLOADED, message="no node is serving this request right now"), 503)
    if isinstance(exc, (nats.errors.TimeoutError, TimeoutError)):
        return refused(ErrorInfo(code=ErrorCode.TIMEOUT, message="the fleet did not answer in time"), 504)
    if isinstance(exc, nats.errors.Error):
        return refused(ErrorInfo(code=ErrorCode.OVERLOADED,
                                 message=f"the NATS connection failed: {type(exc).__name__}"), 503)
    raise exc
