"""Backtests: signals → positions → trades → equity → metrics (see backtest.engine)."""

from .engine import run_backtest

__all__ = ["run_backtest"]
