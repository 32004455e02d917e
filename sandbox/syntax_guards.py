"""Run-time halves of syntax the compiler allows with a rewrite (sandbox.compiler).

- `x.__name__` becomes `_name_of_(x)`: the one private name strategies may read, and only as a
  string (`type(x).__name__` for logging and dispatch), never an object.
- Every `case` of a `match` statement gets the guard `_match_vet_((a, b, ...))` over the names its
  pattern binds (before the code's own guard): values a pattern pulls out of a sequence, mapping
  or object by C code are vetted like values read through an attribute, item or iteration.
"""

from __future__ import annotations

from typing import Any

from . import guards


def name_of(obj: Any) -> str:
    """`obj.__name__` when it is a string (classes, functions, modules); AttributeError otherwise."""
    from .proxies import ModuleProxy

    if type(obj) is ModuleProxy:
        return _proxy_name(obj)
    try:
        name = getattr(obj, "__name__")
    except Exception:  # noqa: BLE001 - whatever the object raises, the answer is "no such name"
        name = None
    if type(name) is not str:
        raise AttributeError(f"{type(obj).__name__!s} object has no attribute '__name__'")
    return name


def _proxy_name(proxy: Any) -> str:
    from .proxies import proxy_path

    return proxy_path(proxy)


def match_vet(values: tuple) -> bool:
    """The guard of every match case: each captured value passes the sandbox's value check."""
    for value in values:
        guards.check_value(value)
    return True
