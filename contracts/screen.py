"""`strategy.v1.screen`: a `classify_symbol(symbol)` strategy over a universe of stored symbols.

Bars come from the BARS store (`bars.<timeframe>.<symbol>`), between `start` and `end`
(inclusive, bar time; ISO-8601 or epoch ms) and at most the last `max_bars` bars of each symbol.
Each symbol of `symbols` runs once, in its own sandbox process, with its own bars as
`df`/`data` and every symbol of `universe` (default: `symbols`) available to the accessors
(`get_price_data`, `get_multiple_symbols_data`, ...).

A symbol passes when `classify_symbol` returns a truthy JSON value (`true`, a non-zero number,
a non-empty string/list/object); `passed` lists those symbols in request order. A symbol whose
run fails (no bars stored, the strategy raised, timed out...) does not pass; its row in
`results` carries the error. The request itself fails only when it cannot run at all (bad
request, compile error, the universe too large).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from .bars import Timestamp
from .errors import ErrorInfo
from .execute import Code, Id, MemoryMb, Parameters, TimeoutMs
from .limits import MAX_BARS, MAX_SYMBOLS
from .values import check_parameters

Symbol = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Timeframe = Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")]


class ScreenRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    symbols: Annotated[list[Symbol], msgspec.Meta(min_length=1, max_length=MAX_SYMBOLS)]
    universe: Annotated[list[Symbol], msgspec.Meta(max_length=MAX_SYMBOLS)] | None = None
    timeframe: Timeframe = "1d"
    start: Timestamp | None = None
    end: Timestamp | None = None
    max_bars: Annotated[int, msgspec.Meta(ge=1, le=MAX_BARS)] = 1_000
    parameters: Parameters = {}
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    user_id: Id | None = None
    strategy_id: Id | None = None
    request_id: Id | None = None

    def __post_init__(self) -> None:
        if len(set(self.symbols)) != len(self.symbols):
            raise ValueError("symbols lists a symbol more than once")
        if self.universe is not None and len(set(self.symbols) | set(self.universe)) > MAX_SYMBOLS:
            raise ValueError(f"symbols and universe name more than {MAX_SYMBOLS} symbols together")
        check_parameters(self.parameters)


class ScreenRow(msgspec.Struct, kw_only=True):
    symbol: str
    passed: bool = False
    result: Any = None  # what classify_symbol returned (JSON-safe)
    bars: int = 0
    error: ErrorInfo | None = None


class ScreenResult(msgspec.Struct, kw_only=True):
    success: bool
    passed: list[str] = []
    results: list[ScreenRow] = []
    logs: list[str] = []
    # True when the node stopped screening because the reply could not hold more rows: `results`
    # and `passed` cover only the symbols screened, and error OUTPUT_LIMIT says how many.
    truncated: bool = False
    error: ErrorInfo | None = None
    execution_time_ms: float = 0.0
    node_id: str = ""
    request_id: str | None = None
