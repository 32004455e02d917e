"""Helpers of the page modules: control-request errors as clear JSON, path parameters checked."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Awaitable

import nats.errors
from starlette.responses import JSONResponse

from contracts import ErrorCode
from node.hosting.client import HostingError

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # contracts.hosting.NAME_PATTERN


class PageError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"code": self.code, "message": self.message}}, status_code=self.status)


def checked_name(value: str, what: str = "deployment") -> str:
    if not NAME.match(value or ""):
        raise PageError(400, ErrorCode.INVALID_REQUEST, f"{what} id must be 1-64 of A-Z a-z 0-9 _ -")
    return value


async def no_options(request, query: tuple[str, ...] = ()) -> None:
    """Refuse what this route does not take (never ignore it): unknown query parameters, and a
    body other than nothing or `{}`. INVALID_REQUEST naming them."""
    extra = sorted(set(request.query_params) - set(query))
    if extra:
        raise PageError(400, ErrorCode.INVALID_REQUEST,
                        f"unknown query parameter(s) {', '.join(map(repr, extra))}: this request takes "
                        + (", ".join(query) if query else "none"))
    if request.method == "POST":
        body = (await request.body()).strip()
        if body and body != b"{}":
            try:
                fields = sorted(json.loads(body)) if body.startswith(b"{") else None
            except ValueError:
                fields = None
            named = f"field(s) {', '.join(map(repr, fields))}" if fields else "a body"
            raise PageError(400, ErrorCode.INVALID_REQUEST, f"this action takes no options; leave out {named}")


async def control(call: Awaitable[Any]) -> Any:
    """A control request's reply, or PageError: the node's code and message (never a traceback)."""
    try:
        return await call
    except HostingError as exc:
        error = exc.error
        code = error.code if error else ErrorCode.INTERNAL
        status = 404 if error and "not found" in error.message else 400 if code == ErrorCode.INVALID_REQUEST else 502
        raise PageError(status, code, error.message if error else "request failed") from None
    except nats.errors.NoRespondersError:
        raise PageError(503, ErrorCode.OVERLOADED, "no strategy node is serving; start one (strategy-node run)") from None
    except (nats.errors.TimeoutError, asyncio.TimeoutError):
        raise PageError(504, ErrorCode.OVERLOADED, "no reply from a strategy node in time; retry") from None
    except nats.errors.ConnectionClosedError:
        raise PageError(503, ErrorCode.OVERLOADED, "your NATS connection closed; sign in again") from None
