"""Error codes of the v1 wire contract and the exception that carries one to the reply."""

from __future__ import annotations

import enum

import msgspec


class ErrorCode(enum.StrEnum):
    """Every way a request can fail; clients branch on these, never on message text."""

    INVALID_REQUEST = "INVALID_REQUEST"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    COMPILE_ERROR = "COMPILE_ERROR"
    SECURITY_VIOLATION = "SECURITY_VIOLATION"
    RUNTIME_ERROR = "RUNTIME_ERROR"
    TIMEOUT = "TIMEOUT"
    MEMORY_LIMIT = "MEMORY_LIMIT"
    OUTPUT_LIMIT = "OUTPUT_LIMIT"
    OVERLOADED = "OVERLOADED"
    INTERNAL = "INTERNAL"


class ErrorInfo(msgspec.Struct, kw_only=True):
    """The `error` object of every reply: a code, a human message and the strategy's line."""

    code: ErrorCode
    message: str
    line: int | None = None


class ExecutionError(Exception):
    """Raised anywhere on the request path; the endpoint turns it into an `ErrorInfo` reply."""

    def __init__(self, code: ErrorCode, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.line = line

    def info(self) -> ErrorInfo:
        return ErrorInfo(code=self.code, message=self.message, line=self.line)
