"""Read-only proxies: the only way strategy code reaches numpy, pandas, talib, math, statistics
and datetime.

A `ModuleProxy` holds a dict of exactly the names its module's surface allows
(`sandbox.policy.MODULE_SURFACES`), resolved once when this module is imported (in the warm
parent, before any child forks). It keeps no reference to the module object itself; it has no
`__dict__`, no `__name__`, accepts no assignment or deletion; every other public name is a
SECURITY_VIOLATION ("not available in strategies") and every private name an AttributeError.

`numpy.ndarray` is exposed as a stand-in class: `isinstance(x, np.ndarray)` and
`type(a) is np.ndarray` behave as usual, `np.ndarray(shape, dtype)` allocates, but the
`buffer=` / `offset=` / `strides=` forms (which numpy lets alias object pointers or read before a
buffer) are refused.
"""

from __future__ import annotations

import importlib
import types
from typing import Any, Mapping

import numpy as np

from . import guards, policy


class ModuleProxy:
    """A read-only view of an allowlisted module surface (or of the strategy API mapping)."""

    __slots__ = ("_ModuleProxy__path", "_ModuleProxy__surface")

    def __new__(cls, *args: Any, **kwargs: Any) -> ModuleProxy:
        raise TypeError("module proxies are created by the sandbox only")

    @classmethod
    def _create(cls, path: str, surface: Mapping[str, Any]) -> ModuleProxy:
        self = object.__new__(cls)
        object.__setattr__(self, "_ModuleProxy__path", path)
        object.__setattr__(self, "_ModuleProxy__surface", dict(surface))
        return self

    def __getattribute__(self, name: str) -> Any:
        surface = object.__getattribute__(self, "_ModuleProxy__surface")
        try:
            return surface[name]
        except KeyError:
            pass
        if name == "__class__":
            return ModuleProxy
        path = object.__getattribute__(self, "_ModuleProxy__path")
        if type(name) is str and not name.startswith("_"):
            raise guards.violation(f'"{path}.{name}" is not available in strategies')
        # private names: a plain AttributeError, so the interpreter's own probes (`__name__`
        # for the `from m import n` fallback, `__array__`, ...) find nothing and reach nothing
        raise AttributeError(f"module {path!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        path = object.__getattribute__(self, "_ModuleProxy__path")
        raise guards.violation(f"module {path!r} is read-only")

    def __delattr__(self, name: str) -> None:
        path = object.__getattribute__(self, "_ModuleProxy__path")
        raise guards.violation(f"module {path!r} is read-only")

    def __dir__(self) -> list[str]:
        return sorted(object.__getattribute__(self, "_ModuleProxy__surface"))

    def __repr__(self) -> str:
        return f"<module {object.__getattribute__(self, '_ModuleProxy__path')!r}>"

    def __reduce__(self) -> Any:
        raise TypeError("module proxies cannot be pickled")


def proxy_surface(proxy: ModuleProxy) -> Mapping[str, Any]:
    """A read-only view of what a proxy exposes (for the runtime and tests, not for strategies)."""
    return types.MappingProxyType(object.__getattribute__(proxy, "_ModuleProxy__surface"))


def proxy_path(proxy: ModuleProxy) -> str:
    return object.__getattribute__(proxy, "_ModuleProxy__path")


def make_api_proxy(name: str, api: Mapping[str, Any]) -> ModuleProxy:
    """The proxy `import strategy` / `import strategy_api` returns (values already wrapped)."""
    return ModuleProxy._create(name, api)


# ---------------------------------------------------------------------------------------------
# numpy.ndarray stand-in
# ---------------------------------------------------------------------------------------------

_REAL_NDARRAY = np.ndarray


class _NDArrayMeta(type):
    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, _REAL_NDARRAY)

    def __subclasscheck__(cls, sub: Any) -> bool:
        return sub is cls or (isinstance(sub, type) and issubclass(sub, _REAL_NDARRAY))

    def __call__(
        cls, shape: Any, dtype: Any = float, buffer: Any = None, offset: Any = 0, strides: Any = None, order: Any = None
    ) -> Any:
        if buffer is not None or strides is not None or (offset is not None and offset != 0):
            raise guards.violation(
                "np.ndarray(buffer=..., offset=..., strides=...) is not allowed; use np.array, np.zeros or np.empty"
            )
        return _REAL_NDARRAY(shape, dtype=dtype, order=order)

    def __getattr__(cls, name: str) -> Any:
        return guards.guarded_getattr(_REAL_NDARRAY, name)

    def __repr__(cls) -> str:
        return "<class 'numpy.ndarray'>"


class ndarray(metaclass=_NDArrayMeta):  # noqa: N801 - stands in for numpy.ndarray
    """numpy.ndarray as strategies see it."""

    __slots__ = ()


CLASS_SUBSTITUTES: dict[type, type] = {_REAL_NDARRAY: ndarray}

# ---------------------------------------------------------------------------------------------
# Building the module proxies
# ---------------------------------------------------------------------------------------------

_MUTABLE = (dict, list, set, bytearray)


def _vet_surface_value(path: str, name: str, value: Any) -> Any:
    """Surface values are checked once, when proxies are built: a policy mistake fails loudly."""
    if isinstance(value, types.ModuleType):
        raise RuntimeError(f"sandbox policy error: {path}.{name} is a module but not a surface")
    if isinstance(value, _MUTABLE):
        raise RuntimeError(f"sandbox policy error: {path}.{name} is a mutable {type(value).__name__}")
    if isinstance(value, type):
        substitute = CLASS_SUBSTITUTES.get(value)
        if substitute is not None:
            return substitute
    return guards.check_value(value)


def _real_module(path: str) -> types.ModuleType:
    return importlib.import_module(policy.MODULE_REAL_NAMES.get(path, path))


def _build_all() -> tuple[dict[str, ModuleProxy], dict[types.ModuleType, ModuleProxy]]:
    proxies: dict[str, ModuleProxy] = {}
    by_module: dict[types.ModuleType, ModuleProxy] = {}

    def build(path: str) -> ModuleProxy:
        if path in proxies:
            return proxies[path]
        module = _real_module(path)
        surface: dict[str, Any] = {}
        for name in sorted(policy.MODULE_SURFACES[path]):
            child = policy.resolve_module_path(f"{path}.{name}")
            if child is not None:
                surface[name] = build(child)
                continue
            try:
                value = getattr(module, name)
            except AttributeError:
                continue  # not provided by the installed version
            surface[name] = _vet_surface_value(path, name, value)
        proxy = ModuleProxy._create(path, surface)
        proxies[path] = proxy
        by_module.setdefault(module, proxy)
        return proxy

    # install the (still empty) tables first so surface values can be vetted against them
    guards.install_proxy_tables(ModuleProxy, {}, CLASS_SUBSTITUTES)
    for path in policy.MODULE_SURFACES:
        build(path)
    for alias, target in policy.MODULE_ALIASES.items():
        proxies[alias] = proxies[target]
    return proxies, by_module


#: Import spelling -> proxy, for every importable module path.
MODULE_PROXIES, PROXY_FOR_MODULE = _build_all()
guards.install_proxy_tables(ModuleProxy, PROXY_FOR_MODULE, CLASS_SUBSTITUTES)

#: The proxies pre-bound in every execution's globals (np, pd, talib, math, statistics, datetime).
PREBOUND: dict[str, ModuleProxy] = {name: MODULE_PROXIES[path] for name, path in policy.PREBOUND_MODULES.items()}
