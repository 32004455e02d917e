"""`talib.abstract` for strategies: a fresh `Function` per use, never the module's shared ones.

talib.abstract keeps one pre-built `Function` object per indicator at module level; its
parameters and input names are settable, so handing those out would let a run change what a
later run of the same process (a warm worker, a sweep batch) computes. Here `abstract.SMA(...)`
runs a new `Function("SMA")` and `abstract.Function(name)` builds a new one.
"""

from __future__ import annotations

from typing import Any, Callable

import talib.abstract as _abstract

from .. import policy


def Function(name: str, *args: Any, **kwargs: Any) -> Any:  # noqa: N802 - talib's spelling
    """A new abstract Function for indicator `name` (e.g. "SMA")."""
    return _abstract.Function(name, *args, **kwargs)


def _indicator(name: str) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        return _abstract.Function(name)(*args, **kwargs)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = f"talib.abstract.{name}: a fresh Function({name!r}) called with these arguments."
    return run


for _name in sorted(policy.MODULE_SURFACES["talib.abstract"] - {"Function"}):
    if hasattr(_abstract, _name):
        globals()[_name] = _indicator(_name)
del _name
