"""The globals a compiled strategy executes in: safe builtins, guard hooks, module proxies, API.

Everything that does not depend on the execution (the builtins table, the guard hooks, the
module proxies) is built once at import time; `build_globals` copies two small dicts and adds
the per-execution parts: the print sink, the API names and the importer that serves them.
"""

from __future__ import annotations

import builtins as _builtins
import sys
import types
from typing import Any, Callable, Mapping

from . import guards, policy, syntax_guards
from .proxies import MODULE_PROXIES, PREBOUND, ModuleProxy, make_api_proxy
from .stdlib import safe_warnings

STRATEGY_MODULE_NAME = "strategy"


# ---------------------------------------------------------------------------------------------
# print
# ---------------------------------------------------------------------------------------------


class _PrintCollector:
    """What RestrictedPython's `_print_` hook returns: `print(...)` becomes `_call_print(...)`.

    Each print() call hands its text to the sink once, without the trailing newline of `end`.
    Reading the RestrictedPython name `printed` returns everything printed in the scope.
    """

    __slots__ = ("_sink", "_parts")

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink
        self._parts: list[str] = []

    def _call_print(self, *objects: Any, sep: Any = " ", end: Any = "\n", file: Any = None, flush: Any = False) -> None:
        if file is not None:
            raise guards.violation("print(file=...) is not allowed in strategies")
        if sep is None:
            sep = " "
        if end is None:
            end = "\n"
        if not isinstance(sep, str) or not isinstance(end, str):
            raise TypeError("print() sep and end must be strings")
        text = sep.join([str(obj) for obj in objects])
        self._parts.append(text + end)
        self._sink(text if end == "\n" else text + end)

    def __call__(self) -> str:
        return "".join(self._parts)


def _print_factory(sink: Callable[[str], None]) -> Callable[..., _PrintCollector]:
    def _print_(_getattr_: Any = None) -> _PrintCollector:
        return _PrintCollector(sink)

    return _print_


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


#: CPython's `PyImport_Import` (behind `PyImport_ImportModule`, used by C extensions such as
#: numpy's `ndarray.sum` -> `numpy._core._methods`) calls the *current frame's* `__import__`
#: with a *list* fromlist (empty; `["__doc__"]` in old versions), then ignores the return value
#: and hands its C caller `sys.modules[name]`. Strategy code cannot produce a list fromlist: its
#: import statements pass None or a tuple, and the importer itself is unreachable
#: (`__builtins__` / `__import__` are private names).
_C_IMPORT_FROMLISTS = ([], ["__doc__"])


def _c_level_import(name: str) -> Any:
    """Serve a C extension's import of an already-loaded module; never load a new one."""
    module = sys.modules.get(name)
    if module is None:
        raise ImportError(f"module {name!r} is not available in the sandbox")
    return module


def _make_importer(api_proxy: ModuleProxy) -> Callable[..., Any]:
    proxies = MODULE_PROXIES
    api_names = policy.API_MODULE_NAMES

    def restricted_import(name: Any, globals: Any = None, locals: Any = None, fromlist: Any = (), level: Any = 0) -> Any:
        if level != 0:
            raise guards.violation("relative imports are not allowed in strategies")
        if type(name) is not str:
            raise TypeError("module names must be strings")
        if type(fromlist) is list and fromlist in _C_IMPORT_FROMLISTS:
            return _c_level_import(name)
        if name in api_names:
            return api_proxy
        proxy = proxies.get(name)
        if proxy is None:
            raise guards.violation(f'import of "{name}" is not allowed in strategies')
        if fromlist:
            return proxy
        return proxies[name.partition(".")[0]]

    restricted_import.__name__ = restricted_import.__qualname__ = "__import__"
    return restricted_import


# ---------------------------------------------------------------------------------------------
# API values
# ---------------------------------------------------------------------------------------------


def _wrap_api_value(name: str, value: Any) -> Any:
    """Callables become opaque plain functions (no partial/bound-method/closure handles)."""
    if isinstance(value, (types.ModuleType, ModuleProxy)):
        raise TypeError(f"strategy API value {name!r} must not be a module")
    if isinstance(value, type) or not callable(value):
        return value

    def api_function(*args: Any, **kwargs: Any) -> Any:
        return value(*args, **kwargs)

    api_function.__name__ = api_function.__qualname__ = name
    return api_function


# ---------------------------------------------------------------------------------------------
# The immutable parts, built once
# ---------------------------------------------------------------------------------------------


def _build_safe_builtins() -> dict[str, Any]:
    table: dict[str, Any] = {}
    for name in policy.PLAIN_BUILTINS | policy.EXCEPTION_BUILTINS:
        table[name] = getattr(_builtins, name)
    table.update(
        __build_class__=_builtins.__build_class__,
        getattr=guards.guarded_getattr,
        hasattr=guards.guarded_hasattr,
        setattr=guards.guarded_setattr,
        delattr=guards.guarded_delattr,
        type=guards.safe_type,
        dir=guards.guarded_dir,
        next=guards.guarded_next,
        min=guards.guarded_min,
        max=guards.guarded_max,
        dict=dict,
    )
    for name in policy.DENIED_BUILTINS:
        table[name] = guards.denied_builtin(name)
    missing = (policy.GUARDED_BUILTINS | policy.DENIED_BUILTINS) - table.keys()
    assert not missing, missing
    return table


SAFE_BUILTINS: Mapping[str, Any] = types.MappingProxyType(_build_safe_builtins())

_GLOBALS_TEMPLATE: dict[str, Any] = {
    "__name__": STRATEGY_MODULE_NAME,
    "__metaclass__": guards.sandbox_metaclass,
    "_getattr_": guards.guarded_getattr,
    "_getitem_": guards.guarded_getitem,
    "_getiter_": guards.guarded_iter,
    "_iter_unpack_sequence_": guards.guarded_iter_unpack_sequence,
    "_unpack_sequence_": guards.guarded_unpack_sequence,
    "_write_": guards.guarded_write,
    "_write_attr_": guards.guarded_write_attr,
    "_inplacevar_": guards.guarded_inplacevar,
    "_apply_": guards.guarded_apply,
    "_name_of_": syntax_guards.name_of,  # x.__name__ (sandbox.compiler)
    "_match_vet_": syntax_guards.match_vet,  # every match case's captures
    **PREBOUND,
}


def build_globals(api: Mapping[str, object], print_sink: Callable[[str], None]) -> dict[str, Any]:
    """A fresh globals dict for one execution of a compiled strategy.

    `api` names (signal, indicator, log, params, data, ...) are bound as globals and are also
    what `import strategy` / `import strategy_api` exposes; callables among them are wrapped so
    strategy code cannot reach their globals, closures, `__self__` or partial arguments.
    `print_sink` receives the text of each print() call.

    Violations are recorded per process, not per globals dict (a child runs one execution, which
    may build globals more than once): after running strategy code, check
    `sandbox.guards.first_violation()` and fail the run with it even if the code caught it.
    """
    return globals_for(wrap_api(api), print_sink)


def wrap_api(api: Mapping[str, object]) -> dict[str, Any]:
    """The API names checked and their callables wrapped (see build_globals); reusable across
    globals dicts when the values are the same (a walk's API functions)."""
    wrapped: dict[str, Any] = {}
    for name, value in api.items():
        if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"invalid strategy API name {name!r}")
        wrapped[name] = _wrap_api_value(name, value)
    return wrapped


def globals_for(wrapped: Mapping[str, Any], print_sink: Callable[[str], None]) -> dict[str, Any]:
    """A fresh globals dict (own builtins table, importer and API module) for API values
    already passed through `wrap_api`."""
    wrapped = dict(wrapped)
    builtins_table = dict(SAFE_BUILTINS)
    builtins_table["__import__"] = _make_importer(make_api_proxy(STRATEGY_MODULE_NAME, wrapped))
    namespace = dict(_GLOBALS_TEMPLATE)
    namespace["__builtins__"] = builtins_table
    namespace["_print_"] = _print_factory(print_sink)
    namespace.update(wrapped)
    safe_warnings.bind_sink(print_sink)  # warnings.warn and library warnings: this run's logs
    return namespace
