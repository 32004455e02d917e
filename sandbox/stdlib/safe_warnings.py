"""`warnings` for strategies: what `warn()` and the libraries warn lands in the run's logs."""

from __future__ import annotations

import warnings as _warnings
from typing import Any, Callable

_sink: Callable[[str], None] | None = None
_original_showwarning = _warnings.showwarning


def bind_sink(sink: Callable[[str], None] | None) -> None:
    """Where this process's warnings go (the run's log lines); None: the usual stderr."""
    global _sink
    _sink = sink


def _show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    sink = _sink
    if sink is None:
        _original_showwarning(message, category, filename, lineno, file, line)
        return
    sink(f"{category.__name__}: {message}")


_warnings.showwarning = _show


def warn(message: Any, category: Any = None, stacklevel: int = 1) -> None:
    """warnings.warn(message[, category]): a log line `Category: message` of the run."""
    if category is None:
        category = UserWarning
    if not (isinstance(category, type) and issubclass(category, Warning)):
        raise TypeError("category must be a Warning subclass")
    sink = _sink
    if sink is None:  # outside a run (tests of this module)
        _warnings.warn(message, category, stacklevel=2)
        return
    sink(f"{category.__name__}: {message}")  # every call is logged: no once-per-location filter
