"""`strategy.v1.execute`: run a strategy over bars, get signals, indicators and metrics."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .bars import Bars, BarRow, check_row_symbols
from .errors import ErrorInfo
from .limits import (
    MAX_BARS,
    MAX_CODE_CHARS,
    MAX_ID_CHARS,
    MAX_MEMORY_MB,
    MAX_PARAMETERS,
    MAX_TIMEOUT_MS,
    MIN_MEMORY_MB,
)
from .performance import Performance
from .values import check_parameters

Code = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CODE_CHARS)]
Id = Annotated[str, msgspec.Meta(max_length=MAX_ID_CHARS)]
TimeoutMs = Annotated[int, msgspec.Meta(ge=1, le=MAX_TIMEOUT_MS)]
MemoryMb = Annotated[int, msgspec.Meta(ge=MIN_MEMORY_MB, le=MAX_MEMORY_MB)]
Parameters = Annotated[dict[str, Any], msgspec.Meta(max_length=MAX_PARAMETERS)]
SignalType = Literal["BUY", "SELL", "HOLD"]


class ExecuteRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Bars come as columnar `bars` or as the older `market_data` rows, not both.

    A field this Struct does not declare is refused (INVALID_REQUEST naming it), never ignored.
    """

    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    bars: Bars | None = None
    market_data: Annotated[list[BarRow], msgspec.Meta(max_length=MAX_BARS)] | None = None
    symbol: Id = ""
    timeframe: Annotated[str, msgspec.Meta(max_length=16)] = ""
    parameters: Parameters = {}
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    user_id: Id | None = None
    strategy_id: Id | None = None
    request_id: Id | None = None

    def __post_init__(self) -> None:
        if self.bars is not None and self.market_data is not None:
            raise ValueError("send bars either as `bars` (columnar) or `market_data` (rows), not both")
        if self.market_data is not None:
            check_row_symbols(self.market_data, self.symbol)
        check_parameters(self.parameters)


class Signal(msgspec.Struct, kw_only=True):
    timestamp: str
    type: SignalType
    price: float | None = None
    quantity: float | None = None
    reason: str | None = None


class ExecuteResult(msgspec.Struct, kw_only=True):
    success: bool
    signals: list[Signal] = []
    indicators: dict[str, list[float | None]] = {}
    performance: Performance | None = None
    result: Any = None
    logs: list[str] = []
    error: ErrorInfo | None = None
    execution_time_ms: float = 0.0
    node_id: str = ""
    request_id: str | None = None
