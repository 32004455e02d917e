"""How the client commands print results: readable lines, or one JSON document with --json."""

from __future__ import annotations

import json
import sys
from typing import Any

import msgspec

from contracts import ExecuteResult, Performance


def param_hint(params: dict[str, Any]) -> str | None:
    """Why a strategy may have failed on a --param: text where a number was probably meant."""
    texts = [f"{k}={v!r}" for k, v in params.items() if isinstance(v, str)]
    if not texts:
        return None
    return (f"note: {', '.join(texts)} reached the strategy as text; --param values are read as JSON "
            f"(fast=10, ratio=0.5, on=true, xs=[1,2]), anything else stays a string")


def error_line(error: Any) -> str:
    """An error's message with its strategy line, named once."""
    if error.line and f"line {error.line}" not in error.message:
        return f"{error.message} (line {error.line})"
    return error.message


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.4f}"
    return str(value)


def metrics_mean_something(result: ExecuteResult, last_bar: str | None = None) -> bool:
    """Backtest metrics are shown for trades, not for a lone signal on the last bar."""
    p = result.performance
    if p is None or not result.signals or not p.total_trades:
        return False
    return not (last_bar is not None and all(s.timestamp == last_bar for s in result.signals))


def print_execute(result: ExecuteResult, out=None, *, last_bar: str | None = None,
                  params: dict[str, Any] | None = None) -> None:
    out = out or sys.stdout
    status = "ok" if result.success else f"FAILED {result.error.code}"
    print(f"{status}  ({result.execution_time_ms:.2f} ms on {result.node_id})", file=out)
    if result.error:
        print(f"  error: {error_line(result.error)}", file=out)
        hint = param_hint(params or {}) if result.error.code == "RUNTIME_ERROR" else None
        if hint:
            print(f"  {hint}", file=out)
    if result.success and not result.signals and result.result is None:
        print("no signals", file=out)
    if result.signals:
        print(f"signals ({len(result.signals)}):", file=out)
        for s in result.signals[-20:]:
            extra = f"  {s.reason}" if s.reason else ""
            print(f"  {s.timestamp}  {s.type:<4}  {_fmt(s.price)}{extra}", file=out)
        if len(result.signals) > 20:
            print(f"  ... {len(result.signals) - 20} earlier signals not shown", file=out)
    if result.indicators:
        print("indicators: " + ", ".join(f"{k} (last {_fmt(v[-1] if v else None)})"
                                         for k, v in result.indicators.items()), file=out)
    if metrics_mean_something(result, last_bar):
        print_performance(result.performance, out)
    elif result.signals:
        print("performance: not shown (no completed trade from one signal on the last bar; return a "
              "Series/array per bar, or use `strategy-node backtest`, for metrics)"
              if last_bar is not None and all(s.timestamp == last_bar for s in result.signals)
              else "performance: no trades from these signals", file=out)
    if result.result is not None:
        print(f"result: {json.dumps(result.result)[:500]}", file=out)
    for line in result.logs[-20:]:
        print(f"  log: {line}", file=out)


def print_performance(p: Performance, out=None) -> None:
    out = out or sys.stdout
    rows = [
        ("total return %", p.total_return), ("buy & hold %", p.buy_and_hold_return),
        ("max drawdown %", p.max_drawdown), ("sharpe", p.sharpe_ratio), ("sortino", p.sortino_ratio),
        ("trades", p.total_trades), ("win rate %", p.win_rate), ("profit factor", p.profit_factor),
        ("final equity", p.final_equity),
    ]
    print("performance:", file=out)
    for name, value in rows:
        print(f"  {name:<16} {_fmt(value)}", file=out)


def _emit_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.encode(obj).decode() + "\n")
