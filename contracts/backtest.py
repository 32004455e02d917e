"""`strategy.v1.backtest`: a strategy over inline or stored bars, optionally over a parameter grid."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .bars import Bars, BarRow, Timestamp
from .errors import ErrorInfo
from .execute import Code, Id, MemoryMb, Parameters, TimeoutMs
from .limits import MAX_BARS, MAX_GRID_POINTS
from .performance import Performance
from .values import check_grid, check_parameters


class BacktestOptions(msgspec.Struct, kw_only=True):
    """Fill model, costs and sizing. `mode="backtesting_py"` reproduces backtesting.py 0.6.6."""

    mode: Literal["native", "backtesting_py"] = "native"
    initial_cash: Annotated[float, msgspec.Meta(gt=0)] = 10_000.0
    allow_short: bool = False
    fill: Literal["close", "next_open"] = "close"
    commission_rate: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    commission_fixed: Annotated[float, msgspec.Meta(ge=0)] = 0.0
    slippage_rate: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.0
    fractional: bool = True
    position_size: Annotated[float, msgspec.Meta(gt=0, le=1)] = 1.0
    stop_loss_pct: Annotated[float, msgspec.Meta(gt=0, lt=100)] | None = None
    take_profit_pct: Annotated[float, msgspec.Meta(gt=0)] | None = None
    risk_free_rate: float = 0.0
    periods_per_year: Annotated[float, msgspec.Meta(gt=0)] | None = None
    max_trades: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 1_000
    equity_points: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 500


class BarsRef(msgspec.Struct, kw_only=True):
    """Bars replayed from the BARS stream: `[start, end]` inclusive, in bar time."""

    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    timeframe: Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")]
    start: Timestamp | None = None
    end: Timestamp | None = None


class BacktestRequest(msgspec.Struct, kw_only=True):
    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    bars: Bars | None = None
    market_data: Annotated[list[BarRow], msgspec.Meta(max_length=MAX_BARS)] | None = None
    source: BarsRef | None = None
    symbol: Annotated[str, msgspec.Meta(max_length=64)] = ""
    timeframe: Annotated[str, msgspec.Meta(max_length=16)] = ""
    parameters: Parameters = {}
    grid: Annotated[dict[str, list[Any]], msgspec.Meta(max_length=8)] | None = None
    rank_by: str = "sharpe_ratio"
    options: BacktestOptions = msgspec.field(default_factory=BacktestOptions)
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    user_id: Id | None = None
    strategy_id: Id | None = None
    request_id: Id | None = None

    def __post_init__(self) -> None:
        given = sum(x is not None for x in (self.bars, self.market_data, self.source))
        if given > 1:
            raise ValueError("give bars one way: `bars`, `market_data` or `source`")
        parameters_size = check_parameters(self.parameters)
        if self.grid is not None:
            points = 1
            for name, values in self.grid.items():
                if not values:
                    raise ValueError(f"grid.{name} is empty")
                points *= len(values)
            if points > MAX_GRID_POINTS:
                raise ValueError(f"grid has {points} points; the limit is {MAX_GRID_POINTS}")
            check_grid(self.grid, parameters_size)


class SweepRow(msgspec.Struct, kw_only=True):
    parameters: dict[str, Any]
    performance: Performance | None = None
    error: ErrorInfo | None = None


class BacktestResult(msgspec.Struct, kw_only=True):
    success: bool
    performance: Performance | None = None
    sweep: list[SweepRow] | None = None
    # True when `sweep` holds only the best rows that fit the reply (error OUTPUT_LIMIT says how many).
    truncated: bool = False
    signals_count: int = 0
    bars: int = 0
    logs: list[str] = []
    error: ErrorInfo | None = None
    execution_time_ms: float = 0.0
    node_id: str = ""
    request_id: str | None = None
