"""The sandbox policy end to end: attack code is refused and reaches nothing; honest code runs.

Every attack is compiled with `compile_strategy` and executed in-process in `build_globals`
globals. It must end in a SECURITY_VIOLATION (at compile time or at run time, with the
strategy's line) before anything is bound to `leak`. A violation the code catches still counts:
the runner raises `guards.first_violation()`, as the runtime does.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
import talib

from contracts.errors import ErrorCode, ExecutionError
from sandbox import guards
from sandbox.compiler import compile_strategy
from sandbox.restricted import build_globals


@pytest.fixture(autouse=True)
def _fresh_violations():
    """Each test is one 'execution': start with no recorded violation (a forked child does)."""
    guards.reset_violations()
    yield
    guards.reset_violations()


class Recorder:
    """A stub strategy API: signal(), indicator(), log() and params."""

    def __init__(self) -> None:
        self.signals: list[tuple] = []
        self.indicators: dict[str, object] = {}
        self.logs: list[str] = []

    def signal(self, kind: str, reason: str = "") -> None:
        self.signals.append((kind, reason))

    def indicator(self, name: str, values: object) -> None:
        self.indicators[name] = values

    def log(self, *parts: object) -> None:
        self.logs.append(" ".join(str(p) for p in parts))


def bars(n: int = 300, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 + np.cumsum(rng.normal(0, 1, n))
    high = close + rng.uniform(0.1, 1.0, n)
    low = close - rng.uniform(0.1, 1.0, n)
    open_ = close + rng.normal(0, 0.3, n)
    volume = rng.integers(1_000, 10_000, n).astype(float)
    index = pd.date_range("2024-01-01", periods=n, freq="D", name="timestamp")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close, "volume": volume}, index=index)


def make_api(recorder: Recorder, data: pd.DataFrame, params: dict | None = None) -> dict:
    return {
        "data": data,
        "df": data,
        "params": dict(params or {}),
        "signal": recorder.signal,
        "indicator": recorder.indicator,
        "log": recorder.log,
    }


def execute(source: str, api: dict, prints: list[str] | None = None) -> dict:
    """Compile, build globals, exec; raise a violation the code swallowed."""
    compiled = compile_strategy(source)
    namespace = build_globals(api, (prints if prints is not None else []).append)
    exec(compiled.code, namespace)
    caught = guards.first_violation()
    if caught is not None:
        raise caught
    return namespace


# ---------------------------------------------------------------------------------------------
# Attacks
# ---------------------------------------------------------------------------------------------

_READERS = sorted(name for name in dir(pd) if name.startswith("read_"))
_ALLOWED_TO = {"to_numpy", "to_list", "to_dict", "to_frame", "to_period", "to_timestamp", "to_string", "to_json"}
_FRAME_WRITERS = sorted(n for n in dir(pd.DataFrame) if n.startswith("to_") and n not in _ALLOWED_TO)
_SERIES_WRITERS = sorted(n for n in dir(pd.Series) if n.startswith("to_") and n not in _ALLOWED_TO)

ATTACKS: dict[str, str] = {
    # --- 1. modules only through proxies; nothing re-exported is reachable ---------------------
    "statistics.sys": "leak = statistics.sys",
    "statistics.random": "leak = statistics.random",
    "statistics.math": "leak = statistics.math",
    "datetime.sys": "leak = datetime.sys",
    "datetime.datetime_CAPI": "leak = datetime.datetime_CAPI",
    "pd.io.common.os": "leak = pd.io.common.os",
    "pd.io": "leak = pd.io",
    "pd.compat": "leak = pd.compat",
    "pd.core.frame.operator": "leak = pd.core.frame.operator",
    "pd.util": "leak = pd.util",
    "pd.plotting": "leak = pd.plotting",
    "pd.testing": "leak = pd.testing",
    "pd.api.extensions": "leak = pd.api.extensions",
    "pd.api.interchange": "leak = pd.api.interchange",
    "talib.func": "leak = talib.func",
    "talib.abstract": "from talib import abstract\nleak = abstract.Function('SMA').__class__",
    "talib.stream": "leak = talib.stream",
    "talib.set_unstable_period": "leak = talib.set_unstable_period",
    "talib.get_function_groups": "leak = talib.get_function_groups()",
    "talib.func_globals": "leak = getattr(talib.SMA, 'func_globals')",
    "np.ctypeslib": "leak = np.ctypeslib",
    "np.f2py": "leak = np.f2py",
    "np.distutils": "leak = np.distutils",
    "np.testing": "leak = np.testing",
    "np.lib": "leak = np.lib",
    "np.lib.format": "leak = np.lib.format",
    "np.lib.stride_tricks.as_strided": "leak = np.lib.stride_tricks.as_strided",
    "np.core": "leak = np.core",
    "np.ma": "leak = np.ma",
    "np.rec": "leak = np.rec",
    "np.char": "leak = np.char",
    "np.typecodes (mutable table)": "leak = np.typecodes",
    "np.sctypeDict (mutable table)": "leak = np.sctypeDict",
    "np.random.seed": "np.random.seed(1)\nleak = 1",
    "np.random.set_state": "leak = np.random.set_state",
    "np.random.get_state": "leak = np.random.get_state()",
    "np.random.bit_generator module": "leak = np.random.bit_generator",
    "np.random.mtrand": "leak = np.random.mtrand",
    "rng.bit_generator.ctypes": "leak = np.random.default_rng(1).bit_generator.ctypes",
    "rng.bit_generator.cffi": "leak = getattr(np.random.default_rng(1).bit_generator, 'cffi')",
    "rng.bit_generator.capsule": "leak = getattr(np.random.default_rng(1).bit_generator, 'capsule')",
    "rng.bit_generator.state = ...": "g = np.random.default_rng(1)\ng.bit_generator.state = {}\nleak = 1",
    # file readers and writers
    **{f"pd.{name}": f"leak = pd.{name}" for name in _READERS},
    "pd.read_csv via getattr": "leak = getattr(pd, 'read_' + 'csv')",
    "pd.read_pickle call": "leak = pd.read_pickle('/etc/passwd')",
    "pd.to_pickle": "leak = pd.to_pickle",
    "pd.ExcelWriter": "leak = pd.ExcelWriter",
    "pd.HDFStore": "leak = pd.HDFStore",
    **{f"DataFrame.{name}": f"leak = df.{name}" for name in _FRAME_WRITERS},
    **{f"Series.{name}": f"leak = df['close'].{name}" for name in _SERIES_WRITERS},
    "DataFrame.to_csv via getattr": "leak = getattr(df, 'to_csv')",
    "pd.DataFrame.to_csv (class)": "leak = pd.DataFrame.to_csv",
    "type(df).to_pickle": "leak = type(df).to_pickle",
    "DataFrame.to_string(buf)": "leak = df.to_string('/tmp/x.txt')",
    "DataFrame.to_string(buf=)": "leak = df.to_string(buf='/tmp/x.txt')",
    "DataFrame.to_json(path)": "leak = df.to_json('/tmp/x.json')",
    "DataFrame.to_json(path_or_buf=)": "leak = df.to_json(path_or_buf='/tmp/x.json')",
    "Series.to_json(path)": "leak = df['close'].to_json('/tmp/x.json')",
    "np.load": "leak = np.load",
    "np.load(allow_pickle)": "leak = np.load('/tmp/x.npy', allow_pickle=True)",
    "np.save": "leak = np.save",
    "np.savez": "leak = np.savez",
    "np.savez_compressed": "leak = np.savez_compressed",
    "np.savetxt": "leak = np.savetxt",
    "np.fromfile": "leak = np.fromfile",
    "np.memmap": "leak = np.memmap",
    "np.loadtxt": "leak = np.loadtxt",
    "np.genfromtxt": "leak = np.genfromtxt",
    "np.fromregex": "leak = np.fromregex",
    "np.DataSource": "leak = np.DataSource",
    "np.info": "leak = np.info",
    "np.show_config": "leak = np.show_config",
    "np.get_include": "leak = np.get_include()",
    "np.test": "leak = np.test",
    "ndarray.tofile": "leak = np.zeros(3).tofile",
    "ndarray.dump": "leak = np.zeros(3).dump",
    "ndarray.dumps": "leak = np.zeros(3).dumps()",
    "ndarray.ctypes": "leak = np.zeros(3).ctypes",
    "ndarray.data (memoryview)": "leak = np.zeros(3).data",
    "ndarray.resize(refcheck=False)": "a = np.zeros(3)\nleak = a.resize((100000,), refcheck=False)",
    "ndarray.tofile via getattr": "leak = getattr(np.zeros(3), 'to' + 'file')",
    # raw memory: constructors over buffers, object pointers through integer views
    "np.frombuffer(object array)": "o = np.array([1, 'x'], dtype=object)\nleak = np.frombuffer(o, dtype=np.int64)",
    "np.ndarray(buffer=object array)": (
        "o = np.array([1, 'x'], dtype=object)\nleak = np.ndarray((2,), dtype=np.int64, buffer=o)"
    ),
    "np.ndarray(dtype=object, buffer=bytes)": "leak = np.ndarray((1,), object, bytes(8))",
    "np.ndarray(offset=-4096)": "leak = np.ndarray((8,), np.uint8, bytes(8), -4096)",
    "np.ndarray(strides=)": "leak = np.ndarray((8,), np.uint8, strides=(1000,))",
    "type(array)(buffer=)": "leak = type(np.zeros(1))((1,), object, bytes(8))",
    "np.void(bytes, object dtype)": "leak = np.void(bytes(8), dtype=[('a', 'O')])",
    "dtype.type -> np.void": "leak = np.dtype([('a', 'O')]).type",
    "type(structured row) -> np.void": "leak = type(np.zeros(2, dtype=[('a', 'f8')])[0])",
    "np.recarray": "leak = np.recarray",
    "np.matrix": "leak = np.matrix",
    "np.from_dlpack": "leak = np.from_dlpack",
    "arr.flags.writeable = True": "a = np.broadcast_to(np.zeros(1), (4,))\na.flags.writeable = True\nleak = a",
    "arr.shape = ...": "a = np.zeros(4)\na.shape = (2, 2)\nleak = a",
    "arr.strides = ...": "a = np.zeros(4)\na.strides = (1000,)\nleak = a",
    "arr.dtype = object": "a = np.zeros(4)\na.dtype = object\nleak = a",
    # evaluators
    "pd.eval": "leak = pd.eval('1 + 1')",
    "DataFrame.eval": "leak = df.eval('close + 1')",
    "DataFrame.query": "leak = df.query('close > 0')",
    "DataFrame.eval via getattr": "leak = getattr(df, 'ev' + 'al')('close + 1')",
    "import operator (attrgetter)": "import operator\nleak = operator.attrgetter('__class__')(1)",
    "from operator import methodcaller": "from operator import methodcaller\nleak = methodcaller('__reduce_ex__', 4)(1)",
    # pandas resolving function *names* on our behalf
    "df.apply('to_pickle')": "leak = df.apply('to_pickle', args=('/tmp/x',))",
    "df.agg('to_csv')": "leak = df.agg('to_csv', '/tmp/x.csv')",
    "df.agg('eval')": "leak = df.agg('eval', expr='close + 1')",
    "df.transform('__class__')": "leak = df.transform('__class__')",
    "Series.agg('save') (numpy fallback)": "leak = df['close'].agg('save', '/tmp/x')",
    "Series.apply('test') (numpy fallback)": "leak = df['close'].apply('test')",
    "df.agg({'close': 'to_pickle'})": "leak = df.agg({'close': 'to_pickle'})",
    "df.agg(['mean', 'query'])": "leak = df.agg(['mean', 'query'])",
    "groupby.agg('to_json')": "leak = df.groupby(df['close'] > 100).agg('to_json')",
    "df.agg('to_json', path)": "leak = df.agg('to_json', '/tmp/x.json')",
    "df.apply('to_string', buf)": "leak = df.apply('to_string', args=('/tmp/x.txt',))",
    "groupby named agg ('_x')": "leak = df.groupby(df['close'] > 100).agg(x=('close', '__reduce__'))",
    "rolling.agg('to_pickle')": "leak = df['close'].rolling(3).agg('to_pickle')",
    "pd.DataFrame.apply(df, 'to_pickle')": "leak = pd.DataFrame.apply(df, 'to_pickle')",
    "df.pipe('to_csv')": "leak = df.pipe('to_csv')",
    "to_string(float_format='{...}')": "leak = df.to_string(float_format='{0.__class__}')",
    # pickle paths
    "__reduce__": "leak = np.zeros(2).__reduce__()",
    "getattr __reduce_ex__": "leak = getattr(df, '__reduce_ex__')(2)",
    "getattr __getstate__": "leak = getattr(df, '__getstate__')()",
    "getattr __setstate__": "leak = getattr(np.zeros(1), '__setstate__')",
    "import pickle": "import pickle\nleak = pickle",
    "import copyreg": "import copyreg\nleak = copyreg",
    # global state
    "pd.set_option": "pd.set_option('display.max_rows', 1)\nleak = 1",
    "pd.options": "leak = pd.options",
    "pd.option_context": "leak = pd.option_context",
    "pd.get_option": "leak = pd.get_option",
    "pd.reset_option": "leak = pd.reset_option",
    "pd.set_eng_float_format": "leak = pd.set_eng_float_format",
    "pd.show_versions": "leak = pd.show_versions",
    "np.seterr": "np.seterr(all='ignore')\nleak = 1",
    "np.seterrcall": "leak = np.seterrcall",
    "np.set_printoptions": "leak = np.set_printoptions",
    "np.printoptions": "leak = np.printoptions",
    "np.setbufsize": "leak = np.setbufsize",
    "import sys (setrecursionlimit)": "import sys\nsys.setrecursionlimit(10)\nleak = sys",
    # formatting that walks attributes
    "str.format {0.__class__}": "leak = '{0.__class__}'.format(1)",
    "str.format mro walk": "leak = '{0.__class__.__mro__}'.format(1)",
    "str.format function globals": "def f():\n    pass\nleak = '{0.__globals__}'.format(f)",
    "str.format keyword field": "leak = '{a.__class__}'.format(a=df)",
    "str.format index then attr": "leak = '{0[0].__class__}'.format([1])",
    "str.format nested spec": "leak = '{0:{1.__class__}}'.format(1, 2)",
    "str.format_map": "leak = '{x.__class__}'.format_map({'x': 1})",
    "str.format via class": "leak = str.format('{0.__class__}', 1)",
    "str.format via getattr": "leak = getattr('{0.__class__}', 'format')(1)",
    "np.str_ format": "leak = np.str_('{0.__class__}').format(1)",
    "f-string attribute": "x = 1\nleak = f'{x.__class__}'",
    "import string (Formatter)": "import string\nleak = string.Formatter",
    # monkeypatching proxies and classes
    "np.mean = ...": "np.mean = len\nleak = 1",
    "np.random.seed = ...": "np.random.seed = len\nleak = 1",
    "math.pi = 3": "math.pi = 3\nleak = 1",
    "statistics.mean = ...": "statistics.mean = len\nleak = 1",
    "pd.DataFrame.x = ...": "pd.DataFrame.x = 1\nleak = 1",
    "pd.DataFrame.mean = ...": "pd.DataFrame.mean = len\nleak = 1",
    "datetime.datetime.now = ...": "datetime.datetime.now = len\nleak = 1",
    "talib.SMA = ...": "talib.SMA = len\nleak = 1",
    "setattr(np, 'mean')": "setattr(np, 'mean', len)\nleak = 1",
    "setattr(pd.DataFrame, 'x')": "setattr(pd.DataFrame, 'x', 1)\nleak = 1",
    "setattr(df, '_mgr')": "setattr(df, '_mgr', None)\nleak = 1",
    "setattr(df, 'to_csv')": "setattr(df, 'to_csv', len)\nleak = 1",
    "del np.mean": "del np.mean\nleak = 1",
    "delattr(math, 'pi')": "delattr(math, 'pi')\nleak = 1",
    "del pd.DataFrame.mean": "del pd.DataFrame.mean\nleak = 1",
    "np.mean += ...": "np.e += 1\nleak = 1",
    "proxy item write": "np['mean'] = len\nleak = 1",
    "class item write": "int[0] = 1\nleak = 1",
    "proxy internals via getattr": "leak = getattr(np, '_ModuleProxy__surface')",
    "proxy __dict__": "leak = np.__dict__",
    "proxy __name__ via getattr": "leak = getattr(np, '__name__')",
    "type(proxy)": "leak = type(np)",
    "vars(np)": "leak = vars(np)",
    # --- 2. attribute guard ---------------------------------------------------------------------
    "getattr(x, '__class__')": "leak = getattr(1, '__class__')",
    "getattr(x, '__class__') in a function": "def f(x):\n    return getattr(x, '__cl' + 'ass__')\nleak = f(1)",
    "hasattr(x, '__class__')": "leak = hasattr(1, '__class__')",
    "getattr(df, '_mgr')": "leak = getattr(df, '_mgr')",
    "getattr default does not hide": "leak = getattr(1, '__class__', None)",
    "df.style": "leak = df.style",
    "df.plot": "leak = df.plot",
    "df.hist": "leak = df.hist",
    "Series.plot": "leak = df['close'].plot",
    "pd.DataFrame.plot (class)": "leak = pd.DataFrame.plot",
    "mro()": "leak = int.mro()",
    "getattr(cls, 'mro')": "leak = getattr(int, 'mro')()",
    "type(x) 3-arg": "leak = type('X', (), {'__getattr__': len})",
    "type(type)": "leak = type(int)",
    "type(type)(...)": "leak = type(type(1))('X', (), {})",
    "type of a function": "def f():\n    pass\nleak = type(f)",
    "type of an api function": "leak = type(signal)",
    "type of dtype class (metaclass)": "leak = type(type(np.dtype('f8')))",
    "type(ndarray stand-in)": "leak = type(np.ndarray)",
    "type(generator).gi_frame": "g = (x for x in [1])\nleak = getattr(g, 'gi_frame')",
    "super()": "leak = super()",
    "object.__subclasses__()": "leak = object.__subclasses__()",
    "memoryview": "leak = memoryview(b'abc')",
    "id() (addresses)": "leak = id(1)",
    "class deriving from type": "class M(type):\n    pass\nleak = M",
    "class deriving from ndarray": "class A(np.ndarray):\n    pass\nleak = A",
    "class deriving from DataFrame": "class A(pd.DataFrame):\n    pass\nleak = A",
    "class deriving from dict": "class A(dict):\n    pass\nleak = A",
    "class metaclass keyword": "class A(metaclass=type):\n    pass\nleak = A",
    "class body private name": "class A:\n    __array_interface__ = {}\nleak = A",
    "class body locals()": "class A:\n    locals()['__array_interface__'] = {}\nleak = A",
    "_apply_ private keyword": "leak = dict(**{'_x': 1})",
    "private keyword literal": "leak = dict(_x=1)",
    "print(file=...)": "class W:\n    def write(self, s):\n        pass\nprint('x', file=W())\nleak = 1",
    # --- 3. imports in every spelling ------------------------------------------------------------
    "import os": "import os\nleak = os",
    "import os.path": "import os.path\nleak = os",
    "from os import path": "from os import path\nleak = path",
    "__import__('os')": "leak = __import__('os')",
    "import importlib": "import importlib\nleak = importlib.import_module('os')",
    "import builtins": "import builtins\nleak = builtins",
    "__builtins__['__import__']": "leak = __builtins__['__import__']('os')",
    "getattr(np, 'os')": "leak = getattr(np, 'os')",
    "getattr(pd, 'io')": "leak = getattr(pd, 'io')",
    "np.__dict__": "leak = np.__dict__['lib']",
    "globals()": "leak = globals()",
    "locals()": "leak = locals()",
    "vars()": "leak = vars()",
    "import numpy.ctypeslib": "import numpy.ctypeslib\nleak = numpy.ctypeslib",
    "from numpy import ctypeslib": "from numpy import ctypeslib\nleak = ctypeslib",
    "from numpy import load": "from numpy import load\nleak = load",
    "from numpy.lib import format": "from numpy.lib import format\nleak = format",
    "from pandas.io import common": "from pandas.io import common\nleak = common",
    "import pandas.io.common": "import pandas.io.common\nleak = pandas",
    "import numpy.lib.format as f": "import numpy.lib.format as f\nleak = f",
    "import numpy.random.mtrand": "import numpy.random.mtrand as m\nleak = m",
    "from pandas import read_csv": "from pandas import read_csv\nleak = read_csv",
    "from statistics import sys": "from statistics import sys\nleak = sys",
    "from . import x": "from . import x\nleak = x",
    "from .. import x": "from .. import x\nleak = x",
    "from .strategy import signal": "from .strategy import signal\nleak = signal",
    "import *": "from numpy import *\nleak = 1",
    "import subprocess": "import subprocess\nleak = subprocess",
    "import socket": "import socket\nleak = socket",
    "import ctypes": "import ctypes\nleak = ctypes",
    "import talib._ta_lib": "import talib._ta_lib\nleak = talib",
    "import gc (get_objects)": "import gc\nleak = gc.get_objects()",
    "import inspect": "import inspect\nleak = inspect.currentframe()",
    "import types": "import types\nleak = types.FunctionType",
    "import threading": "import threading\nleak = threading",
    "import signal (stdlib, not the API)": "import signal\nleak = signal.SIGKILL",
    "from strategy import __builtins__": "from strategy import __builtins__\nleak = __builtins__",
    "strategy module private via getattr": "import strategy\nleak = getattr(strategy, '__dict__')",
    "np.bmat (reads caller frame)": "leak = np.bmat('df')",
    "np.asmatrix": "leak = np.asmatrix",
    "property fset on a library class": "idx = pd.Index([1])\nleak = type(idx).name.fset",
    "property fdel on a library class": "leak = pd.Index.name.fdel",
    "import in a function": "def f():\n    import os\n    return os\nleak = f()",
    "exec()": "exec('import os')\nleak = 1",
    "eval()": "leak = eval('1')",
    "compile()": "leak = compile('1', 'x', 'eval')",
    "open()": "leak = open('/etc/passwd')",
    "breakpoint()": "breakpoint()\nleak = 1",
    "input()": "leak = input()",
    "help()": "leak = help()",
    "exit()": "exit()\nleak = 1",
    "quit()": "quit()\nleak = 1",
    # --- 4. dunder walks ------------------------------------------------------------------------
    "().__class__.__bases__[0].__subclasses__()": "leak = ().__class__.__bases__[0].__subclasses__()",
    "f.__globals__": "def f():\n    pass\nleak = f.__globals__",
    "f.__code__": "def f():\n    pass\nleak = f.__code__",
    "getattr(f, '__globals__')": "def f():\n    pass\nleak = getattr(f, '__globals__')",
    "getattr(f, '__code__')": "def f():\n    pass\nleak = getattr(f, '__code__')",
    "getattr(f, '__closure__')": "def f():\n    pass\nleak = getattr(f, '__closure__')",
    "lambda __globals__": "leak = getattr(lambda: 0, '__glob' + 'als__')",
    "generator gi_frame.f_back": "leak = (x for x in []).gi_frame.f_back",
    "generator gi_code": "leak = (x for x in []).gi_code",
    "generator gi_frame via getattr": "leak = getattr((x for x in []), 'gi_' + 'frame')",
    "generator function frame": "def g():\n    yield 1\nleak = getattr(g(), 'gi_frame')",
    "generator gi_yieldfrom": "def g():\n    yield from [1]\nleak = getattr(g(), 'gi_yieldfrom')",
    "coroutine cr_frame": "async def c():\n    pass\nleak = c().cr_frame",
    "signal.__globals__": "leak = signal.__globals__",
    "getattr(signal, '__globals__')": "leak = getattr(signal, '__globals__')",
    "getattr(signal, '__closure__')": "leak = getattr(signal, '__closure__')",
    "getattr(signal, '__self__')": "leak = getattr(signal, '__self__')",
    "getattr(log, '__wrapped__')": "leak = getattr(log, '__wrapped__')",
    "traceback tb_frame": "try:\n    1 / 0\nexcept Exception as e:\n    leak = e.__traceback__.tb_frame",
    "traceback via getattr": "try:\n    1 / 0\nexcept Exception as e:\n    leak = getattr(e, '__traceback__')",
    "exception __context__": "try:\n    1 / 0\nexcept Exception as e:\n    leak = getattr(e, '__context__')",
    "try/except* (ExceptionGroup)": "try:\n    pass\nexcept* Exception:\n    pass\nleak = 1",
    "type(x).__mro__": "leak = type(1).__mro__",
    "getattr(type(x), '__mro__')": "leak = getattr(type(1), '__mro__')",
    "getattr(type(x), '__subclasses__')": "leak = getattr(object, '__subclasses__')",
    "getattr(cls, '__dict__')": "leak = getattr(pd.DataFrame, '__dict__')",
    "match class pattern": "match 1:\n    case int(__class__=r):\n        leak = r",
    "nonlocal": "def f():\n    _x = 1\n    def g():\n        nonlocal _x\n    return g\nleak = f()",
    "name starting with _": "_x = 1\nleak = _x",
    "function named _x": "def _x():\n    pass\nleak = _x",
    "argument named _x": "def f(_x):\n    pass\nleak = f",
    "printed / print rebinding": "print = len\nleak = print",
    # swallowing the violation does not make it go away
    "caught getattr violation": "try:\n    leak = getattr(1, '__class__')\nexcept Exception:\n    pass",
    "caught import violation": "try:\n    leak = getattr(pd, 'io')\nexcept BaseException:\n    pass",
}


@pytest.fixture
def api() -> dict:
    return make_api(Recorder(), bars(50))


@pytest.mark.parametrize("source", list(ATTACKS.values()), ids=list(ATTACKS))
def test_attack_is_refused_before_reaching_anything(source: str, api: dict) -> None:
    namespace: dict = {}
    with pytest.raises(ExecutionError) as info:
        compiled = compile_strategy(source)
        namespace = build_globals(api, [].append)
        exec(compiled.code, namespace)
        caught = guards.first_violation()
        if caught is not None:
            raise caught
    assert info.value.code == ErrorCode.SECURITY_VIOLATION, info.value.message
    assert isinstance(info.value.line, int) and info.value.line >= 1
    assert "leak" not in namespace


def test_attack_count_covers_the_issue() -> None:
    assert len(ATTACKS) >= 250


def test_api_partial_and_bound_method_handles_are_opaque() -> None:
    import functools

    recorder = Recorder()
    api = make_api(recorder, bars(20))
    api["signal"] = functools.partial(recorder.signal)
    for source in ("leak = signal.func", "leak = signal.args", "leak = log.im_self", "leak = indicator.keywords"):
        namespace: dict = {}
        with pytest.raises((AttributeError, ExecutionError)):
            namespace = build_globals(api, [].append)
            exec(compile_strategy(source).code, namespace)
        assert "leak" not in namespace


def test_attack_leaves_libraries_unmodified(api: dict) -> None:
    before = (np.mean, math.pi, statistics.mean, pd.DataFrame.mean, talib.SMA)
    for name in ("np.mean = ...", "math.pi = 3", "statistics.mean = ...", "pd.DataFrame.mean = ...", "talib.SMA = ..."):
        with pytest.raises(ExecutionError):
            execute(ATTACKS[name], api)
    assert (np.mean, math.pi, statistics.mean, pd.DataFrame.mean, talib.SMA) == before
    assert not hasattr(pd.DataFrame, "x")


# ---------------------------------------------------------------------------------------------
# Honest strategies
# ---------------------------------------------------------------------------------------------

RSI_FUNCTION = '''
import numpy as np
import pandas as pd

def strategy(data):
    period = params.get("period", 14)
    delta = data["close"].diff()
    gain = delta.where(delta > 0, 0.0)
    loss = -delta.where(delta < 0, 0.0)
    avg_gain = gain.ewm(alpha=1 / period, adjust=False).mean()
    avg_loss = loss.ewm(alpha=1 / period, adjust=False).mean()
    rsi = 100 - 100 / (1 + avg_gain / avg_loss)
    data["rsi"] = rsi
    last = rsi.iloc[-1]
    if last < 30:
        return "BUY"
    if last > 70:
        return "SELL"
    return "HOLD"
'''


def reference_rsi(close: pd.Series, period: int = 14) -> pd.Series:
    delta = close.diff()
    gain = delta.where(delta > 0, 0.0).ewm(alpha=1 / period, adjust=False).mean()
    loss = (-delta.where(delta < 0, 0.0)).ewm(alpha=1 / period, adjust=False).mean()
    return 100 - 100 / (1 + gain / loss)


def test_rsi_function_strategy_returns_the_signal_for_the_last_bar() -> None:
    data = bars()
    namespace = execute(RSI_FUNCTION, make_api(Recorder(), data, {"period": 14}))
    result = namespace["strategy"](data)
    expected_rsi = reference_rsi(bars()["close"])
    pd.testing.assert_series_equal(data["rsi"], expected_rsi, check_names=False)
    last = expected_rsi.iloc[-1]
    assert result == ("BUY" if last < 30 else "SELL" if last > 70 else "HOLD")


SMA_CROSSOVER_VECTOR = '''
def strategy(data):
    fast = data["close"].rolling(params["fast"]).mean()
    slow = data["close"].rolling(params["slow"]).mean()
    above = fast > slow
    cross_up = above & ~above.shift(1, fill_value=False)
    cross_down = ~above & above.shift(1, fill_value=False)
    signals = pd.Series("HOLD", index=data.index)
    signals[cross_up] = "BUY"
    signals.loc[cross_down] = "SELL"
    return signals
'''


def test_sma_crossover_vectorised_strategy_returns_a_signal_per_bar() -> None:
    data = bars()
    namespace = execute(SMA_CROSSOVER_VECTOR, make_api(Recorder(), data, {"fast": 5, "slow": 20}))
    signals = namespace["strategy"](data)
    fast = data["close"].rolling(5).mean()
    slow = data["close"].rolling(20).mean()
    above = fast > slow
    expected = pd.Series("HOLD", index=data.index)
    expected[above & ~above.shift(1, fill_value=False)] = "BUY"
    expected[~above & above.shift(1, fill_value=False)] = "SELL"
    pd.testing.assert_series_equal(signals, expected)
    assert {"BUY", "SELL"} <= set(signals)


BOLLINGER_SCRIPT = '''
from strategy import signal, indicator, log

close = df["close"]
mid = close.rolling(20).mean()
std = close.rolling(20).std()
upper = mid + 2 * std
lower = mid - 2 * std
df["upper"] = upper
df["lower"] = lower
indicator("bb_upper", upper)
indicator("bb_lower", lower)
touches = 0
for i in range(20, len(close)):
    price = close.iloc[i]
    if price < lower.iloc[i]:
        signal("buy", f"close {price:.2f} under lower band")
        touches += 1
    elif price > upper.iloc[i]:
        signal("sell", "close {:.2f} over upper band".format(price))
        touches += 1
log("touches", touches)
print("done", touches)
'''


def test_bollinger_script_strategy_calls_signal_indicator_log_and_print() -> None:
    data = bars()
    recorder = Recorder()
    prints: list[str] = []
    execute(BOLLINGER_SCRIPT, make_api(recorder, data), prints)
    close = bars()["close"]
    mid = close.rolling(20).mean()
    std = close.rolling(20).std()
    upper, lower = mid + 2 * std, mid - 2 * std
    expected = []
    for i in range(20, len(close)):
        if close.iloc[i] < lower.iloc[i]:
            expected.append(("buy", f"close {close.iloc[i]:.2f} under lower band"))
        elif close.iloc[i] > upper.iloc[i]:
            expected.append(("sell", f"close {close.iloc[i]:.2f} over upper band"))
    assert expected and recorder.signals == expected
    pd.testing.assert_series_equal(recorder.indicators["bb_upper"], upper)
    assert recorder.logs == [f"touches {len(expected)}"]
    assert prints == [f"done {len(expected)}"]
    assert list(data.columns)[-2:] == ["upper", "lower"]


MACD_TALIB = '''
import talib
import numpy as np

def strategy(data):
    close = data["close"].to_numpy()
    macd, macd_signal, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    indicator("macd", macd)
    upper, middle, lower = talib.BBANDS(data["close"].values, timeperiod=20)
    sma = talib.SMA(close, timeperiod=10)
    ema = talib.EMA(close, timeperiod=10)
    rsi = talib.RSI(close, timeperiod=14)
    out = np.where(hist > 0, "BUY", np.where(hist < 0, "SELL", "HOLD"))
    return out.tolist(), float(np.nanmean(sma)), float(np.nanmean(ema)), float(rsi[-1]), float(upper[-1])
'''


def test_macd_talib_strategy_matches_talib_outside_the_sandbox() -> None:
    data = bars()
    recorder = Recorder()
    namespace = execute(MACD_TALIB, make_api(recorder, data))
    signals, sma_mean, ema_mean, rsi_last, upper_last = namespace["strategy"](data)
    close = data["close"].to_numpy()
    _, _, hist = talib.MACD(close, fastperiod=12, slowperiod=26, signalperiod=9)
    expected = np.where(hist > 0, "BUY", np.where(hist < 0, "SELL", "HOLD")).tolist()
    assert signals == expected
    np.testing.assert_array_equal(recorder.indicators["macd"], talib.MACD(close)[0])
    assert sma_mean == float(np.nanmean(talib.SMA(close, timeperiod=10)))
    assert ema_mean == float(np.nanmean(talib.EMA(close, timeperiod=10)))
    assert rsi_last == float(talib.RSI(close, timeperiod=14)[-1])
    assert upper_last == float(talib.BBANDS(close, timeperiod=20)[0][-1])


EVERYDAY_PYTHON = '''
import math
import statistics
import datetime
import numpy as np
import numpy.linalg as la
from numpy.linalg import norm
from pandas.api.types import is_numeric_dtype
from pandas.tseries.offsets import BDay


class Position:
    """A tiny class with state."""

    def __init__(self, size):
        self.size = size
        self.history = []

    def add(self, qty):
        self.size += qty
        self.history.append(qty)
        return self


def scale(k):
    return lambda x: x * k


def strategy(data):
    close = data["close"]
    out = {}
    out["pct"] = close.pct_change().dropna().round(6).tolist()[:3]
    out["shift"] = float(close.shift(1).iloc[-1])
    out["diff"] = float(close.diff().iloc[-1])
    out["masked_mean"] = float(close[close > close.median()].mean())
    out["iloc_loc"] = (float(data.iloc[0]["close"]), float(data.loc[data.index[1], "close"]))
    weekly = close.resample("W").last()
    out["weeks"] = len(weekly)
    grouped = data.assign(up=data["close"].diff() > 0).groupby("up")["volume"].agg(["mean", "count"])
    out["groups"] = int(grouped["count"].sum())
    left = data[["close"]].reset_index()
    right = data[["volume"]].reset_index()
    out["merged"] = pd.merge(left, right, on="timestamp").shape
    out["concat"] = pd.concat([close, close]).shape[0]
    data.loc[data["close"] > close.mean(), "flag"] = 1
    data["flag"] = data["flag"].fillna(0)
    arr = close.to_numpy()
    out["np"] = (
        float(np.mean(arr)), float(np.std(arr)), float(np.cumsum(arr)[-1]), float(np.log(arr).sum()),
        float(np.diff(arr)[0]), bool(np.isnan(np.nan)), np.arange(3).tolist(), np.zeros(2).tolist(),
        float(la.norm(np.array([3.0, 4.0]))), float(norm(np.ones(4))),
        np.where(arr > arr.mean(), 1, 0).sum(),
    )
    out["stand_in"] = (isinstance(arr, np.ndarray), type(arr) is np.ndarray, np.ndarray((2,)).shape)
    rng = np.random.default_rng(42)
    out["rng"] = float(rng.normal())
    out["math"] = (math.sqrt(16), math.floor(2.7), round(math.pi, 3), math.isnan(float("nan")))
    out["stats"] = (statistics.mean([1, 2, 3]), round(statistics.stdev([1, 2, 3, 4]), 6))
    start = datetime.datetime(2024, 1, 1) + datetime.timedelta(days=2)
    out["dt"] = (start.isoformat(), (pd.Timestamp("2024-01-05") + BDay(1)).day)
    out["types"] = is_numeric_dtype(close)
    pos = Position(1).add(2).add(3)
    pos.size += 10
    counts = {}
    for word in ["a", "b", "a"]:
        counts[word] = counts.get(word, 0) + 1
    counts["a"] += 100
    out["class"] = (pos.size, pos.history, counts)
    squares = [x * x for x in range(5) if x % 2 == 0]
    table = {k: v for k, v in zip("abc", range(3))}
    first, *rest = sorted({3, 1, 2})
    out["comprehensions"] = (squares, table, first, rest, sum(x for x in range(4)))
    out["closure"] = scale(3)(2)
    try:
        1 / 0
    except ZeroDivisionError as exc:
        out["error"] = (type(exc) is ZeroDivisionError, str(exc))
    level: float = 0.5
    out["fmt"] = (f"{level:.1%}", "{:>5}|{name}".format(1, name="x"), "%.2f" % 1.234, "{0[k]}".format({"k": 7}))
    out["text"] = df.tail(2)[["close"]].round(2).to_string().splitlines()[0]
    out["json"] = close.head(2).round(1).to_json(date_format="iso")[:1]
    out["dir"] = "rolling" in dir(close) and not any(n.startswith("_") for n in dir(close))
    out["getattr"] = (getattr(close, "mean")() == close.mean(), hasattr(close, "nope"), getattr(close, "nope", 5))
    out["builtins"] = (min([3, 1]), max(1, 4), next(iter([9])), abs(-2), divmod(7, 2), pow(2, 5))
    return out
'''


def test_everyday_python_pandas_and_numpy_run_unchanged() -> None:
    data = bars(60)
    namespace = execute(EVERYDAY_PYTHON, make_api(Recorder(), data))
    out = namespace["strategy"](data)
    close = bars(60)["close"]
    assert out["pct"] == close.pct_change().dropna().round(6).tolist()[:3]
    assert out["shift"] == close.iloc[-2]
    assert out["masked_mean"] == close[close > close.median()].mean()
    assert out["weeks"] == len(close.resample("W").last())
    assert out["groups"] == 60
    assert out["merged"] == (60, 3)
    assert out["concat"] == 120
    assert data["flag"].sum() == (close > close.mean()).sum()
    assert out["np"][6:9] == ([0, 1, 2], [0.0, 0.0], 5.0)
    assert out["stand_in"] == (True, True, (2,))
    assert out["rng"] == float(np.random.default_rng(42).normal())
    assert out["math"] == (4.0, 2, 3.142, True)
    assert out["stats"] == (2, round(statistics.stdev([1, 2, 3, 4]), 6))
    assert out["dt"] == ("2024-01-03T00:00:00", 8)
    assert out["types"] is True
    assert out["class"] == (16, [2, 3], {"a": 102, "b": 1})
    assert out["comprehensions"] == ([0, 4, 16], {"a": 0, "b": 1, "c": 2}, 1, [2, 3], 6)
    assert out["closure"] == 6
    assert out["error"] == (True, "division by zero")
    assert out["fmt"] == ("50.0%", "    1|x", "1.23", "7")
    assert out["text"].split() == ["close"]
    assert out["json"] == "{"
    assert out["dir"] is True
    assert out["getattr"] == (True, False, 5)
    assert out["builtins"] == (1, 4, 9, 2, (3, 1), 32)


LOOPS_WRITES_AND_ERRORS = '''
out = []
for i, row in df.iterrows():
    out.append(row["close"])
for t in df.itertuples():
    out.append(t.close)
columns = [col for col in df]
pairs = [(k, v) for k, v in {"a": 1}.items()]
with np.errstate(divide="ignore", invalid="ignore"):
    logs = np.log(np.array([0.0, 1.0]))
df.loc[:, "x"] = 1.0
df.iloc[0, 0] = 9.0
s = df["close"].copy()
s.iloc[1] = 7.0
a = np.arange(5)
a[a > 2] = 0
del df["x"]
count = 0
def bump():
    global count
    count += 1
bump()
bump()
class StrategyError(ValueError):
    pass
try:
    raise StrategyError("boom")
except StrategyError as exc:
    message = str(exc)
finally:
    cleaned = True
peak = max(df["close"])
joined = [*out[:2], *[1, 2]]
total = sum(x * 2 for x in range(3))
def gen():
    yield 1
    yield 2
generated = list(gen())
df.index.name = "when"
ranked = sorted({"b": 2, "a": 1}.items(), key=lambda kv: kv[1])
'''


def test_loops_writes_globals_generators_and_exceptions_work() -> None:
    data = pd.DataFrame({"close": [1.0, 2.0, 3.0], "volume": [1.0, 1.0, 1.0]})
    namespace = execute(LOOPS_WRITES_AND_ERRORS, {"df": data})
    assert namespace["out"] == [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
    assert namespace["columns"] == ["close", "volume"] and namespace["pairs"] == [("a", 1)]
    assert namespace["logs"][0] == -np.inf
    assert data["close"].tolist() == [9.0, 2.0, 3.0] and list(data.columns) == ["close", "volume"]
    assert namespace["s"].tolist() == [9.0, 7.0, 3.0]
    assert namespace["a"].tolist() == [0, 1, 2, 0, 0]
    assert namespace["count"] == 2
    assert (namespace["message"], namespace["cleaned"]) == ("boom", True)
    assert namespace["peak"] == 9.0
    assert namespace["joined"] == [1.0, 2.0, 1, 2]
    assert (namespace["total"], namespace["generated"]) == (6, [1, 2])
    assert data.index.name == "when"
    assert namespace["ranked"] == [("a", 1), ("b", 2)]


CLASSIFY = '''
def classify_symbol(symbol):
    bars = get_price_data(symbol, "1d", 30)
    change = bars["close"].iloc[-1] / bars["close"].iloc[0] - 1
    return bool(change > 0)
'''


def test_classify_style_uses_the_price_accessor() -> None:
    data = bars(30)
    api = {"get_price_data": lambda symbol, timeframe, days: data.tail(days)}
    compiled = compile_strategy(CLASSIFY)
    assert compiled.style == "classify"
    namespace = execute(CLASSIFY, api)
    assert namespace["classify_symbol"]("AAPL") == bool(data["close"].iloc[-1] / data["close"].iloc[0] - 1 > 0)
