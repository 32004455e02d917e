"""compile_strategy, CompiledStrategy and CompileCache."""

from __future__ import annotations

import hashlib
import types

import pytest

from contracts.errors import ErrorCode, ExecutionError
from sandbox import guards
from sandbox.compiler import CompileCache, CompiledStrategy, compile_strategy
from sandbox.restricted import build_globals


@pytest.fixture(autouse=True)
def _fresh_violations():
    """Each test is one 'execution': start with no recorded violation (a forked child does)."""
    guards.reset_violations()
    yield
    guards.reset_violations()


def run(source: str, api: dict | None = None) -> dict:
    namespace = build_globals(api or {}, [].append)
    exec(compile_strategy(source).code, namespace)
    return namespace


# --- results ---------------------------------------------------------------------------------


def test_source_hash_is_the_sha256_of_the_utf8_source() -> None:
    source = "x = 'é'\n"
    assert compile_strategy(source).source_hash == hashlib.sha256(source.encode()).hexdigest()


def test_code_is_a_code_object_named_after_the_strategy_file() -> None:
    compiled = compile_strategy("x = 1\n")
    assert isinstance(compiled.code, types.CodeType)
    assert compiled.code.co_filename == "<strategy>"


def test_filename_can_be_chosen() -> None:
    assert compile_strategy("x = 1\n", filename="<user-42>").code.co_filename == "<user-42>"


@pytest.mark.parametrize(
    ("source", "style"),
    [
        ("def strategy(data):\n    return 'BUY'\n", "function"),
        ("def classify_symbol(symbol):\n    return True\n", "classify"),
        ("def strategy(data):\n    pass\ndef classify_symbol(s):\n    pass\n", "function"),
        ("signal('buy', 'x')\n", "script"),
        ("def helper():\n    def strategy(data):\n        pass\nhelper()\n", "script"),
        ("class A:\n    def strategy(self):\n        pass\nA().strategy()\n", "script"),
    ],
    ids=["strategy-def", "classify-def", "strategy-wins", "script", "nested-def-is-script", "method-is-script"],
)
def test_style_is_taken_from_top_level_definitions(source: str, style: str) -> None:
    assert compile_strategy(source).style == style


@pytest.mark.parametrize("source", [
    "def strat(data):\n    return 'BUY'\n",
    "import numpy as np\n\"docstring\"\n",
    "def helper():\n    def strategy(data):\n        pass\n",
    "class A:\n    def strategy(self):\n        pass\n",
])
def test_code_that_only_defines_things_has_no_entry_point(source: str) -> None:
    with pytest.raises(ExecutionError) as err:
        compile_strategy(source)
    assert err.value.code == ErrorCode.COMPILE_ERROR
    assert "no entry point" in err.value.message


@pytest.mark.parametrize("source", [
    "def strat(data):\n    return 'BUY'\n",
    "import numpy as np\n\"docstring\"\n",
    "def helper():\n    def strategy(data):\n        pass\n",
    "class A:\n    def strategy(self):\n        pass\n",
])
def test_code_that_only_defines_things_has_no_entry_point(source: str) -> None:
    with pytest.raises(ExecutionError) as err:
        CompileCache().get(source)
    assert err.value.code == ErrorCode.COMPILE_ERROR
    assert "no entry point" in err.value.message


def test_imports_lists_top_level_module_names_once_in_order() -> None:
    source = (
        "import pandas as pd\nimport numpy.linalg\nfrom numpy import mean\nfrom strategy import signal\n"
        "def f():\n    import math\n    import pandas\n"
    )
    assert compile_strategy(source).imports == ["pandas", "numpy", "strategy", "math"]


# --- errors ----------------------------------------------------------------------------------


def test_syntax_error_is_a_compile_error_with_message_and_line() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = 1\ny = 2\nif x\n    pass\n")
    assert info.value.code == ErrorCode.COMPILE_ERROR
    assert info.value.line == 3
    assert info.value.message == "SyntaxError: expected ':' (line 3)"


def test_indentation_error_keeps_its_name() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = 1\n  y = 2\n")
    assert info.value.code == ErrorCode.COMPILE_ERROR
    assert info.value.message == "IndentationError: unexpected indent (line 2)"


def test_compile_stage_syntax_error_is_a_compile_error() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = 1\nreturn x\n")
    assert info.value.code == ErrorCode.COMPILE_ERROR
    assert info.value.line == 2
    assert info.value.message == "SyntaxError: 'return' outside function (line 2)"


def test_null_byte_is_a_compile_error_without_line() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = 1\0")
    assert info.value.code == ErrorCode.COMPILE_ERROR
    assert info.value.line is None


def test_absurd_nesting_is_a_compile_error() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = " + "(" * 300 + "1" + ")" * 300)
    assert info.value.code == ErrorCode.COMPILE_ERROR


def test_compile_errors_contain_no_host_paths() -> None:
    for source in ("if x\n", "x = 1\0", "return 1\n", "import os\n", "x.__class__\n"):
        with pytest.raises(ExecutionError) as info:
            compile_strategy(source)
        assert "/" not in info.value.message


def test_policy_violation_is_a_security_violation_with_its_line() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x = 1\n\ny = x.__class__\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION
    assert info.value.line == 3
    assert info.value.message == '"__class__" is an invalid attribute name because it starts with "_". (line 3)'


def test_several_violations_are_reported_first_line_first_and_capped() -> None:
    source = "import os\nimport sys\nimport socket\nimport pickle\nimport ctypes\n"
    with pytest.raises(ExecutionError) as info:
        compile_strategy(source)
    assert info.value.line == 1
    assert info.value.message == (
        'import of "os" is not allowed (line 1); import of "sys" is not allowed (line 2); '
        'import of "socket" is not allowed (line 3) (and 2 more)'
    )


def test_restrictedpython_errors_map_to_security_violation() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("def f():\n    exec('1')\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION
    assert info.value.line == 2
    assert info.value.message == "Exec calls are not allowed. (line 2)"


@pytest.mark.parametrize(
    "source",
    ["import numpy.lib", "from numpy import lib", "from pandas import io", "import datetime.sys", "from math import sys"],
)
def test_import_outside_the_surface_is_refused_statically(source: str) -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy(source)
    assert info.value.code == ErrorCode.SECURITY_VIOLATION


@pytest.mark.parametrize(
    "source",
    [
        "import numpy\nimport numpy.linalg\nimport numpy.random as r",
        "from numpy import linalg, mean, nan\nfrom numpy.fft import fft",
        "from pandas.api.types import is_numeric_dtype\nfrom pandas.tseries.offsets import BDay",
        "from pandas.offsets import MonthEnd\nimport pandas.api.types as t",
        "from strategy import anything_the_runtime_offers\nimport strategy_api",
        "from talib import SMA, MA_Type\nfrom statistics import mean\nfrom datetime import timedelta",
    ],
)
def test_allowlisted_imports_compile(source: str) -> None:
    compile_strategy(source)


def test_private_keyword_argument_is_refused_statically() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("f(a=1, _b=2)\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION


@pytest.mark.parametrize("attr", ["f_globals", "func_globals", "mro", "ctypes", "gi_frame", "tb_frame"])
def test_introspection_attribute_names_are_refused_statically(attr: str) -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy(f"y = x.{attr}\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION


def test_ordinary_attribute_names_on_own_objects_compile() -> None:
    compile_strategy("self.seed = 1\nself.options = {}\nself.to_buy = True\nself.query = 'x'\n")


# --- rewrites --------------------------------------------------------------------------------


def test_attribute_store_goes_through_write_attr_and_item_store_through_write() -> None:
    names = compile_strategy("a.x = 1\na[0] = 1\ndel a.y\ndel a[1]\n").code.co_names
    assert "_write_attr_" in names and "_write_" in names


def test_augmented_attribute_assignment_runs_guarded() -> None:
    source = """
class Counter:
    def __init__(self):
        self.n = 1
c = Counter()
c.n += 4
c.n *= 3
"""
    assert run(source)["c"].n == 15


def test_augmented_item_assignment_evaluates_target_and_key_once() -> None:
    source = """
calls = []
def target():
    calls.append("target")
    return box
def key():
    calls.append("key")
    return "k"
box = {"k": 1}
target()[key()] += 10
"""
    namespace = run(source)
    assert namespace["box"] == {"k": 11}
    assert namespace["calls"] == ["target", "key"]


def test_augmented_item_assignment_on_arrays_is_in_place() -> None:
    namespace = run("a = np.zeros(3)\nb = a\na[1] += 2\ncounts = {'x': 1}\ncounts['x'] -= 1\n")
    assert namespace["b"].tolist() == [0.0, 2.0, 0.0]
    assert namespace["counts"] == {"x": 0}


def test_augmented_slice_assignment_is_refused() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("a[1:2] += 1\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION


def test_augmented_assignment_keeps_attribute_checks() -> None:
    with pytest.raises(ExecutionError) as info:
        compile_strategy("x.__dict__ += 1\n")
    assert info.value.code == ErrorCode.SECURITY_VIOLATION


def test_annotated_assignment_becomes_plain_assignment() -> None:
    namespace = run("x: int = 3\ny: float\ndef f(a: int) -> int:\n    z: int\n    return a\nw = f(x)\n")
    assert namespace["x"] == 3 and namespace["w"] == 3 and "y" not in namespace


def test_annotated_assignment_checks_its_target() -> None:
    with pytest.raises(ExecutionError):
        compile_strategy("_x: int = 3\n")


# --- serialization ---------------------------------------------------------------------------


def test_to_bytes_round_trips_and_runs() -> None:
    compiled = compile_strategy("import numpy as np\ndef strategy(data):\n    return 'BUY'\n")
    restored = CompiledStrategy.from_bytes(compiled.to_bytes())
    assert (restored.source_hash, restored.style, restored.imports) == (
        compiled.source_hash,
        compiled.style,
        compiled.imports,
    )
    namespace = build_globals({}, [].append)
    exec(restored.code, namespace)
    assert namespace["strategy"](None) == "BUY"


@pytest.mark.parametrize("data", [b"", b"garbage", b"\xe9\x00\x00"], ids=["empty", "text", "bytes"])
def test_from_bytes_rejects_what_to_bytes_did_not_produce(data: bytes) -> None:
    with pytest.raises(ValueError):
        CompiledStrategy.from_bytes(data)


def test_from_bytes_rejects_a_marshalled_tuple_of_the_wrong_shape() -> None:
    import marshal

    with pytest.raises(ValueError):
        CompiledStrategy.from_bytes(marshal.dumps(("sandbox.compiled/1", b"x", "h", "script", (), None)))


# --- cache -----------------------------------------------------------------------------------


def test_cache_reports_miss_then_hit_and_returns_the_same_object() -> None:
    cache = CompileCache()
    first, hit1 = cache.get("x = 1\n")
    second, hit2 = cache.get("x = 1\n")
    assert (hit1, hit2) == (False, True)
    assert first is second
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)


def test_cache_is_a_bounded_lru() -> None:
    cache = CompileCache(maxsize=2)
    cache.get("a = 1\n")
    cache.get("b = 1\n")
    cache.get("a = 1\n")  # a is now most recent
    cache.get("c = 1\n")  # evicts b
    assert len(cache) == 2
    assert cache.get("a = 1\n")[1] is True
    assert cache.get("b = 1\n")[1] is False


def test_cache_remembers_failures_and_raises_them_again() -> None:
    cache = CompileCache()
    for _ in range(2):
        with pytest.raises(ExecutionError) as info:
            cache.get("import os\n")
        assert info.value.code == ErrorCode.SECURITY_VIOLATION and info.value.line == 1
    assert (cache.hits, cache.misses) == (1, 1)


def test_cache_default_size_is_512() -> None:
    assert CompileCache().maxsize == 512


def test_static_refusals_are_not_recorded_as_run_time_violations() -> None:
    with pytest.raises(ExecutionError):
        compile_strategy("import os\n")
    assert guards.first_violation() is None  # static refusals are reported by the exception itself
