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


def _plain(value: Any, factory: Any) -> Any:
    """asdict's recursion without copy.deepcopy (which would reduce and rebuild any object):
    the code's own dataclasses become mappings, lists/tuples/dicts are rebuilt, the rest is kept."""
    if not isinstance(value, type) and guards._is_user_class(type(value)) and _dc.is_dataclass(value):
        return factory([(f.name, _plain(getattr(value, f.name), factory)) for f in _dc.fields(value)])
    if type(value) in (list, tuple):
        return type(value)(_plain(v, factory) for v in value)
    if type(value) is dict:
        return {_plain(k, factory): _plain(v, factory) for k, v in value.items()}
    return value


def asdict(obj: Any, *, dict_factory: Any = dict) -> Any:
    """The fields of one of the code's own dataclass instances as a dict (nested ones too)."""
    if isinstance(obj, type) or not _dc.is_dataclass(obj):
        raise TypeError("asdict() should be called on dataclass instances")
    _own(obj, "asdict")
    return _plain(obj, dict_factory)


def astuple(obj: Any) -> tuple:
    """The field values of one of the code's own dataclass instances, in order."""
    if isinstance(obj, type) or not _dc.is_dataclass(obj):
        raise TypeError("astuple() should be called on dataclass instances")
    _own(obj, "astuple")
    return tuple(_plain(getattr(obj, f.name), _values) for f in _dc.fields(obj))


def _values(pairs: list) -> tuple:
    return tuple(value for _, value in pairs)


def replace(obj: Any, /, **changes: Any) -> Any:
    if isinstance(obj, type):
        raise TypeError("replace() takes a dataclass instance")
    _own(obj, "replace")
    return _dc.replace(obj, **changes)
