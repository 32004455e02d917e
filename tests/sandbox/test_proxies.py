"""Module proxies, the ndarray stand-in, the importer and build_globals."""

from __future__ import annotations

import datetime
import math
import statistics
import time
import types

import numpy as np
import pandas as pd
import pytest
import talib

from contracts.errors import ErrorCode, ExecutionError
from sandbox import guards, policy
from sandbox.compiler import compile_strategy
from sandbox.proxies import MODULE_PROXIES, PREBOUND, ModuleProxy, proxy_path, proxy_surface
from sandbox.restricted import SAFE_BUILTINS, build_globals


@pytest.fixture(autouse=True)
def _fresh_violations():
    """Each test is one 'execution': start with no recorded violation (a forked child does)."""
    guards.reset_violations()
    yield
    guards.reset_violations()


def refused(fn, *args, **kwargs) -> ExecutionError:
    with pytest.raises(ExecutionError) as info:
        fn(*args, **kwargs)
    assert info.value.code == ErrorCode.SECURITY_VIOLATION
    return info.value


# --- surfaces --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(policy.IMPORTABLE_MODULES - policy.API_MODULE_NAMES))
def test_every_importable_module_has_a_proxy(path: str) -> None:
    assert isinstance(MODULE_PROXIES[path], ModuleProxy)


@pytest.mark.parametrize("path", sorted(policy.MODULE_SURFACES))
def test_proxy_exposes_only_its_surface(path: str) -> None:
    assert set(proxy_surface(MODULE_PROXIES[path])) <= policy.MODULE_SURFACES[path]


@pytest.mark.parametrize("path", ["numpy", "pandas", "math", "statistics", "datetime", "numpy.linalg", "numpy.random"])
def test_proxy_surface_is_nearly_complete_on_this_version(path: str) -> None:
    missing = policy.MODULE_SURFACES[path] - set(proxy_surface(MODULE_PROXIES[path]))
    assert len(missing) <= 3, missing


def test_talib_proxy_exposes_the_common_indicators() -> None:
    surface = proxy_surface(MODULE_PROXIES["talib"])
    assert {"SMA", "EMA", "RSI", "MACD", "BBANDS", "ATR", "STOCH", "MA_Type"} <= set(surface)
    assert surface["SMA"] is talib.SMA


@pytest.mark.parametrize("path", sorted(policy.MODULE_SURFACES))
def test_proxy_values_are_never_modules_mutable_tables_or_dangerous_classes(path: str) -> None:
    for name, value in proxy_surface(MODULE_PROXIES[path]).items():
        assert not isinstance(value, types.ModuleType), name
        assert not isinstance(value, (dict, list, set, bytearray)), name
        if isinstance(value, type):
            assert guards.check_value(value) is value, name


def test_exposed_classes_have_no_public_mutable_class_attributes() -> None:
    for path, proxy in MODULE_PROXIES.items():
        for name, value in proxy_surface(proxy).items():
            if not isinstance(value, type):
                continue
            for attr in dir(value):
                if attr.startswith("_"):
                    continue
                try:
                    found = getattr(value, attr)
                except Exception:
                    continue
                assert not isinstance(found, (dict, list, set, bytearray)), f"{path}.{name}.{attr}"


def test_submodules_are_nested_proxies() -> None:
    assert MODULE_PROXIES["numpy"].linalg is MODULE_PROXIES["numpy.linalg"]
    assert MODULE_PROXIES["pandas"].api.types is MODULE_PROXIES["pandas.api.types"]
    assert MODULE_PROXIES["pandas.tseries.offsets"] is MODULE_PROXIES["pandas.offsets"]


@pytest.mark.parametrize("name", sorted(PREBOUND))
def test_prebound_names_are_proxies_of_their_module(name: str) -> None:
    assert proxy_path(PREBOUND[name]) == policy.PREBOUND_MODULES[name]


def test_proxy_values_are_the_real_functions() -> None:
    assert MODULE_PROXIES["numpy"].mean is np.mean
    assert MODULE_PROXIES["pandas"].DataFrame is pd.DataFrame
    assert MODULE_PROXIES["math"].sqrt is math.sqrt
    assert MODULE_PROXIES["statistics"].mean is statistics.mean
    assert MODULE_PROXIES["datetime"].timedelta is datetime.timedelta


# --- proxy object ----------------------------------------------------------------------------


def test_proxy_refuses_names_outside_its_surface() -> None:
    error = refused(getattr, MODULE_PROXIES["statistics"], "sys")
    assert error.message == '"statistics.sys" is not available in strategies'


def test_proxy_private_names_are_attribute_errors() -> None:
    for name in ("__name__", "__dict__", "__spec__", "__file__", "_ModuleProxy__surface_x"):
        with pytest.raises(AttributeError):
            getattr(MODULE_PROXIES["numpy"], name)


def test_proxy_is_read_only() -> None:
    proxy = MODULE_PROXIES["math"]
    refused(setattr, proxy, "pi", 3)
    refused(delattr, proxy, "pi")
    assert proxy.pi == math.pi


def test_proxies_cannot_be_constructed() -> None:
    with pytest.raises(TypeError):
        ModuleProxy("os", {})


def test_proxy_keeps_no_reference_to_its_module() -> None:
    import gc

    referents = gc.get_referents(MODULE_PROXIES["numpy"])
    assert np not in referents
    assert not any(isinstance(r, types.ModuleType) for r in referents)


def test_proxy_repr_and_dir() -> None:
    proxy = MODULE_PROXIES["math"]
    assert repr(proxy) == "<module 'math'>"
    assert dir(proxy) == sorted(proxy_surface(proxy))


def test_from_import_fallback_finds_nothing() -> None:
    # `from m import n` falls back to sys.modules[m.__name__ + '.' + n] on AttributeError;
    # proxies have no __name__, so the fallback cannot reach a real module.
    namespace = build_globals({}, [].append)
    code = compile("from numpy import ctypeslib", "<strategy>", "exec")
    with pytest.raises((ImportError, ExecutionError)):
        exec(code, namespace)
    assert "ctypeslib" not in namespace


# --- ndarray stand-in ------------------------------------------------------------------------


def test_ndarray_stand_in_supports_isinstance_and_issubclass() -> None:
    stand_in = MODULE_PROXIES["numpy"].ndarray
    assert stand_in is not np.ndarray
    assert isinstance(np.zeros(2), stand_in)
    assert isinstance(np.zeros(2), (stand_in, list))
    assert not isinstance([1], stand_in)
    assert issubclass(np.ndarray, stand_in) and issubclass(stand_in, stand_in)
    assert repr(stand_in) == "<class 'numpy.ndarray'>"


def test_ndarray_stand_in_allocates_without_buffer() -> None:
    array = MODULE_PROXIES["numpy"].ndarray((2, 3), dtype=np.float32)
    assert type(array) is np.ndarray and array.shape == (2, 3) and array.dtype == np.float32


@pytest.mark.parametrize(
    "kwargs",
    [{"buffer": b"\0" * 8}, {"offset": -8}, {"strides": (8,)}, {"buffer": np.array([1], dtype=object)}],
    ids=["buffer", "offset", "strides", "object-buffer"],
)
def test_ndarray_stand_in_refuses_raw_buffer_forms(kwargs: dict) -> None:
    refused(MODULE_PROXIES["numpy"].ndarray, (1,), np.int64, **kwargs)


def test_ndarray_stand_in_class_attributes_are_guarded() -> None:
    stand_in = MODULE_PROXIES["numpy"].ndarray
    assert stand_in.mean is np.ndarray.mean
    refused(getattr, stand_in, "tofile")
    refused(guards.guarded_getattr, stand_in, "mro")


# --- importer --------------------------------------------------------------------------------


def importer() -> types.FunctionType:
    return build_globals({"signal": print}, [].append)["__builtins__"]["__import__"]


def test_import_returns_the_top_level_proxy_without_fromlist() -> None:
    assert importer()("numpy.linalg") is MODULE_PROXIES["numpy"]


def test_import_returns_the_named_proxy_with_fromlist() -> None:
    assert importer()("numpy.linalg", None, None, ("norm",), 0) is MODULE_PROXIES["numpy.linalg"]


@pytest.mark.parametrize("name", ["os", "numpy.lib", "pandas.io.common", "importlib", "builtins", "talib._ta_lib"])
def test_import_of_anything_else_is_refused(name: str) -> None:
    refused(importer(), name)
    refused(importer(), name, None, None, ("x",), 0)


def test_relative_import_is_refused() -> None:
    refused(importer(), "numpy", None, None, ("mean",), 1)


def test_api_module_names_import_the_api() -> None:
    namespace = build_globals({"signal": print, "params": {"a": 1}}, [].append)
    exec(compile_strategy("import strategy\nfrom strategy_api import params\np = params").code, namespace)
    assert callable(namespace["strategy"].signal)
    assert namespace["p"] == {"a": 1}


def test_api_proxy_is_read_only() -> None:
    namespace = build_globals({"signal": print}, [].append)
    with pytest.raises(ExecutionError):
        exec(compile_strategy("import strategy\nstrategy.signal = len").code, namespace)


def test_c_extension_imports_of_loaded_modules_work_inside_strategies() -> None:
    namespace = build_globals({}, [].append)
    exec(compile_strategy("total = np.arange(4.0).sum()\nspread = np.arange(4.0).std()").code, namespace)
    assert namespace["total"] == 6.0


def test_c_extension_style_import_never_loads_new_modules() -> None:
    with pytest.raises(ImportError):
        importer()("not_a_loaded_module_xyz", None, None, [], 0)


# --- build_globals ---------------------------------------------------------------------------


def test_build_globals_binds_proxies_hooks_and_api() -> None:
    namespace = build_globals({"signal": print, "params": {"x": 1}}, [].append)
    for name in ("np", "pd", "talib", "math", "statistics", "datetime"):
        assert namespace[name] is PREBOUND[name]
    for hook in ("_getattr_", "_getitem_", "_getiter_", "_write_", "_write_attr_", "_inplacevar_", "_apply_", "_print_"):
        assert callable(namespace[hook])
    assert namespace["params"] == {"x": 1}
    assert namespace["__name__"] == "strategy"


def test_build_globals_returns_fresh_dicts() -> None:
    first = build_globals({}, [].append)
    second = build_globals({}, [].append)
    assert first is not second and first["__builtins__"] is not second["__builtins__"]
    first["x"] = 1
    first["__builtins__"]["len"] = None
    assert "x" not in second and second["__builtins__"]["len"] is len


@pytest.mark.parametrize("name", ["open", "eval", "exec", "compile", "globals", "locals", "vars", "input", "help", "super", "memoryview", "id", "breakpoint", "exit", "quit"])
def test_dangerous_builtins_are_violations_when_called(name: str) -> None:
    refused(SAFE_BUILTINS[name])


@pytest.mark.parametrize("name", ["getattr", "hasattr", "setattr", "delattr", "type", "dir", "next", "min", "max"])
def test_introspective_builtins_are_the_guarded_versions(name: str) -> None:
    import builtins

    assert SAFE_BUILTINS[name] is not getattr(builtins, name)


def test_range_is_not_limited() -> None:
    namespace = build_globals({}, [].append)
    exec(compile_strategy("n = len(range(100000))").code, namespace)
    assert namespace["n"] == 100000


def test_api_callables_are_wrapped_opaquely() -> None:
    import functools

    calls = []
    namespace = build_globals({"signal": functools.partial(calls.append)}, [].append)
    wrapped = namespace["signal"]
    assert type(wrapped) is types.FunctionType and not hasattr(wrapped, "func")
    wrapped("buy")
    assert calls == ["buy"]


def test_api_classes_and_data_pass_unchanged() -> None:
    frame = pd.DataFrame({"a": [1]})
    namespace = build_globals({"Frame": pd.DataFrame, "data": frame}, [].append)
    assert namespace["Frame"] is pd.DataFrame and namespace["data"] is frame


@pytest.mark.parametrize("api", [{"_secret": 1}, {"not an identifier": 1}, {"os": types}], ids=["private", "space", "module"])
def test_invalid_api_entries_are_programming_errors(api: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        build_globals(api, [].append)


def test_print_goes_to_the_sink_one_call_per_print() -> None:
    lines: list[str] = []
    namespace = build_globals({}, lines.append)
    source = "print('a', 1)\nprint('b', end='')\nprint('x', 'y', sep='-')\ndef f():\n    print('in f')\n    return printed\nout = f()\n"
    exec(compile_strategy(source).code, namespace)
    assert lines == ["a 1", "b", "x-y", "in f"]
    assert namespace["out"] == "in f\n"
