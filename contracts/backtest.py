"""`strategy.v1.backtest`: a strategy over inline or stored bars, optionally over a parameter grid."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from .bars import Bars, BarRow, Timestamp, check_row_symbols
from .errors import ErrorInfo
from .execute import Code, Id, MemoryMb, Parameters, TimeoutMs
from .limits import MAX_BARS, MAX_GRID_POINTS
from .performance import Performance
from .values import check_grid, check_parameters


DEFAULT_RANK_BY = "sharpe_ratio"


class BacktestOptions(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fill model, costs and sizing. `mode="backtesting_py"` reproduces backtesting.py 0.6.6.

    Every option applies or is refused: an unknown option, or one the chosen mode cannot honour,
    fails decoding with INVALID_REQUEST naming the option and the mode (``option_refusals``;
    what a request type cannot honour: ``sweep_refusals``).
    """

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
    # backtesting_py mode with fractional=True: FractionalBacktest's `fractional_unit` (the
    # smallest tradable fraction of one unit); None means 1e-6 there. Refused in native mode.
    fractional_unit: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    # per-bar output: Performance.per_bar (position, equity, drawdown on every bar) and the
    # equity curve on every bar up to the request's bar limit. Refused in sweeps.
    per_bar: bool = False

    def __post_init__(self) -> None:
        problems = option_refusals(self)
        if problems:
            raise ValueError(problems[0])


def option_refusals(o: "BacktestOptions") -> list[str]:
    """Why an option cannot be honoured in its mode: one sentence per refused option, each
    naming the option and the mode (empty when every option applies)."""
    out = []
    if o.mode == "backtesting_py":
        if o.fill != "close":
            out.append(f"options.fill={o.fill!r} is not available in mode 'backtesting_py': it models "
                       "backtesting.py with trade_on_close=True (fills at the signal bar's close); use "
                       "mode 'native' for next-open fills")
        if o.periods_per_year is not None:
            out.append("options.periods_per_year is not available in mode 'backtesting_py': it "
                       "annualizes over calendar periods as backtesting.py does; use mode 'native'")
    elif o.fractional_unit is not None:
        out.append(f"options.fractional_unit applies only to mode 'backtesting_py' (FractionalBacktest); "
                   f"mode {o.mode!r} sizes fractional positions exactly")
    if o.fractional_unit is not None and not o.fractional:
        out.append(f"options.fractional_unit needs options.fractional=true (mode {o.mode!r})")
    return out


class BarsRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Bars replayed from the BARS stream: `[start, end]` inclusive, in bar time."""

    symbol: Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    timeframe: Annotated[str, msgspec.Meta(min_length=1, max_length=16, pattern=r"^[A-Za-z0-9]+$")]
    start: Timestamp | None = None
    end: Timestamp | None = None


class BacktestRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    bars: Bars | None = None
    market_data: Annotated[list[BarRow], msgspec.Meta(max_length=MAX_BARS)] | None = None
    source: BarsRef | None = None
    symbol: Annotated[str, msgspec.Meta(max_length=64)] = ""
    timeframe: Annotated[str, msgspec.Meta(max_length=16)] = ""
    parameters: Parameters = {}
    grid: Annotated[dict[str, list[Any]], msgspec.Meta(max_length=8)] | None = None
    rank_by: str = DEFAULT_RANK_BY
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
        if self.market_data is not None:
            check_row_symbols(self.market_data, self.symbol)
        for problem in sweep_refusals(self):
            raise ValueError(problem)
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


def sweep_refusals(req: "BacktestRequest") -> list[str]:
    """Options a request type cannot honour: a sweep returns no trades, curves or per-bar
    output per point (a non-default `max_trades`/`equity_points`, or `per_bar`, is refused);
    a single backtest ranks nothing (`rank_by` is refused without `grid`)."""
    o, out = req.options, []
    mode = f"mode {o.mode!r}"
    if req.grid is not None:
        if o.max_trades not in (0, 1_000):
            out.append(f"options.max_trades is not available in a sweep ({mode}): grid points "
                       "return no trades; run the chosen point as a single backtest")
        if o.equity_points not in (0, 500):
            out.append(f"options.equity_points is not available in a sweep ({mode}): grid points "
                       "return no equity curve; run the chosen point as a single backtest")
        if o.per_bar:
            out.append(f"options.per_bar is not available in a sweep ({mode}): grid points "
                       "return no per-bar output; run the chosen point as a single backtest")
    elif req.rank_by != DEFAULT_RANK_BY:
        out.append(f"rank_by applies to a sweep (`grid`); a single backtest ({mode}) ranks nothing")
    return out


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
