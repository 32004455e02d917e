"""`operator` for strategies: the C name lookups go through the sandbox's guards."""

from __future__ import annotations

import operator as _op
from typing import Any

from .. import guards

# Pure functions of their operands: exactly what the same expression in strategy code does.
abs = _op.abs
add = _op.add
and_ = _op.and_
concat = _op.concat
contains = _op.contains
countOf = _op.countOf
eq = _op.eq
floordiv = _op.floordiv
ge = _op.ge
gt = _op.gt
index = _op.index
indexOf = _op.indexOf
inv = _op.inv
invert = _op.invert
is_ = _op.is_
is_not = _op.is_not
le = _op.le
lshift = _op.lshift
lt = _op.lt
matmul = _op.matmul
mod = _op.mod
mul = _op.mul
ne = _op.ne
neg = _op.neg
not_ = _op.not_
or_ = _op.or_
pos = _op.pos
pow = _op.pow
rshift = _op.rshift
sub = _op.sub
truediv = _op.truediv
truth = _op.truth
xor = _op.xor


def getitem(obj: Any, key: Any) -> Any:
    return guards.guarded_getitem(obj, key)


def setitem(obj: Any, key: Any, value: Any) -> None:
    guards.guarded_write(obj)[key] = value


def delitem(obj: Any, key: Any) -> None:
    del guards.guarded_write(obj)[key]


class itemgetter:
    """itemgetter(*keys)(obj): obj[key] (a tuple for several keys), through the item guard."""

    __slots__ = ("_keys",)

    def __init__(self, key: Any, *keys: Any) -> None:
        self._keys = (key, *keys)

    def __call__(self, obj: Any) -> Any:
        if len(self._keys) == 1:
            return guards.guarded_getitem(obj, self._keys[0])
        return tuple(guards.guarded_getitem(obj, k) for k in self._keys)


def _dotted(obj: Any, name: Any) -> Any:
    if not isinstance(name, str):
        raise TypeError("attribute name must be a string")
    for part in name.split("."):
        obj = guards.guarded_getattr(obj, part)
    return obj


class attrgetter:
    """attrgetter("a", "b.c")(obj): each (dotted) name read through the attribute guard."""

    __slots__ = ("_names",)

    def __init__(self, name: str, *names: str) -> None:
        for n in (name, *names):
            if not isinstance(n, str):
                raise TypeError("attribute name must be a string")
        self._names = (name, *names)

    def __call__(self, obj: Any) -> Any:
        if len(self._names) == 1:
            return _dotted(obj, self._names[0])
        return tuple(_dotted(obj, n) for n in self._names)


class methodcaller:
    """methodcaller("name", *args, **kwargs)(obj): the method read through the attribute guard."""

    __slots__ = ("_name", "_args", "_kwargs")

    def __init__(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        if not isinstance(name, str):
            raise TypeError("method name must be a string")
        self._name, self._args, self._kwargs = name, args, kwargs

    def __call__(self, obj: Any) -> Any:
        return guards.guarded_getattr(obj, self._name)(*self._args, **self._kwargs)
