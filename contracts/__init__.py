"""The v1 wire contract: msgspec Structs are the single source of every message."""

from .backtest import BacktestOptions, BacktestRequest, BacktestResult, BarsRef, SweepRow
from .bars import BarArrays, BarRow, Bars, first_out_of_order, from_columns, from_rows, ns_to_iso, to_epoch_ns
from .codec import content_type, decode, encode
from .errors import ErrorCode, ErrorInfo, ExecutionError
from .execute import ExecuteRequest, ExecuteResult, Signal
from .health import Health, IsolationLayer, Limits, PoolState
from .performance import EquityPoint, MonthlyReturn, PerBar, Performance, Trade
from .screen import ScreenRequest, ScreenResult, ScreenRow
from .validate import ValidateRequest, ValidateResult
from . import limits, subjects

__all__ = [
    "BacktestOptions", "BacktestRequest", "BacktestResult", "BarsRef", "SweepRow",
    "BarArrays", "BarRow", "Bars", "first_out_of_order", "from_columns", "from_rows", "ns_to_iso", "to_epoch_ns",
    "content_type", "decode", "encode",
    "ErrorCode", "ErrorInfo", "ExecutionError",
    "ExecuteRequest", "ExecuteResult", "Signal",
    "Health", "IsolationLayer", "Limits", "PoolState",
    "EquityPoint", "MonthlyReturn", "PerBar", "Performance", "Trade",
    "ScreenRequest", "ScreenResult", "ScreenRow",
    "ValidateRequest", "ValidateResult",
    "limits", "subjects",
]
