"""`enum` for strategies: the functional API only, on plain Enum kinds.

A `class X(Enum)` statement cannot work in the sandbox (classes may derive only from the code's
own classes, object and exceptions, and the enum metaclass needs its own namespace), so enums are
made with a call: `Side = Enum("Side", ["BUY", "SELL"])` or `Enum("Side", {"BUY": 1, "SELL": -1})`.
Only `names` and `start` are accepted: `type=` (a mixin: any class as a base), `module=`,
`qualname=` and `boundary=` are not.
"""

from __future__ import annotations

import enum as _enum
from typing import Any

from .. import guards


def _maker(kind: type) -> Any:
    def make(name: str, names: Any, *, start: int = 1) -> Any:
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError("an enum name must be an identifier not starting with '_'")
        members = names.replace(",", " ").split() if isinstance(names, str) else list(names)
        for item in members:  # a dict iterates its keys; a list holds names or (name, value) pairs
            key = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(key, str) or not key.isidentifier() or key.startswith("_"):
                raise guards.violation(f"enum member names must be identifiers not starting with '_', got {key!r}")
        return kind(name, names, start=start)

    make.__name__ = make.__qualname__ = kind.__name__
    make.__doc__ = f"{kind.__name__}(name, names, start=1): a new {kind.__name__} class (the functional API)."
    return make


Enum = _maker(_enum.Enum)
IntEnum = _maker(_enum.IntEnum)
Flag = _maker(_enum.Flag)
IntFlag = _maker(_enum.IntFlag)
if hasattr(_enum, "StrEnum"):  # Python 3.11+
    StrEnum = _maker(_enum.StrEnum)
