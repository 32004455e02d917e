"""The run-time guards, called directly (the attack suite drives them through compiled code)."""

from __future__ import annotations

import os
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest

import sandbox.proxies  # noqa: F401 - installs the proxy tables the guards consult
from contracts.errors import ErrorCode, ExecutionError
from sandbox import guards
from sandbox.compiler import compile_strategy
from sandbox.proxies import MODULE_PROXIES
from sandbox.restricted import build_globals


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


def user_class(source: str = "class Thing:\n    pass\n", name: str = "Thing") -> type:
    namespace = build_globals({}, [].append)
    exec(compile_strategy(source).code, namespace)
    return namespace[name]


# --- violations ------------------------------------------------------------------------------


def test_first_violation_is_remembered_until_reset() -> None:
    guards.reset_violations()
    first = refused(guards.guarded_getattr, 1, "__class__")
    refused(guards.guarded_getattr, 1, "__dict__")
    assert guards.first_violation() is first
    guards.reset_violations()
    assert guards.first_violation() is None


def test_violations_outlive_a_second_build_globals_in_the_same_execution() -> None:
    first = refused(guards.guarded_getattr, 1, "__class__")
    build_globals({}, [].append)
    assert guards.first_violation() is first


def test_violation_carries_the_strategy_line() -> None:
    namespace = build_globals({}, [].append)
    with pytest.raises(ExecutionError) as info:
        exec(compile_strategy("x = 1\ny = 2\nz = getattr(x, '__class__')\n").code, namespace)
    assert info.value.line == 3


# --- getattr ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["__class__", "_mgr", "__dict__", "_", "__globals__"])
def test_private_names_are_refused_at_run_time(name: str) -> None:
    refused(guards.guarded_getattr, pd.DataFrame(), name)


def test_default_does_not_hide_a_refusal() -> None:
    refused(guards.guarded_getattr, 1, "__class__", None)


def test_default_is_returned_for_a_missing_public_name() -> None:
    assert guards.guarded_getattr(1, "nope", 5) == 5


def test_missing_public_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        guards.guarded_getattr(1, "nope")


def test_non_string_name_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        guards.guarded_getattr(1, 5)
    with pytest.raises(TypeError):
        guards.guarded_getattr(1, ["x"])


@pytest.mark.parametrize("name", ["eval", "query", "style", "plot", "to_csv", "to_pickle", "to_parquet"])
def test_library_denied_names_are_refused_on_pandas_objects(name: str) -> None:
    refused(guards.guarded_getattr, pd.DataFrame({"a": [1]}), name)


@pytest.mark.parametrize("name", ["to_sql", "to_clipboard", "read_anything"])
def test_writer_and_reader_prefixes_are_refused_on_library_objects(name: str) -> None:
    refused(guards.guarded_getattr, pd.Series([1.0]), name)


@pytest.mark.parametrize("name", ["to_numpy", "to_list", "to_dict", "to_frame"])
def test_in_memory_conversions_are_allowed(name: str) -> None:
    assert callable(guards.guarded_getattr(pd.Series([1.0]), name))


@pytest.mark.parametrize("name", ["resize", "data", "tofile", "dump", "dumps", "ctypes"])
def test_array_specific_names_are_refused_on_arrays(name: str) -> None:
    refused(guards.guarded_getattr, np.zeros(2), name)


def test_classes_the_code_defines_may_use_any_public_name() -> None:
    source = (
        "class Book:\n    def __init__(self):\n        self.seed = 1\n        self.to_buy = 2\n"
        "        self.options = 3\n        self.query = 4\n"
    )
    book = user_class(source, "Book")()
    assert [guards.guarded_getattr(book, n) for n in ("seed", "to_buy", "options", "query")] == [1, 2, 3, 4]


def test_introspection_names_are_refused_even_on_own_classes() -> None:
    thing = user_class()()
    refused(guards.guarded_getattr, thing, "mro")
    refused(guards.guarded_getattr, thing, "f_globals")


def test_module_valued_attribute_becomes_its_proxy() -> None:
    holder = types.SimpleNamespace(numpy=np, linalg=np.linalg)
    assert guards.guarded_getattr(holder, "numpy") is MODULE_PROXIES["numpy"]
    assert guards.guarded_getattr(holder, "linalg") is MODULE_PROXIES["numpy.linalg"]


@pytest.mark.parametrize("module", [os, sys, types, pd.io, np.lib], ids=lambda m: m.__name__)
def test_module_valued_attribute_outside_the_allowlist_is_refused(module: types.ModuleType) -> None:
    refused(guards.guarded_getattr, types.SimpleNamespace(m=module), "m")


@pytest.mark.parametrize(
    "value",
    [sys._getframe(), (lambda: 0).__code__, types.CellType(1), memoryview(b"x")],
    ids=["frame", "code", "cell", "memoryview"],
)
def test_frames_code_cells_and_memoryviews_are_refused(value: object) -> None:
    refused(guards.guarded_getattr, types.SimpleNamespace(v=value), "v")


def test_traceback_values_are_refused() -> None:
    try:
        raise ValueError
    except ValueError as exc:
        refused(guards.guarded_getattr, types.SimpleNamespace(v=exc.__traceback__), "v")


@pytest.mark.parametrize("namespace", [vars(os), vars(__builtins__) if isinstance(__builtins__, types.ModuleType) else __builtins__])
def test_module_namespaces_are_refused(namespace: dict) -> None:
    refused(guards.guarded_getattr, types.SimpleNamespace(v=namespace), "v")


@pytest.mark.parametrize(
    "cls",
    [type, types.FunctionType, types.CodeType, types.ModuleType, np.void, np.record, np.recarray, np.memmap, np.matrix],
    ids=lambda c: c.__name__,
)
def test_dangerous_classes_are_refused_as_values(cls: type) -> None:
    refused(guards.guarded_getattr, types.SimpleNamespace(c=cls), "c")


def test_real_ndarray_class_is_replaced_by_the_stand_in() -> None:
    assert guards.guarded_getattr(types.SimpleNamespace(c=np.ndarray), "c") is MODULE_PROXIES["numpy"].ndarray


def test_ordinary_classes_pass() -> None:
    assert guards.guarded_getattr(types.SimpleNamespace(c=pd.DataFrame), "c") is pd.DataFrame


def test_decisions_depend_on_the_owner() -> None:
    book = user_class("class Book:\n    def __init__(self):\n        self.eval = 1\n", "Book")()
    assert guards.guarded_getattr(book, "eval") == 1
    refused(guards.guarded_getattr, pd.DataFrame(), "eval")
    assert guards.guarded_getattr(book, "eval") == 1


def test_attribute_guard_overhead_is_small() -> None:
    series = pd.Series([1.0, 2.0])
    guards.guarded_getattr(series, "iloc")
    start = time.perf_counter()
    for _ in range(20000):
        guards.guarded_getattr(series, "iloc")
    per_call = (time.perf_counter() - start) / 20000
    assert per_call < 5e-6


# --- getitem / iteration ----------------------------------------------------------------------


def test_getitem_returns_plain_values() -> None:
    assert guards.guarded_getitem({"a": 1}, "a") == 1
    assert guards.guarded_getitem(pd.Series([1.0, 2.0]), 1) == 2.0


def test_getitem_vets_modules_and_classes() -> None:
    assert guards.guarded_getitem([np], 0) is MODULE_PROXIES["numpy"]
    refused(guards.guarded_getitem, [os], 0)
    refused(guards.guarded_getitem, {"k": np.void}, "k")


def test_iteration_vets_items_of_generic_containers() -> None:
    assert list(guards.guarded_iter([1, np])) == [1, MODULE_PROXIES["numpy"]]
    with pytest.raises(ExecutionError):
        list(guards.guarded_iter([1, os]))


def test_iteration_of_numeric_arrays_is_direct() -> None:
    values = np.arange(3.0)
    assert type(guards.guarded_iter(values)) is type(iter(values))


def test_unpacking_vets_items() -> None:
    spec = {"min_len": 2, "childs": ()}
    assert guards.guarded_unpack_sequence((1, 2), spec, guards.guarded_iter) == [1, 2]
    refused(guards.guarded_unpack_sequence, (1, sys), spec, guards.guarded_iter)


@pytest.mark.parametrize(
    "call",
    [lambda: guards.guarded_next(iter([os])), lambda: guards.guarded_min([os]), lambda: guards.guarded_max([os])],
    ids=["next", "min", "max"],
)
def test_next_min_max_vet_their_result(call) -> None:
    refused(call)


# --- writes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [{}, [], np.zeros(2), pd.DataFrame({"a": [1]}), pd.Series([1]), pd.DataFrame({"a": [1]}).loc],
    ids=["dict", "list", "ndarray", "DataFrame", "Series", "loc"],
)
def test_item_writes_are_allowed_on_data_containers(target: object) -> None:
    assert guards.guarded_write(target) is target


@pytest.mark.parametrize(
    "target",
    [pd.DataFrame, np.ndarray, (1,), "abc", MODULE_PROXIES["numpy"], np.zeros(2).flags],
    ids=["class", "ndarray-class", "tuple", "str", "proxy", "flags"],
)
def test_item_writes_are_refused_elsewhere(target: object) -> None:
    refused(guards.guarded_write, target)


@pytest.mark.parametrize(
    "target", [pd.DataFrame({"a": [1]}), pd.Series([1]), pd.Index([1])], ids=["DataFrame", "Series", "Index"]
)
def test_attribute_writes_are_allowed_on_pandas_objects(target: object) -> None:
    assert guards.guarded_write_attr(target) is target


@pytest.mark.parametrize(
    "target",
    [np.zeros(2), {}, pd.DataFrame, MODULE_PROXIES["math"], np.random.default_rng(1)],
    ids=["ndarray", "dict", "class", "proxy", "generator"],
)
def test_attribute_writes_are_refused_elsewhere(target: object) -> None:
    refused(guards.guarded_write_attr, target)


def test_attribute_writes_are_allowed_on_own_instances_not_own_classes() -> None:
    thing_class = user_class()
    thing = thing_class()
    assert guards.guarded_write_attr(thing) is thing
    refused(guards.guarded_write_attr, thing_class)


def test_setattr_checks_the_name_and_the_target() -> None:
    thing = user_class()()
    guards.guarded_setattr(thing, "x", 1)
    assert thing.x == 1
    refused(guards.guarded_setattr, thing, "__class__", int)
    refused(guards.guarded_setattr, pd.DataFrame(), "to_csv", len)
    refused(guards.guarded_setattr, np.zeros(1), "shape", (1,))


def test_delattr_checks_the_name_and_the_target() -> None:
    thing = user_class()()
    thing.x = 1
    guards.guarded_delattr(thing, "x")
    assert not hasattr(thing, "x")
    refused(guards.guarded_delattr, MODULE_PROXIES["math"], "pi")


def test_inplacevar_applies_in_place_operators() -> None:
    values = np.zeros(2)
    assert guards.guarded_inplacevar("+=", values, 1) is values
    assert values.tolist() == [1.0, 1.0]
    assert guards.guarded_inplacevar("**=", 3, 2) == 9


def test_inplacevar_refuses_unknown_operators() -> None:
    refused(guards.guarded_inplacevar, "=", 1, 2)


def test_apply_refuses_private_keywords_and_passes_the_rest() -> None:
    assert guards.guarded_apply(dict, a=1) == {"a": 1}
    refused(guards.guarded_apply, dict, **{"_a": 1})


# --- builtins --------------------------------------------------------------------------------


def test_type_returns_the_class_of_ordinary_values() -> None:
    assert guards.safe_type(1.0) is float
    assert guards.safe_type(pd.DataFrame()) is pd.DataFrame


def test_type_of_an_array_is_the_stand_in() -> None:
    assert guards.safe_type(np.zeros(1)) is MODULE_PROXIES["numpy"].ndarray


def test_type_refuses_three_arguments_and_metaclasses() -> None:
    refused(guards.safe_type, "X", (), {})
    refused(guards.safe_type, int)
    refused(guards.safe_type, lambda: 0)
    refused(guards.safe_type, MODULE_PROXIES["numpy"])


def test_dir_hides_refused_names() -> None:
    names = guards.guarded_dir(pd.DataFrame({"a": [1]}))
    assert "rolling" in names and "to_numpy" in names
    assert not [n for n in names if n.startswith("_")]
    assert not {"to_csv", "eval", "query", "style", "plot"} & set(names)


def test_dir_of_a_proxy_is_its_surface() -> None:
    assert guards.guarded_dir(MODULE_PROXIES["math"]) == sorted(dir(MODULE_PROXIES["math"]))
    assert "pi" in guards.guarded_dir(MODULE_PROXIES["math"])


def test_dir_needs_an_argument() -> None:
    with pytest.raises(TypeError):
        guards.guarded_dir()


def test_hasattr_is_false_for_missing_and_refuses_private_names() -> None:
    assert guards.guarded_hasattr(pd.Series([1]), "rolling") is True
    assert guards.guarded_hasattr(pd.Series([1]), "nope") is False
    refused(guards.guarded_hasattr, 1, "__class__")


def test_denied_builtin_raises_a_violation_naming_itself() -> None:
    error = refused(guards.denied_builtin("open"), "/etc/passwd")
    assert error.message == "open() is not allowed in strategies"


# --- str.format ------------------------------------------------------------------------------


def test_safe_format_formats_plain_fields() -> None:
    assert guards.safe_format("{} {x:.2f} {0[k]}", {"k": 3}, x=1.234) == "{'k': 3} 1.23 3"


@pytest.mark.parametrize(
    ("template", "arg"),
    [
        ("{0.__class__}", 1),
        ("{0.real.__class__}", 1.5),
        ("{0[0].__class__}", [1]),
        ("{0:{0.__class__}}", 1),
        ("{0.to_csv}", pd.Series([1])),
    ],
    ids=["attr", "attr-chain", "index-then-attr", "nested-spec", "denied-method"],
)
def test_safe_format_guards_field_lookups(template: str, arg: object) -> None:
    refused(guards.safe_format, template, arg)


def test_format_attribute_of_a_str_is_the_safe_formatter() -> None:
    bound = guards.guarded_getattr("{0.__class__}", "format")
    refused(bound, 1)
    assert guards.guarded_getattr("{:>3}", "format")(1) == "  1"
    assert guards.guarded_getattr(str, "format") is guards.safe_format
    assert guards.guarded_getattr("{a}", "format_map")({"a": 1}) == "1"


# --- pandas string dispatch and writers ---------------------------------------------------------


@pytest.mark.parametrize("name", ["mean", "sum", "std", "ohlc", "cumsum", "max", "count", "first"])
def test_dispatch_allows_aggregation_names(name: str) -> None:
    assert guards.dispatch_name_allowed(name)


@pytest.mark.parametrize("name", ["to_pickle", "to_json", "to_string", "eval", "__class__", "save", "load", "test", "info"])
def test_dispatch_refuses_writers_evaluators_private_and_unexposed_numpy_names(name: str) -> None:
    assert not guards.dispatch_name_allowed(name)


def test_dispatch_wrapper_runs_allowed_aggregations() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    agg = guards.guarded_getattr(frame, "agg")
    assert agg("mean").tolist() == [1.5, 3.5]
    assert agg({"a": ["min", "max"]})["a"].tolist() == [1.0, 2.0]


def test_dispatch_wrapper_scans_nested_arguments() -> None:
    frame = pd.DataFrame({"a": [1.0]})
    refused(guards.guarded_getattr(frame, "agg"), {"a": ["mean", ("x", "to_pickle")]})
    refused(guards.guarded_getattr(frame.groupby("a"), "agg"), y=("a", "to_csv"))


def test_string_only_writers_work_without_a_destination() -> None:
    frame = pd.DataFrame({"a": [1]})
    assert guards.guarded_getattr(frame, "to_string")() == frame.to_string()
    assert guards.guarded_getattr(frame, "to_json")() == frame.to_json()
    refused(guards.guarded_getattr(frame, "to_string"), "/tmp/out.txt")
    refused(guards.guarded_getattr(frame, "to_json"), path_or_buf="/tmp/out.json")


# --- classes ---------------------------------------------------------------------------------


def test_metaclass_marks_classes_and_allows_own_and_exception_bases() -> None:
    source = "class Base:\n    pass\nclass Child(Base):\n    pass\nclass Oops(ValueError):\n    pass\nclass Plain(object):\n    pass\n"
    namespace = build_globals({}, [].append)
    exec(compile_strategy(source).code, namespace)
    assert issubclass(namespace["Child"], namespace["Base"])
    assert issubclass(namespace["Oops"], ValueError)
    assert namespace["Plain"].__mro__ == (namespace["Plain"], object)


@pytest.mark.parametrize("base", [dict, np.ndarray, pd.DataFrame, type, types.SimpleNamespace], ids=lambda b: b.__name__)
def test_metaclass_refuses_library_and_builtin_bases(base: type) -> None:
    refused(guards.sandbox_metaclass, "X", (base,), {"__module__": "strategy", "__qualname__": "X"})


def test_metaclass_refuses_private_namespace_entries() -> None:
    refused(guards.sandbox_metaclass, "X", (), {"__module__": "m", "__array_interface__": {}})
    refused(guards.sandbox_metaclass, "X", (), {"__module__": "m", "__getattr__": len})


# --- nothing a strategy creates outlives its run in the guards' caches ------------------------


def test_the_decision_cache_never_keeps_a_strategy_class() -> None:
    import gc
    import weakref

    cls = user_class("class Holder:\n    blob = [1, 2, 3]\n    def __init__(self):\n        self.value = 1\n",
                     "Holder")
    instance = cls()
    assert guards.guarded_getattr(instance, "value") == 1
    assert guards.guarded_getattr(cls, "blob") == [1, 2, 3]
    assert not any(owner is cls for owner, _ in guards.decisions_snapshot())
    ref = weakref.ref(cls)
    del cls, instance
    gc.collect()
    assert ref() is None


def test_restoring_the_decision_cache_drops_entries_added_since_the_snapshot() -> None:
    class Made:  # as a library factory could build one on a strategy's behalf
        value = 1

    snapshot = guards.decisions_snapshot()
    guards.guarded_getattr(Made, "value")
    assert any(owner is Made for owner, _ in guards.decisions_snapshot())
    guards.restore_decisions(snapshot)
    assert guards.decisions_snapshot() == snapshot


def test_an_ndarray_subclass_is_refused_wherever_a_guard_sees_it() -> None:
    matrix = np.r_["r", [1, 2]]
    assert type(matrix) is np.matrix
    refused(guards.check_value, matrix)
    refused(guards.guarded_getitem, np.r_, ("r", [1, 2]))
    refused(guards.guarded_getitem, np.c_, ("c", [1, 2]))
    refused(guards.guarded_getitem, np.r_, ("c", [1, 2], [3, 4]))
    assert type(guards.guarded_getitem(np.r_, ([1], [2]))) is np.ndarray


def test_no_module_surface_exposes_a_shared_mutable_object() -> None:
    """What strategies can reach through the proxies (two class levels deep) holds no list,
    dict, set or array that every run would share: a place one run could leave data for the
    next (or poison it). Values rebuilt on each access (ufunc.types) are not shared."""
    from sandbox.proxies import ModuleProxy, proxy_surface

    mutable = (list, dict, set, bytearray, np.ndarray, pd.DataFrame, pd.Series)
    seen: set[int] = set()
    shared: list[str] = []

    def scan(path: str, obj: object, depth: int) -> None:
        if id(obj) in seen or depth > 2:
            return
        seen.add(id(obj))
        if isinstance(obj, mutable):
            shared.append(path)
            return
        if isinstance(obj, ModuleProxy):
            for key, value in proxy_surface(obj).items():
                scan(f"{path}.{key}", value, depth)
            return
        owner = obj if isinstance(obj, type) else type(obj)
        for name in dir(obj):
            if name.startswith("_") or type(guards.attribute_rule(owner, name)) is str:
                continue
            try:
                with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
                    __import__("warnings").simplefilter("ignore")
                    first, again = getattr(obj, name), getattr(obj, name)
            except Exception:  # noqa: BLE001 - a property that needs an instance
                continue
            if isinstance(first, mutable) and not callable(first) and first is again:
                shared.append(f"{path}.{name}")
            elif isinstance(first, (type, ModuleProxy)):
                scan(f"{path}.{name}", first, depth + 1)

    for path, proxy in MODULE_PROXIES.items():
        scan(path, proxy, 0)
    assert shared == []
