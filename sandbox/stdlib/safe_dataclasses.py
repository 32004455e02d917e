"""`dataclasses` for strategies: the code's own classes only."""

from __future__ import annotations

import dataclasses as _dc
from typing import Any

from .. import guards

field = _dc.field
is_dataclass = _dc.is_dataclass
FrozenInstanceError = _dc.FrozenInstanceError
InitVar = _dc.InitVar
KW_ONLY = _dc.KW_ONLY
MISSING = _dc.MISSING


def _own(obj: Any, what: str) -> type:
    cls = obj if isinstance(obj, type) else type(obj)
    if not guards._is_user_class(cls):
        raise guards.violation(f"dataclasses.{what} works only on classes the strategy defines")
    return cls


def dataclass(cls: Any = None, /, **options: Any) -> Any:
    """@dataclass or @dataclass(frozen=True, order=True, ...) on a class the strategy defines."""
    def wrap(c: Any) -> Any:
        if not isinstance(c, type):
            raise TypeError("dataclass() decorates a class")
        _own(c, "dataclass")
        return _dc.dataclass(c, **options)

    return wrap if cls is None else wrap(cls)


def fields(obj: Any) -> tuple:
    _own(obj, "fields")
    return _dc.fields(obj)


def replace(obj: Any, /, **changes: Any) -> Any:
    if isinstance(obj, type):
        raise TypeError("replace() takes a dataclass instance")
    _own(obj, "replace")
    return _dc.replace(obj, **changes)
