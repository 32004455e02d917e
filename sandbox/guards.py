"""Run-time guards that RestrictedPython-compiled strategy code calls.

RestrictedPython rewrites `a.b` into `_getattr_(a, "b")`, `a[k]` into `_getitem_(a, k)`,
`for x in y` into `_getiter_(y)`, `a.b = v` / `a[k] = v` into `_write_(a)...` (the sandbox
compiler routes attribute stores to `_write_attr_` instead), `x += y` into
`_inplacevar_("+=", x, y)` and `f(*a, **k)` into `_apply_(f, *a, **k)`. The functions here are
those hooks, plus the guarded builtins (getattr, hasattr, setattr, delattr, type, dir, next, min,
max), the safe `str.format`, and the metaclass every `class` statement goes through.

Every refusal raises `contracts.ExecutionError(SECURITY_VIOLATION, message, line)` where `line`
is the strategy line being executed. The first refusal of an execution is also remembered
(`first_violation()`), so the runtime can fail a run whose code caught the exception and went on.

Module proxies, the numpy.ndarray stand-in and the module -> proxy table are created by
`sandbox.proxies`, which installs them here (`install_proxy_tables`); until then every module
value is refused.
"""

from __future__ import annotations

import _string  # the C helpers behind string.Formatter (field-name splitting)
import collections
import datetime as _dt
import operator
import string
import sys
import types
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from pandas.core import indexing as _pd_indexing
from pandas.api import typing as _pd_typing

from contracts.errors import ErrorCode, ExecutionError

from . import policy

# ---------------------------------------------------------------------------------------------
# Violations
# ---------------------------------------------------------------------------------------------

_violations: list[ExecutionError] = []


def _strategy_line() -> int | None:
    """The line of strategy code currently executing (code compiled under a "<...>" name)."""
    frame = sys._getframe(2)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<") and not filename.startswith(("<frozen", "<string>")):
            return frame.f_lineno
        frame = frame.f_back
    return None


def violation(message: str) -> ExecutionError:
    """Build (and remember, if it is the first of this execution) a SECURITY_VIOLATION."""
    error = ExecutionError(ErrorCode.SECURITY_VIOLATION, message, _strategy_line())
    if not _violations:
        _violations.append(error)
    return error


def reset_violations() -> None:
    """Forget recorded violations (a forked child starts clean; in-process reuse must call this)."""
    _violations.clear()


def first_violation() -> ExecutionError | None:
    """The first SECURITY_VIOLATION raised during this execution, even if the code caught it."""
    return _violations[0] if _violations else None


def _describe(obj: object) -> str:
    if type(obj) is _ModuleProxyType:
        return repr(obj)
    if isinstance(obj, type):
        return f"class {getattr(obj, '__qualname__', '?')}"
    return f"{type(obj).__qualname__} object"


# ---------------------------------------------------------------------------------------------
# Tables installed by sandbox.proxies
# ---------------------------------------------------------------------------------------------


class _NoProxy:  # placeholder until sandbox.proxies installs the real class
    pass


_ModuleProxyType: type = _NoProxy
_PROXY_FOR_MODULE: dict[types.ModuleType, object] = {}
_CLASS_SUBSTITUTES: dict[type, type] = {}


def install_proxy_tables(
    proxy_type: type, proxy_for_module: dict[types.ModuleType, object], class_substitutes: dict[type, type]
) -> None:
    """Called by sandbox.proxies once the proxies exist: which module becomes which proxy, and
    which real classes strategies see as stand-ins (numpy.ndarray)."""
    global _ModuleProxyType
    _ModuleProxyType = proxy_type
    _PROXY_FOR_MODULE.clear()
    _PROXY_FOR_MODULE.update(proxy_for_module)
    _CLASS_SUBSTITUTES.clear()
    _CLASS_SUBSTITUTES.update(class_substitutes)
    _DENIED_CLASSES.add(proxy_type)


# ---------------------------------------------------------------------------------------------
# Value checks
# ---------------------------------------------------------------------------------------------

#: Values of these exact types are returned without further checks (their attributes are all
#: guarded on the next lookup, and none of them is a module, frame, class or namespace).
_PLAIN: frozenset[type] = frozenset(
    {
        int, float, bool, str, type(None), complex, bytes, tuple, list, range, slice,
        types.MethodType, types.BuiltinMethodType, types.FunctionType, types.LambdaType,
        np.ndarray, np.float64, np.float32, np.int64, np.int32, np.bool_, np.ufunc, np.dtype,
        pd.Series, pd.DataFrame, pd.Index, pd.RangeIndex, pd.DatetimeIndex, pd.Timestamp,
        pd.Timedelta, _dt.datetime, _dt.date, _dt.timedelta,
        _pd_indexing._LocIndexer, _pd_indexing._iLocIndexer, _pd_indexing._AtIndexer,
        _pd_indexing._iAtIndexer, _pd_typing.Rolling, _pd_typing.Expanding, _pd_typing.ExponentialMovingWindow,
        _pd_typing.DataFrameGroupBy, _pd_typing.SeriesGroupBy,
    }
)

_CAPSULE_TYPE = type(_dt.datetime_CAPI)  # type: ignore[attr-defined]

#: Instances of these types are never handed to strategy code.
_DENIED_VALUE_TYPES: frozenset[type] = frozenset(
    {
        types.FrameType, types.CodeType, types.TracebackType, types.CellType, memoryview,
        _CAPSULE_TYPE,
    }
)

#: These classes are never handed to strategy code (constructors of code, frames, modules,
#: classes; raw-buffer array constructors; the proxy class itself).
_DENIED_CLASSES: set[type] = {
    type, types.FunctionType, types.CodeType, types.FrameType, types.TracebackType,
    types.CellType, types.ModuleType, super, memoryview, _CAPSULE_TYPE,
    np.void, np.record, np.recarray, np.memmap, np.matrix, np.char.chararray, np.ma.MaskedArray,
}

_NDARRAY = np.ndarray


def _class_result(cls: type) -> type:
    substitute = _CLASS_SUBSTITUTES.get(cls)
    if substitute is not None:
        return substitute
    if (
        cls in _DENIED_CLASSES
        or issubclass(cls, (type, types.ModuleType, np.void))
        or (issubclass(cls, _NDARRAY) and cls is not _NDARRAY)
    ):
        raise violation(f"{_describe(cls)} is not available in strategies")
    return cls


def _module_result(module: types.ModuleType) -> object:
    proxy = _PROXY_FOR_MODULE.get(module)
    if proxy is None:
        raise violation(f"module {getattr(module, '__name__', '?')!r} is not available in strategies")
    return proxy


def check_value(value: Any) -> Any:
    """Vet a value about to reach strategy code through an attribute, item or iteration."""
    vt = type(value)
    if vt in _PLAIN or vt is _ModuleProxyType:
        return value
    if vt in _DENIED_VALUE_TYPES:
        raise violation(f"{vt.__name__} objects are not available in strategies")
    if isinstance(value, _NDARRAY):
        # an ndarray subclass (np.matrix from np.r_['r', ...], recarray, memmap, chararray):
        # the policy offers plain arrays only
        raise violation(f"numpy.{vt.__name__} objects are not available in strategies; use plain arrays")
    if isinstance(value, types.ModuleType):
        return _module_result(value)
    if isinstance(value, type):
        return _class_result(value)
    if vt is dict and ("__builtins__" in value or "__import__" in value or "__loader__" in value):
        raise violation("module namespaces are not available in strategies")
    return value


# ---------------------------------------------------------------------------------------------
# Attribute names
# ---------------------------------------------------------------------------------------------

USER_CLASS_MARK = "__sandbox_user_class__"

_OK, _DISPATCH, _FORMAT, _WRITER = 0, 1, 2, 3
_PREFIXES = policy.DENIED_ATTRIBUTE_PREFIXES
_NDARRAY_DENIED = policy.DENIED_ATTRIBUTES_BY_TYPE["numpy.ndarray"]

#: (owner class, name) -> decision, for names that are allowed. Bounded.
_DECISIONS: dict[Any, int] = {}
_DECISIONS_MAX = 16384


def _is_user_class(cls: type) -> bool:
    """Whether `cls` was built by `sandbox_metaclass` (it marks every class it builds)."""
    return cls.__dict__.get(USER_CLASS_MARK) is True


def _library_module(cls: type) -> str:
    module = cls.__dict__.get("__module__")
    if not isinstance(module, str):
        module = getattr(cls, "__module__", "") or ""
    return module if isinstance(module, str) else ""


def attribute_rule(owner: type, name: str) -> int | str:
    """How `name` may be looked up on instances of `owner` (or on `owner` itself).

    Returns a decision code, or a string: the reason it is refused. Pure: records nothing.
    """
    if type(name) is not str:
        return "attribute names must be strings"
    if name.startswith("_"):
        return f'"{name}" is not accessible: names starting with "_" are private'
    if name in policy.DENIED_ATTRIBUTES:
        return f'"{name}" is not accessible in strategies'
    if _is_user_class(owner):
        return _OK
    if name in policy.LIBRARY_DENIED_ATTRIBUTES:
        return f'"{name}" is not accessible in strategies'
    if name.startswith(_PREFIXES) and name not in policy.ALLOWED_PREFIXED_ATTRIBUTES:
        return f'"{name}" is not accessible in strategies (file and serialization methods are disabled)'
    if name in _NDARRAY_DENIED and issubclass(owner, _NDARRAY):
        return f'"ndarray.{name}" is not accessible in strategies'
    if name in ("format", "format_map") and issubclass(owner, str):
        return _FORMAT
    module = _library_module(owner)
    if module.startswith("pandas"):
        if name in policy.STRING_DISPATCH_METHODS:
            return _DISPATCH
        if name in policy.STRING_ONLY_WRITERS:
            return _WRITER
    return _OK


def _decide(owner: type, name: str) -> int:
    try:
        return _DECISIONS[(owner, name)]
    except KeyError:
        pass
    except TypeError:
        raise TypeError("attribute names must be strings") from None
    rule = attribute_rule(owner, name)
    if type(rule) is str:
        if rule == "attribute names must be strings":
            raise TypeError(rule)
        raise violation(rule)
    # A strategy's own classes are never cached: a cache key would keep the class (and whatever
    # it holds) alive past its run. Their rule is the cheap first lines of attribute_rule.
    if len(_DECISIONS) < _DECISIONS_MAX and not _is_user_class(owner):
        _DECISIONS[(owner, name)] = rule
    return rule


def decisions_snapshot() -> dict[Any, int]:
    """A copy of the attribute-decision cache (sandbox.hygiene's baseline)."""
    return dict(_DECISIONS)


def restore_decisions(snapshot: dict[Any, int]) -> None:
    """Put the decision cache back to `snapshot`: entries added since (whose owner classes may
    have been created by a strategy, e.g. through a library factory) are dropped."""
    if len(_DECISIONS) != len(snapshot):
        _DECISIONS.clear()
        _DECISIONS.update(snapshot)


# ---------------------------------------------------------------------------------------------
# Safe str.format
# ---------------------------------------------------------------------------------------------


class _GuardedFormatter(string.Formatter):
    """str.format whose `{a.b}` / `{a[k]}` field lookups go through the guards."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, Any]:
        first, rest = _string.formatter_field_name_split(field_name)
        obj = self.get_value(first, args, kwargs)
        for is_attr, key in rest:
            obj = guarded_getattr(obj, key) if is_attr else guarded_getitem(obj, key)
        return obj, first


_FORMATTER = _GuardedFormatter()


def safe_format(template: str, /, *args: Any, **kwargs: Any) -> str:
    if not isinstance(template, str):
        raise TypeError("format() needs a str template")
    return _FORMATTER.vformat(template, args, kwargs)


def safe_format_map(template: str, mapping: Any, /) -> str:
    if not isinstance(template, str):
        raise TypeError("format_map() needs a str template")
    return _FORMATTER.vformat(template, (), mapping)


def _bound_format(template: str, name: str) -> Callable[..., str]:
    if name == "format":

        def format(*args: Any, **kwargs: Any) -> str:  # noqa: A001 - mirrors str.format
            return _FORMATTER.vformat(template, args, kwargs)

        return format

    def format_map(mapping: Any) -> str:
        return _FORMATTER.vformat(template, (), mapping)

    return format_map


# ---------------------------------------------------------------------------------------------
# pandas string dispatch and string-only writers
# ---------------------------------------------------------------------------------------------

_NUMPY_NAMES = frozenset(dir(np))
_NUMPY_SURFACE = policy.MODULE_SURFACES["numpy"]


def dispatch_name_allowed(name: str) -> bool:
    """Whether pandas may resolve the function name `name` (on the object, or on numpy)."""
    if name.startswith("_") or name in policy.LIBRARY_DENIED_ATTRIBUTES or name in policy.STRING_ONLY_WRITERS:
        return False
    if name.startswith(_PREFIXES) and name not in policy.ALLOWED_PREFIXED_ATTRIBUTES:
        return False
    return name not in _NUMPY_NAMES or name in _NUMPY_SURFACE


def _scan_dispatch(values: Iterable[Any], method: str, depth: int = 0) -> None:
    for value in values:
        if isinstance(value, str):
            if not dispatch_name_allowed(value):
                raise violation(f'"{value}" cannot be used as a function name in {method}()')
        elif depth < 4:
            if isinstance(value, (list, tuple, set, frozenset)):
                _scan_dispatch(value, method, depth + 1)
            elif isinstance(value, dict):
                _scan_dispatch(value.values(), method, depth + 1)


def _dispatch_wrapper(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    def checked(*args: Any, **kwargs: Any) -> Any:
        _scan_dispatch(args, name)
        _scan_dispatch(kwargs.values(), name)
        return method(*args, **kwargs)

    return checked


def _writer_wrapper(method: Callable[..., Any], name: str) -> Callable[..., Any]:
    destinations = policy.STRING_ONLY_WRITERS[name]

    def checked(*args: Any, **kwargs: Any) -> Any:
        if (args and args[0] is not None) or any(kwargs.get(p) is not None for p in destinations):
            raise violation(f"{name}() may not write to a file or buffer; call it without one to get a str")
        float_format = kwargs.get("float_format")
        if isinstance(float_format, str) and "{" in float_format:
            raise violation(f'{name}(float_format="{{...}}") is not allowed; pass a function such as "{{:.2f}}".format')
        return method(*args, **kwargs)

    return checked


# ---------------------------------------------------------------------------------------------
# RestrictedPython hooks
# ---------------------------------------------------------------------------------------------

_MISSING: Any = object()


def guarded_getattr(obj: Any, name: str, default: Any = _MISSING) -> Any:
    """`_getattr_` and the `getattr` builtin."""
    tp = type(obj)
    if tp is _ModuleProxyType:
        if type(name) is not str:
            raise TypeError("attribute names must be strings")
        if name.startswith("_"):
            raise violation(f'"{name}" is not accessible: names starting with "_" are private')
        try:
            return getattr(obj, name)
        except AttributeError:
            if default is _MISSING:
                raise
            return default
    owner = obj if isinstance(obj, type) else tp
    try:
        decision = _DECISIONS[(owner, name)]
    except (KeyError, TypeError):
        decision = _decide(owner, name)
    if decision == _FORMAT:
        if isinstance(obj, str):
            return _bound_format(obj, name)
        return safe_format if name == "format" else safe_format_map
    try:
        value = getattr(obj, name)
    except AttributeError:
        if default is _MISSING:
            raise
        return default
    if decision == _DISPATCH and callable(value):
        return _dispatch_wrapper(value, name)
    if decision == _WRITER and callable(value):
        return _writer_wrapper(value, name)
    if type(value) in _PLAIN:
        return value
    return check_value(value)


def guarded_getitem(obj: Any, key: Any) -> Any:
    """`_getitem_`: `obj[key]`, with the result vetted like an attribute value."""
    value = obj[key]
    if type(value) in _PLAIN:
        return value
    return check_value(value)


#: Containers whose items strategy code may assign and delete (besides its own class instances).
_ITEM_WRITABLE: frozenset[type] = frozenset(
    {
        dict, list, bytearray, np.ndarray, pd.DataFrame, pd.Series,
        # the collections strategies may import (sandbox.policy): dicts and lists by another name
        collections.Counter, collections.OrderedDict, collections.defaultdict, collections.deque,
        collections.ChainMap,
        _pd_indexing._LocIndexer, _pd_indexing._iLocIndexer,
        _pd_indexing._AtIndexer, _pd_indexing._iAtIndexer,
    }
)
#: Library objects whose attributes strategy code may assign (df.columns, s.name, idx.name).
_ATTR_WRITABLE: frozenset[type] = frozenset({pd.DataFrame, pd.Series})


def guarded_write(obj: Any) -> Any:
    """`_write_`: the target of `obj[k] = v` / `del obj[k]`."""
    tp = type(obj)
    if tp in _ITEM_WRITABLE or (not isinstance(obj, type) and _is_user_class(tp)):
        return obj
    raise violation(f"cannot assign or delete items of {_describe(obj)}")


def guarded_write_attr(obj: Any) -> Any:
    """`_write_attr_`: the target of `obj.name = v` / `del obj.name` (name already checked)."""
    tp = type(obj)
    if tp in _ATTR_WRITABLE or isinstance(obj, pd.Index):
        return obj
    if not isinstance(obj, type) and _is_user_class(tp):
        return obj
    raise violation(f"cannot assign or delete attributes of {_describe(obj)}")


_INPLACE: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "&=": operator.iand, "|=": operator.ior, "^=": operator.ixor,
    "@=": operator.imatmul,
}


def guarded_inplacevar(op: str, x: Any, y: Any) -> Any:
    """`_inplacevar_`: `x op= y`."""
    try:
        fn = _INPLACE[op]
    except (KeyError, TypeError):
        raise violation(f"augmented assignment {op!r} is not supported") from None
    return fn(x, y)


def guarded_apply(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`_apply_`: calls written with `*args` / `**kwargs`."""
    for key in kwargs:
        if key.startswith("_"):
            raise violation(f'keyword argument "{key}" is not allowed: names starting with "_" are private')
    return func(*args, **kwargs)


def _checked_iter(iterator: Iterator[Any]) -> Iterator[Any]:
    plain = _PLAIN
    for value in iterator:
        yield value if type(value) in plain else check_value(value)


_FAST_ITER: frozenset[type] = frozenset({range, str, bytes, pd.DataFrame})
_FAST_ITER_ARRAYS: frozenset[type] = frozenset({np.ndarray, pd.Series, pd.Index, pd.RangeIndex, pd.DatetimeIndex})


def guarded_iter(obj: Any) -> Iterator[Any]:
    """`_getiter_`: iteration; items of generic containers are vetted like attribute values."""
    tp = type(obj)
    if tp in _FAST_ITER:
        return iter(obj)
    if tp in _FAST_ITER_ARRAYS and obj.dtype.kind != "O":
        return iter(obj)
    if tp is _ModuleProxyType:
        raise TypeError(f"{obj!r} is not iterable")
    return _checked_iter(iter(obj))


def guarded_unpack_sequence(it: Any, spec: dict[str, Any], _getiter_: Callable[[Any], Any]) -> list[Any]:
    """`_unpack_sequence_`: `a, (b, c) = value`."""
    ret = list(guarded_iter(it))
    if len(ret) < spec["min_len"]:
        return ret
    for idx, child_spec in spec["childs"]:
        ret[idx] = guarded_unpack_sequence(ret[idx], child_spec, _getiter_)
    return ret


def guarded_iter_unpack_sequence(it: Any, spec: dict[str, Any], _getiter_: Callable[[Any], Any]) -> Iterator[Any]:
    """`_iter_unpack_sequence_`: `for a, b in value`."""
    for ob in guarded_iter(it):
        yield guarded_unpack_sequence(ob, spec, _getiter_)


# ---------------------------------------------------------------------------------------------
# Guarded builtins
# ---------------------------------------------------------------------------------------------


def guarded_hasattr(obj: Any, name: str) -> bool:
    try:
        guarded_getattr(obj, name)
    except AttributeError:
        return False
    return True


def _check_write_name(obj: Any, name: Any) -> None:
    if type(name) is not str:
        raise TypeError("attribute names must be strings")
    owner = obj if isinstance(obj, type) else type(obj)
    rule = attribute_rule(owner, name)
    if type(rule) is str:
        raise violation(rule)


def guarded_setattr(obj: Any, name: str, value: Any) -> None:
    _check_write_name(obj, name)
    setattr(guarded_write_attr(obj), name, value)


def guarded_delattr(obj: Any, name: str) -> None:
    _check_write_name(obj, name)
    delattr(guarded_write_attr(obj), name)


def safe_type(obj: Any, *rest: Any) -> type:
    """type(x) with one argument; the class is vetted like an attribute value."""
    if rest:
        raise violation("type() with three arguments creates classes; use a class statement")
    return _class_result(type(obj))


def guarded_dir(*args: Any) -> list[str]:
    if len(args) != 1:
        raise TypeError("dir() takes exactly one argument in strategies")
    obj = args[0]
    if type(obj) is _ModuleProxyType:
        return dir(obj)
    owner = obj if isinstance(obj, type) else type(obj)
    return [name for name in dir(obj) if type(attribute_rule(owner, name)) is int]


def guarded_next(iterator: Any, *default: Any) -> Any:
    value = next(iterator, *default)
    return value if type(value) in _PLAIN else check_value(value)


def guarded_min(*args: Any, **kwargs: Any) -> Any:
    value = min(*args, **kwargs)
    return value if type(value) in _PLAIN else check_value(value)


def guarded_max(*args: Any, **kwargs: Any) -> Any:
    value = max(*args, **kwargs)
    return value if type(value) in _PLAIN else check_value(value)


def denied_builtin(name: str) -> Callable[..., Any]:
    """A stand-in for a builtin strategies may not use: calling it is a SECURITY_VIOLATION."""

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise violation(f"{name}() is not allowed in strategies")

    denied.__name__ = denied.__qualname__ = name
    return denied


# ---------------------------------------------------------------------------------------------
# Classes
# ---------------------------------------------------------------------------------------------

#: Base classes a strategy class may name besides its own classes.
SAFE_BASES: frozenset[type] = frozenset(
    {object} | {getattr(__import__("builtins"), n) for n in policy.EXCEPTION_BUILTINS}
)

_CLASS_NAMESPACE_DUNDERS = frozenset(
    {"__module__", "__qualname__", "__doc__", "__classcell__", "__firstlineno__", "__static_attributes__",
     "__annotations__"}  # `name: T` fields in a class body (dataclasses)
)
_ALLOWED_METHOD_DUNDERS = frozenset(
    {"__init__", "__contains__", "__lt__", "__le__", "__eq__", "__ne__", "__gt__", "__ge__"}
)


def sandbox_metaclass(name: str, bases: tuple[Any, ...], namespace: dict[str, Any]) -> type:
    """`__metaclass__`: every `class` statement of strategy code is built here."""
    for base in bases:
        if not (base in SAFE_BASES or (isinstance(base, type) and _is_user_class(base))):
            raise violation(f"class {name} may not derive from {_describe(base)}")
    for key in namespace:
        if not isinstance(key, str) or (
            key.startswith("_") and key not in _CLASS_NAMESPACE_DUNDERS and key not in _ALLOWED_METHOD_DUNDERS
        ):
            raise violation(f'class {name} may not define "{key}"')
    namespace = dict(namespace)
    namespace[USER_CLASS_MARK] = True
    return type(name, bases, namespace)
