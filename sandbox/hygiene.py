"""Between two runs that share a process, leave nothing of the first that the second can observe.

Most runs have a process of their own (a one-shot child) and need none of this. Two paths run
several jobs in one process: a sweep chunk (`runtime.run_points`, one backtest per parameter
set) and a tenant's warm worker (`serve` with `Job.keep`). Between two of their runs,
`scrub()` puts the process back to the state it was in before its first untrusted run:

* garbage is collected until none is left, so a generator or `with` block a strategy left
  suspended in a reference cycle is finalized now (its `finally`/`__exit__` runs here, charged to
  the run that created it), not in the middle of the next run;
* numpy's per-context error state (`np.errstate` modes, the error callback, the buffer size) is
  set back to the baseline value: a generator suspended inside `np.errstate(call=cb)` would
  otherwise leave `cb` installed, to run, with whatever it captured, in the next run;
* the guards' attribute-decision cache goes back to its baseline entries, so no class created
  during a run stays alive as a key (with everything it holds);
* the per-execution violation record is cleared; the decimal context (if the module is loaded)
  is replaced by a copy of the baseline one; numpy's legacy global generator is reseeded from
  OS entropy (as every child's is before its first run), so no run draws from where the
  previous one left it;
* the global setters strategies cannot reach (the policy denies them) are checked anyway:
  numpy print options, pandas options, talib compatibility and unstable periods, warnings
  filters, the interpreter's recursion limit, int-string limit and switch interval, gc
  thresholds. Any difference from the baseline, and any garbage still appearing after
  `MAX_PASSES` collections, makes `scrub()` return False: the process is then not trusted with
  another run (a sweep chunk stops and the node runs its remaining points in fresh children; a
  warm worker is retired).

`capture()` records the baseline. It runs when this module is imported (in the zygote, before
any child exists) and again in a child, after its trusted prewarm run and before the first job
that shares the process (`sandbox.serve`); a one-shot child never pays for it.
"""

from __future__ import annotations

import copy
import gc
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import talib
from numpy._core import _ufunc_config
from pandas._config import config as _pd_config

from . import guards

MAX_PASSES = 4

_EXTOBJ = _ufunc_config._extobj_contextvar
_BASE_EXTOBJ = _EXTOBJ.get()
_UNSTABLE = (
    "ADX", "ATR", "CMO", "DX", "EMA", "HT_DCPERIOD", "HT_DCPHASE", "HT_PHASOR", "HT_SINE",
    "HT_TRENDLINE", "HT_TRENDMODE", "KAMA", "MAMA", "MINUS_DI", "MINUS_DM", "NATR",
    "PLUS_DI", "PLUS_DM", "RSI", "T3",
)


def _printoptions() -> dict[str, Any]:
    return np.get_printoptions()


def _talib_state() -> tuple[int, tuple[int, ...]]:
    return talib.get_compatibility(), tuple(talib.get_unstable_period(name) for name in _UNSTABLE)


def _interpreter_state() -> tuple[Any, ...]:
    return (sys.getrecursionlimit(), sys.get_int_max_str_digits(), sys.getswitchinterval(),
            gc.isenabled(), gc.get_threshold())


@dataclass
class _Baseline:
    extobj: Any
    printoptions: dict[str, Any]
    pandas_options: dict[str, Any]
    talib: tuple[int, tuple[int, ...]]
    warning_filters: list[Any]
    showwarning: Any
    interpreter: tuple[Any, ...]
    decisions: dict[Any, int]
    decimal_context: Any


_baseline: _Baseline | None = None
last_failure: str | None = None  # why the last scrub() returned False (None when it returned True)


def capture() -> None:
    """Record the state every later run must start from (no untrusted code has run yet)."""
    global _baseline
    decimal = sys.modules.get("decimal")
    _baseline = _Baseline(
        extobj=_EXTOBJ.get(),
        printoptions=_printoptions(),
        pandas_options=copy.deepcopy(_pd_config._global_config),
        talib=_talib_state(),
        warning_filters=list(warnings.filters),
        showwarning=warnings.showwarning,
        interpreter=_interpreter_state(),
        decisions=guards.decisions_snapshot(),
        decimal_context=decimal.getcontext().copy() if decimal is not None else None,
    )


def reset_numpy() -> None:
    """numpy's error modes, error callback and buffer size back to the baseline.

    Called after every strategy call, before the runtime computes anything from its return, so
    an `np.errstate` left open by the strategy (a suspended generator) cannot make the signal
    and metric code raise, or hand its floating-point events to a strategy callback.
    """
    _EXTOBJ.set(_BASE_EXTOBJ if _baseline is None else _baseline.extobj)


def _collect() -> bool:
    """Collect until a pass finds nothing (finalizers may create new garbage); False if it never
    settles within MAX_PASSES."""
    for _ in range(MAX_PASSES):
        if gc.collect() == 0 and not gc.garbage:
            return True
    return False


def scrub() -> bool:
    """Put the process back to its baseline; False if it cannot be shown to be there."""
    global last_failure
    base = _baseline
    if base is None:
        last_failure = "no baseline captured"
        return False
    settled = _collect()
    # After the collection: finalizers run above may have changed any of these.
    _EXTOBJ.set(base.extobj)
    np.random.seed(int.from_bytes(os.urandom(4), "little"))
    stdlib_random = sys.modules.get("sandbox.stdlib.safe_random")  # the `random` strategies import
    if stdlib_random is not None:
        stdlib_random.reseed()
    guards.restore_decisions(base.decisions)
    guards.reset_violations()
    decimal = sys.modules.get("decimal")
    if decimal is not None:
        decimal.setcontext((base.decimal_context or decimal.Context()).copy())
    differs = [name for name, same in (
        ("numpy print options", _printoptions() == base.printoptions),
        ("pandas options", _pd_config._global_config == base.pandas_options),
        ("talib state", _talib_state() == base.talib),
        ("warnings filters", warnings.filters == base.warning_filters),
        ("warnings.showwarning", warnings.showwarning is base.showwarning),
        ("interpreter settings", _interpreter_state() == base.interpreter),
    ) if not same]
    last_failure = "; ".join(([] if settled else [f"garbage still appearing after {MAX_PASSES} collections"])
                             + [f"{name} changed" for name in differs]) or None
    return last_failure is None


capture()
