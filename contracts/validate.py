"""`strategy.v1.validate`: compile and policy-check a strategy without running it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .errors import ErrorInfo
from .execute import Code, Id

Style = Literal["function", "script", "classify"]


class ValidateRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    request_id: Id | None = None


class ValidateResult(msgspec.Struct, kw_only=True):
    valid: bool
    style: Style | None = None
    imports: list[str] = []
    error: ErrorInfo | None = None
    execution_time_ms: float = 0.0
    node_id: str = ""
    request_id: str | None = None
