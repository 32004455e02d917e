"""One mapping from whatever a handler raised to the `error` of its reply."""

from __future__ import annotations

import logging

from contracts import ErrorCode, ErrorInfo, ExecutionError
from sandbox.pool import SandboxUnavailable

log = logging.getLogger("node.endpoints")


class Overloaded(Exception):
    """No capacity to run (part of) a request now; the caller may retry."""


def error_of(exc: BaseException, endpoint: str) -> ErrorInfo:
    """The reply's error; anything unexpected is the node's own fault: logged, never leaked."""
    if isinstance(exc, ExecutionError):
        return exc.info()
    if isinstance(exc, (SandboxUnavailable, Overloaded)):
        return ErrorInfo(code=ErrorCode.OVERLOADED,
                         message=str(exc) or "this node is at capacity; retry shortly")
    log.error("%s failed inside the node", endpoint, exc_info=exc)
    return ErrorInfo(code=ErrorCode.INTERNAL, message="internal error in the execution node")
