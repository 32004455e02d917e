"""The strategy-facing API: `signal`, `indicator`, `log`/`print`, `params`.

One `StrategyApi` lives for exactly one run inside a one-shot child. Its callables are handed to
untrusted code, so they validate everything and enforce the output limits themselves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from contracts import ErrorCode, ExecutionError

from .protocol import OutputLimits

SIGNAL_CODES = {"BUY": 1, "SELL": -1, "HOLD": 0}
SIGNAL_NAMES = {1: "BUY", -1: "SELL", 0: "HOLD"}


class OutputLimitExceeded(BaseException):
    """BaseException so that `except Exception` in strategy code does not swallow it."""


def signal_code(value: Any) -> int:
    """BUY/SELL/HOLD in any case, or a number's sign; anything else is the strategy's error."""
    if isinstance(value, str):
        code = SIGNAL_CODES.get(value.strip().upper())
        if code is None:
            raise ExecutionError(
                ErrorCode.RUNTIME_ERROR,
                f"invalid signal {value[:40]!r}: a signal is BUY, SELL or HOLD",
            )
        return code
    if value is None:
        return 0
    if isinstance(value, (bool, np.bool_)):
        raise ExecutionError(ErrorCode.RUNTIME_ERROR, "invalid signal True/False: a signal is BUY, SELL or HOLD")
    if isinstance(value, (int, float, np.integer, np.floating)):
        number = float(value)
        return 0 if math.isnan(number) else (1 if number > 0 else (-1 if number < 0 else 0))
    raise ExecutionError(
        ErrorCode.RUNTIME_ERROR,
        f"invalid signal of type {type(value).__name__}: a signal is BUY, SELL or HOLD",
    )


class StrategyApi:
    """Collects what one run emits; `names()` is what the strategy's globals receive."""

    def __init__(self, n_bars: int, index_ns: np.ndarray, limits: OutputLimits) -> None:
        self.n_bars = n_bars
        self.index_ns = index_ns
        self.limits = limits
        self.marks: dict[int, tuple[int, str | None, float | None, float | None]] = {}
        self.indicators: dict[str, list[float | None]] = {}
        self.logs: list[str] = []
        self._log_bytes = 0
        self.exceeded: str | None = None
        # A walk call sees bars 0..n_bars-1 and may mark only its own bar, `floor` (runtime._walk):
        # marking an earlier bar would let it rewrite a past signal with what it sees now.
        self.floor = 0

    # -- limits -------------------------------------------------------------------------
    def _exceed(self, what: str) -> None:
        self.exceeded = self.exceeded or what
        raise OutputLimitExceeded(what)

    # -- the API ------------------------------------------------------------------------
    def _bar(self, at: Any) -> int:
        if at is None:
            return self.n_bars - 1
        if isinstance(at, (int, np.integer)) and not isinstance(at, bool):
            i = int(at)
            i = i + self.n_bars if i < 0 else i
            if not 0 <= i < self.n_bars:
                raise ExecutionError(ErrorCode.RUNTIME_ERROR, f"signal(at={at}) is outside the {self.n_bars} bars")
            return self._not_past(i)
        stamp = getattr(at, "value", None)  # pandas Timestamp -> epoch ns
        if isinstance(stamp, (int, np.integer)):
            i = int(np.searchsorted(self.index_ns[: self.n_bars], stamp))
            if i < self.n_bars and self.index_ns[i] == stamp:
                return self._not_past(i)
        raise ExecutionError(ErrorCode.RUNTIME_ERROR, "signal(at=...) takes a bar position or one of the bars' timestamps")

    def _not_past(self, i: int) -> int:
        if i < self.floor:
            raise ExecutionError(ErrorCode.RUNTIME_ERROR,
                                 f"signal(at=...) for bar {i}: a walked call may only signal its own bar ({self.floor})")
        return i

    def signal(self, type: Any, reason: Any = None, price: Any = None, quantity: Any = None, at: Any = None) -> None:
        if self.n_bars == 0:
            raise ExecutionError(ErrorCode.RUNTIME_ERROR, "signal() needs at least one bar")
        code = signal_code(type)
        i = self._bar(at)
        if i not in self.marks and len(self.marks) >= self.limits.signals:
            self._exceed(f"more than {self.limits.signals} signals")
        self.marks[i] = (
            code,
            None if reason is None else str(reason)[:500],
            None if price is None else float(price),
            None if quantity is None else float(quantity),
        )

    def indicator(self, name: Any, values: Any) -> None:
        key = str(name)[:64]
        if key not in self.indicators and len(self.indicators) >= self.limits.indicators:
            self._exceed(f"more than {self.limits.indicators} indicators")
        if hasattr(values, "to_numpy"):
            values = values.to_numpy()
        array = np.asarray(values, dtype=np.float64).ravel()
        used = sum(len(v) for k, v in self.indicators.items() if k != key)
        if used + array.size > self.limits.indicator_points:
            self._exceed(f"more than {self.limits.indicator_points} indicator points")
        self.indicators[key] = [None if not math.isfinite(x) else x for x in array.tolist()]

    def log(self, *parts: Any) -> None:
        self.write_line(" ".join(str(p) for p in parts))

    def write_line(self, text: str) -> None:
        for line in text.rstrip("\n").split("\n") if text else [""]:
            if len(self.logs) >= self.limits.log_lines:
                self._exceed(f"more than {self.limits.log_lines} log lines")
            self._log_bytes += len(line)
            if self._log_bytes > self.limits.log_bytes:
                self._exceed(f"more than {self.limits.log_bytes} bytes of logs")
            self.logs.append(line[:2000])

    def per_bar(self) -> np.ndarray:
        codes = np.zeros(self.n_bars, dtype=np.int8)
        for i, (code, *_rest) in self.marks.items():
            codes[i] = code
        return codes
