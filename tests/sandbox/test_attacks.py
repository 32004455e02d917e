"""Attacks sent as strategies through NATS (`strategy.v1.execute`) to the real node and sandbox.

Each attack must achieve nothing: the reply is a clear error with the right code (or, where an
attack is legal code, a harmless result), no secret reaches the reply, no file is read or
written, nothing connects anywhere, the node and its zygote stay alive, and the next request is
served normally. The in-process policy tests (tests/sandbox/test_policy_attacks.py) check the
language layer alone; these go end to end, where the process layer stands behind it.

Traps set up by this module, outside the pytest tmp tree so that only the sandbox (not the
tmp tree's 0700 permissions) stands between a strategy and them:
  * a canary text/CSV file, a .npy file and pickles (whose unpickling would create a marker
    file), all world-readable, each holding a random secret;
  * a world-writable output directory that must stay empty;
  * a TCP listener on 127.0.0.1 that counts every accepted connection (must stay 0).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import math
import os
import pickle
import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
import talib

from contracts import subjects
from tests.support import columnar_bars

SV = "SECURITY_VIOLATION"
RT = "RUNTIME_ERROR"
TO = "TIMEOUT"
ML = "MEMORY_LIMIT"
OL = "OUTPUT_LIMIT"
CE = "COMPILE_ERROR"
IR = "INVALID_REQUEST"

SECRET = "canary-" + secrets.token_hex(16)


# ---------------------------------------------------------------------------------------------
# Traps
# ---------------------------------------------------------------------------------------------


class _Boom:
    """Unpickling this creates (truncates) the marker file: proof that a pickle was loaded."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@dataclass
class Traps:
    root: str
    canary: str
    canary_csv: str
    canary_npy: str
    pickle: str
    pickle_npy: str
    marker: str
    out_dir: str
    payload_hex: str

    def params(self, out_name: str) -> dict[str, Any]:
        return {
            "canary": self.canary, "canary_csv": self.canary_csv, "canary_npy": self.canary_npy,
            "pickle": self.pickle, "pickle_npy": self.pickle_npy, "payload_hex": self.payload_hex,
            "out": os.path.join(self.out_dir, out_name), "out_dir": self.out_dir,
        }


@pytest.fixture(scope="module")
def traps() -> Traps:
    root = tempfile.mkdtemp(prefix="sandbox-attacks-", dir="/tmp")
    os.chmod(root, 0o755)
    canary = os.path.join(root, "canary.txt")
    with open(canary, "w") as fh:
        fh.write(SECRET + "\n")
    canary_csv = os.path.join(root, "canary.csv")
    with open(canary_csv, "w") as fh:
        fh.write(f"secret\n{SECRET}\n")
    canary_npy = os.path.join(root, "canary.npy")
    np.save(canary_npy, np.array([SECRET]))  # a unicode array: loads without pickle
    marker = os.path.join(root, "unpickled.marker")
    pickled = os.path.join(root, "boom.pkl")
    with open(pickled, "wb") as fh:
        pickle.dump(_Boom(marker), fh)
    pickle_npy = os.path.join(root, "boom.npy")
    np.save(pickle_npy, np.array([_Boom(marker)], dtype=object), allow_pickle=True)
    for path in (canary, canary_csv, canary_npy, pickled, pickle_npy):
        os.chmod(path, 0o644)
    out_dir = os.path.join(root, "out")
    os.mkdir(out_dir)
    os.chmod(out_dir, 0o777)  # writable by anyone: only the sandbox may stop a write
    yield Traps(root=root, canary=canary, canary_csv=canary_csv, canary_npy=canary_npy,
                pickle=pickled, pickle_npy=pickle_npy, marker=marker, out_dir=out_dir,
                payload_hex=pickle.dumps(_Boom(marker)).hex())
    shutil.rmtree(root, ignore_errors=True)


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/csv\r\n\r\nsecret\nleaked\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    async def start(self) -> "Listener":
        self.server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture(scope="module")
async def listener():
    server = await Listener().start()
    yield server
    await server.close()


@pytest.fixture(scope="module")
def zygote_pid(node) -> int:
    """The zygote at the start of this module: attacks must neither kill nor replace it."""
    assert node.pool.zygote_pid is not None
    return node.pool.zygote_pid


# ---------------------------------------------------------------------------------------------
# Request helpers and the checks every attack goes through
# ---------------------------------------------------------------------------------------------

BARS = columnar_bars(60)


async def send(nc, code: str, *, timeout: float = 15.0, **fields: Any) -> tuple[dict, str, float]:
    """Execute `code` through NATS; returns the decoded reply, its raw text and the elapsed s."""
    payload = {"code": code, "language": "python", "bars": BARS, **fields}
    started = time.perf_counter()
    msg = await nc.request(subjects.EXECUTE, json.dumps(payload).encode(), timeout=timeout)
    elapsed = time.perf_counter() - started
    text = msg.data.decode()
    return json.loads(text), text, elapsed


def env_values(exclude: str) -> set[str]:
    """Values of the test process's environment worth looking for (longer than 8 characters),
    except those that the request itself contains (e.g. a tmp dir prefix of a trap path)."""
    return {v for v in os.environ.values() if len(v) > 8 and v not in exclude}


HOST_MARKERS = ("/work/", "site-packages", "Traceback", 'File "', "/usr/lib/python")


def assert_reply_leaks_nothing(text: str, request: str) -> None:
    assert SECRET not in text, "the canary secret reached the reply"
    assert "leaked" not in text, "data from the trap listener reached the reply"
    for value in env_values(request):
        assert value not in text, f"an environment value of the host reached the reply: {value[:20]}..."
    for marker in HOST_MARKERS:
        if marker not in request:
            assert marker not in text, f"a host path or stack frame reached the reply: {marker!r}"


async def assert_still_serving(nc, node, zygote_pid: int) -> None:
    reply, _text, _ = await send(nc, "def strategy(d): return 'BUY'", timeout=15.0)
    assert reply["success"] is True, reply["error"]
    assert [s["type"] for s in reply["signals"]] == ["BUY"]
    os.kill(zygote_pid, 0)  # raises if the zygote is gone
    assert node.pool.zygote_pid == zygote_pid, "the zygote was replaced: an attack killed it"
    assert node.pool.state().healthy


def assert_no_side_effects(traps: Traps, listener: Listener) -> None:
    assert os.listdir(traps.out_dir) == [], "an attack wrote a file"
    assert not os.path.exists(traps.marker), "an attack unpickled a payload"
    assert listener.accepted == 0, "an attack connected to the trap listener"


# ---------------------------------------------------------------------------------------------
# The attacks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    id: str
    code: str
    expect: frozenset[str]
    harmless_ok: bool = False  # legal code: a successful reply is fine if it carries nothing
    fields: dict[str, Any] = field(default_factory=dict)


def attack(id: str, code: str, *expect: str, harmless_ok: bool = False, **fields: Any) -> Attack:
    return Attack(id, code, frozenset(expect), harmless_ok, fields)



ATTACKS: list[Attack] = [
    # --- imports in every spelling ----------------------------------------------------------
    attack("import-os-system", "import os\nos.system('touch ' + params['out'])", SV),
    attack("dunder-import-call", "__import__('os').system('id')", SV),
    attack("importlib-import-module", "import importlib\nimportlib.import_module('os').listdir('/')", SV),
    attack("builtins-open", "import builtins\nresult = builtins.open(params['canary']).read()", SV),
    attack("builtins-dict-open", "result = __builtins__['open'](params['canary']).read()", SV),
    attack("builtins-dict-via-getattr", "b = getattr(signal, '__glob' + 'als__')['__builtins__']\nresult = b", SV),
    attack("getattr-module-attr", "result = getattr(np, 'o' + 's').environ", SV),
    attack("getattr-chain-pd-io", "result = getattr(getattr(pd, 'io'), 'common').os.getcwd()", SV),
    attack("from-pandas-io-common-import-os", "from pandas.io.common import os\nresult = os.getcwd()", SV),
    attack("from-numpy-lib-import-format", "from numpy.lib import format\nresult = format.open_memmap(params['out'])", SV),
    attack("import-numpy-core-multiarray", "import numpy.core.multiarray as m\nresult = str(m)", SV),
    attack("import-in-strategy-body", "def strategy(d):\n    import subprocess\n    return subprocess.run(['id'])", SV),
    attack("import-posix", "import posix\nresult = posix.getcwd()", SV),
    attack("import-io-open", "import io\nresult = io.open(params['canary']).read()", SV),
    attack("import-ctypes", "import ctypes\nctypes.CDLL(None).system(b'id')", SV),
    attack("strategy-module-builtins", "import strategy\nresult = getattr(strategy, '__builtins__')", SV),
    attack("import-private-module", "import _posixsubprocess\nresult = 1", SV),
    # --- dunder walks -------------------------------------------------------------------------
    attack("subclasses-walk-to-popen",
           "result = [c for c in ().__class__.__base__.__subclasses__() if 'Popen' in str(c)]", SV),
    attack("function-globals-builtins", "def f():\n    pass\nresult = f.__globals__['__builtins__']", SV),
    attack("api-function-globals", "result = log.__globals__", SV),
    attack("code-object-consts", "def f():\n    return 1\nresult = f.__code__.co_consts", SV),
    attack("generator-frame-f-back", "g = (i for i in [1])\nresult = g.gi_frame.f_back.f_globals", SV),
    attack("traceback-frame-walk",
           "try:\n    1 / 0\nexcept Exception as e:\n    result = e.__traceback__.tb_frame.f_back.f_globals", SV),
    attack("traceback-via-getattr",
           "try:\n    1 / 0\nexcept Exception as e:\n    result = getattr(getattr(e, '__trace' + 'back__'), 'tb_frame')", SV),
    attack("coroutine-cr-frame", "async def c():\n    pass\nresult = c().cr_frame", SV),
    attack("reduce-ex-on-frame", "result = getattr(df, '__reduce_' + 'ex__')(2)", SV),
    attack("method-self-module", "result = getattr(len, '__se' + 'lf__')", SV),
    attack("caught-violation-stays-fatal",
           "try:\n    getattr(1, '__class__')\nexcept BaseException:\n    pass\ndef strategy(d):\n    return 'BUY'", SV),
    attack("class-with-getattr-hook", "class A:\n    def __getattr__(self, n):\n        return n\nresult = A().x", SV),
    attack("subclass-dataframe", "class F(pd.DataFrame):\n    pass\nresult = F()", SV),
    attack("type-three-args", "result = type('X', (object,), {'__getattr__': len})", SV),
    attack("match-class-pattern-private", "match df:\n    case pd.DataFrame(_mgr=m):\n        result = m", SV),
    attack("match-class-pattern-writer", "match df:\n    case pd.DataFrame(to_csv=w):\n        w(params['out'])", SV),
    attack("unicode-normalised-dunder", "result = ().__\uff43lass__", SV),
    attack("class-keyword-metaclass-unpacked", "class A(**{'metaclass': len}):\n    x = 1\nresult = A.x",
           harmless_ok=True),
    # --- format-string walks ------------------------------------------------------------------
    attack("format-subclasses", "result = '{0.__class__.__base__.__subclasses__}'.format(0)", SV),
    attack("format-function-globals", "def f():\n    pass\nresult = '{0.__globals__[__builtins__]}'.format(f)", SV),
    attack("format-map-walk", "result = '{x.__class__.__mro__}'.format_map({'x': df})", SV),
    attack("format-unbound-str-format", "result = str.format('{0.__init__.__globals__}', df)", SV),
    attack("format-item-then-attr", "result = '{0[close].__class__}'.format(df)", SV),
    attack("format-as-to-string-formatter",
           "result = df.to_string(formatters={'close': '{0.__class__.__init__.__globals__}'.format})", SV),
    attack("format-as-series-map", "result = df['close'].map('{0.__class__}'.format).tolist()", SV),
    # --- library re-exports of os / sys / ctypes / subprocess ---------------------------------
    attack("statistics-sys-modules-os", "result = statistics.sys.modules['os'].getcwd()", SV),
    attack("datetime-sys", "result = datetime.sys.modules['subprocess']", SV),
    attack("pd-io-common-os", "result = pd.io.common.os.listdir('/')", SV),
    attack("pd-compat", "result = pd.compat.os.environ", SV),
    attack("pd-core-common", "result = pd.core.common.os", SV),
    attack("np-ctypeslib", "result = np.ctypeslib.ctypes.CDLL(None)", SV),
    attack("np-lib-format-pickle", "result = np.lib.format.pickle.loads(bytes.fromhex(params['payload_hex']))", SV),
    attack("np-core", "result = np.core.multiarray", SV),
    attack("np-testing-subprocess", "result = np.testing.subprocess", SV),
    attack("np-random-mtrand", "result = np.random.mtrand", SV),
    attack("talib-internal-module", "import talib._ta_lib as t\nresult = t", SV),
    # talib.abstract is importable since issue 13 (fresh Function objects); its internals are not
    attack("talib-abstract", "result = talib.abstract.Function('SMA').__class__", SV),
    attack("talib-abstract-internals", "result = talib.abstract._ta_lib", SV),
    attack("talib-func-globals", "result = getattr(talib.SMA, 'func_' + 'globals')", SV),
    attack("bitgenerator-ctypes", "result = np.random.PCG64(1).ctypes.state_address", SV),
    # --- reading the canary -------------------------------------------------------------------
    attack("read-open", "result = open(params['canary']).read()", SV),
    attack("read-np-loadtxt", "result = np.loadtxt(params['canary'], dtype=str).tolist()", SV),
    attack("read-np-genfromtxt", "result = np.genfromtxt(params['canary'], dtype=str).tolist()", SV),
    attack("read-np-fromfile", "result = np.fromfile(params['canary'], dtype=np.uint8).tolist()", SV),
    attack("read-np-load", "result = np.load(params['canary_npy']).tolist()", SV),
    attack("read-np-memmap", "result = np.memmap(params['canary'], dtype=np.uint8, mode='r').tolist()", SV),
    attack("read-pd-read-csv", "result = pd.read_csv(params['canary_csv']).to_dict()", SV),
    attack("read-pd-read-json", "result = pd.read_json(params['canary']).to_dict()", SV),
    attack("read-pd-read-fwf", "result = pd.read_fwf(params['canary']).to_dict()", SV),
    attack("read-getattr-read-csv", "result = getattr(pd, 'read_' + 'csv')(params['canary_csv']).to_dict()", SV),
    attack("read-dispatch-name", "result = df.agg('read_csv', params['canary_csv'])", SV),
    attack("read-np-datasource", "result = np.DataSource().open(params['canary']).read()", SV),
    attack("read-pd-excelfile", "result = pd.ExcelFile(params['canary'])", SV),
    # the language layer lets these through (pandas resolves a 'dateutil/<path>' time zone by
    # reading that file): the process layer must stop the read, leaving an error or a naive
    # (time-zone-less) value without the secret
    attack("read-tz-localize-dateutil-path",
           "result = str(pd.Timestamp('2024-01-01').tz_localize('dateutil/' + params['canary']))", RT, harmless_ok=True),
    attack("read-date-range-dateutil-path",
           "result = str(pd.date_range('2024-01-01', periods=2, tz='dateutil/' + params['canary']))", RT, harmless_ok=True),
    attack("read-tz-convert-dateutil-path",
           "result = str(df.index.tz_convert('dateutil/' + params['canary_csv'])[0])", RT, harmless_ok=True),
    # --- writing files ------------------------------------------------------------------------
    attack("write-df-to-csv", "df.to_csv(params['out'])", SV),
    attack("write-np-save", "np.save(params['out'], np.zeros(3))", SV),
    attack("write-np-savetxt", "np.savetxt(params['out'], np.zeros(3))", SV),
    attack("write-open", "open(params['out'], 'w').write('x')", SV),
    attack("write-df-to-json-path", "df.to_json(params['out'])", SV),
    attack("write-df-to-string-buf", "df.to_string(buf=params['out'])", SV),
    attack("write-ndarray-tofile", "np.zeros(3).tofile(params['out'])", SV),
    attack("write-df-to-pickle", "df.to_pickle(params['out'])", SV),
    attack("write-class-to-csv", "pd.DataFrame.to_csv(df, params['out'])", SV),
    attack("write-dispatch-to-csv", "df.agg('to_csv', params['out'])", SV),
    attack("write-np-memmap-w", "m = np.memmap(params['out'], dtype=np.uint8, mode='w+', shape=(4,))", SV),
    attack("write-df-to-html", "df.to_html(params['out'])", SV),
    attack("write-style-to-html", "df.style.to_html(params['out'])", SV),
    # --- environment --------------------------------------------------------------------------
    attack("env-os-environ", "import os\nresult = dict(os.environ)", SV),
    attack("env-pd-io-common", "result = dict(pd.io.common.os.environ)", SV),
    attack("env-statistics-sys", "result = dict(statistics.sys.modules['os'].environ)", SV),
    attack("env-show-versions", "pd.show_versions()", SV),
    attack("env-np-show-runtime", "np.show_runtime()", SV),
    attack("env-local-timezone", "result = [datetime.datetime.now().astimezone().tzname(), str(pd.Timestamp.now())]",
           harmless_ok=True),
    # --- network (the trap listener's address is in params) -----------------------------------
    attack("net-pd-read-csv-url", "result = pd.read_csv(params['url']).to_dict()", SV),
    attack("net-pd-read-json-url", "result = pd.read_json(params['url']).to_dict()", SV),
    attack("net-pd-read-html-url", "result = pd.read_html(params['url'])", SV),
    attack("net-np-genfromtxt-url", "result = np.genfromtxt(params['url'], dtype=str).tolist()", SV),
    attack("net-np-datasource-url", "result = np.DataSource().open(params['url']).read()", SV),
    attack("net-import-socket",
           "import socket\ns = socket.create_connection((params['host'], params['port']))", SV),
    attack("net-import-urllib", "import urllib.request\nresult = urllib.request.urlopen(params['url']).read()", SV),
    attack("net-df-to-csv-url", "df.to_csv(params['url'])", SV),
    # --- signals to the parent, process exits ---------------------------------------------------
    attack("signal-os-kill-parent", "import os\nos.kill(os.getppid(), 9)", SV),
    attack("signal-stdlib-signal-module", "import signal as s\nresult = s.SIGKILL", SV),
    attack("signal-via-statistics-sys", "statistics.sys.modules['os'].kill(1, 9)", SV),
    attack("signal-killpg", "pd.io.common.os.killpg(0, 9)", SV),
    attack("exit-raise-systemexit", "raise SystemExit(0)", RT),
    attack("exit-raise-keyboardinterrupt", "raise KeyboardInterrupt", RT),
    attack("exit-raise-generatorexit", "def strategy(d):\n    raise GeneratorExit", RT),
    attack("exit-builtin", "exit(0)", SV),
    # --- fork and thread bombs ----------------------------------------------------------------
    attack("fork-bomb-os-fork", "import os\nwhile True:\n    os.fork()", SV),
    attack("fork-multiprocessing", "import multiprocessing\nmultiprocessing.Process(target=len).start()", SV),
    attack("thread-bomb-threading", "import threading\nwhile True:\n    threading.Thread(target=len).start()", SV),
    attack("thread-concurrent-futures", "import concurrent.futures as cf\nresult = cf.ThreadPoolExecutor(64)", SV),
    attack("thread-underscore-thread", "import _thread\n_thread.start_new_thread(len, ('x',))", SV),
    attack("fork-numba-engine",
           "result = df['close'].rolling(3).apply(lambda x: 0.0, engine='numba', raw=True).tolist()", RT),
    # --- memory bombs (default memory_mb) -------------------------------------------------------
    attack("mem-list-growth", "x = []\nwhile True:\n    x.append(' ' * 10**6)", ML),
    attack("mem-numpy-50gb", "a = np.zeros((50 * 2**30) // 8)\na[:] = 1.0", ML),
    attack("mem-string-multiply", "s = 'x' * 10**10", ML),
    attack("mem-bytes", "b = bytes(10**10)", ML),
    attack("mem-list-multiply", "x = [0] * 10**10", ML),
    attack("mem-np-ones-2d", "a = np.ones((30000, 30000))", ML),
    attack("mem-np-empty-1tb", "a = np.empty(2**40, dtype=np.int8)", ML),
    attack("mem-dataframe", "big = pd.DataFrame(np.zeros((10**5, 10**4)))", ML),
    attack("mem-reindex", "big = df.reindex(range(10**9))", ML),
    attack("mem-format-precision", "s = '{:.2000000000f}'.format(1.0)", ML),
    attack("mem-date-range-seconds", "r = pd.date_range('1970-01-01', '2200-01-01', freq='s')", ML),
    attack("mem-touch-pages", "a = np.empty(10**9 // 8)\na.fill(1.0)", ML),
    attack("mem-caught-then-again",
           "try:\n    s = 'x' * 10**10\nexcept MemoryError:\n    pass\nkeep = [' ' * 10**6 for _ in range(10**4)]", ML),
    # --- recursion bombs ------------------------------------------------------------------------
    attack("recursion-simple", "def f():\n    return f()\nf()", RT),
    attack("recursion-mutual", "def a(n):\n    return b(n + 1)\ndef b(n):\n    return a(n + 1)\na(0)", RT),
    attack("recursion-through-pandas", "def f(x):\n    return df['close'].apply(f)\nf(0)", RT),
    attack("recursion-deep-compare",
           "a = []\nb = []\nfor _ in range(10**6):\n    a = [a]\n    b = [b]\nresult = a == b", RT),
    attack("recursion-deep-result", "x = []\nfor _ in range(10**5):\n    x = [x]\nresult = x", RT),
    attack("recursion-self-referential-result", "x = []\nx.append(x)\nresult = x", RT),
    attack("recursion-deep-str", "x = []\nfor _ in range(10**6):\n    x = [x]\nresult = str(x)", RT),
    # --- output floods --------------------------------------------------------------------------
    attack("flood-print-loop", "while True:\n    print('x' * 100)", OL),
    attack("flood-log-loop", "for i in range(10**6):\n    log('line', i)", OL),
    attack("flood-one-huge-log-line", "log('x' * 10**6)", OL),
    attack("flood-print-huge-end", "print('x', end='y' * 10**6)", OL),
    attack("flood-indicator-too-many-points", "indicator('x', np.zeros(2_000_001))", OL),
    attack("flood-many-indicators", "for i in range(1000):\n    indicator('i' + str(i), df['close'])", OL),
    attack("flood-huge-result-string", "result = 'x' * 2_000_000", OL),
    attack("flood-caught-limit", "try:\n    while True:\n        print('x')\nexcept BaseException:\n    pass\n"
           "def strategy(d):\n    return 'BUY'", OL),
    attack("flood-10k-plus-signals",
           "for i in range(len(df)):\n    signal('buy' if i % 2 else 'sell', at=i)", OL,
           bars=columnar_bars(10_050)),
    attack("flood-10k-plus-vector-signals",
           "def strategy(d):\n    return np.where(np.arange(len(d)) % 2 == 0, 'BUY', 'SELL')", OL,
           bars=columnar_bars(10_050)),
    # within every per-item limit, but more than NATS carries in one reply: must still be a
    # clear reply (OUTPUT_LIMIT), never silence
    attack("flood-reply-over-max-payload-indicator", "indicator('x', np.zeros(1_900_000))", OL),
    attack("flood-reply-over-max-payload-result-and-logs",
           "for i in range(250):\n    log('y' * 1000)\nresult = 'x' * 1_000_000", OL),
    # --- unpickling -----------------------------------------------------------------------------
    attack("pickle-pd-read-pickle", "result = pd.read_pickle(params['pickle'])", SV),
    attack("pickle-np-load-allow-pickle", "result = np.load(params['pickle_npy'], allow_pickle=True)", SV),
    attack("pickle-loads-bytes", "import pickle\nresult = pickle.loads(bytes.fromhex(params['payload_hex']))", SV),
    attack("pickle-marshal-loads", "import marshal\nresult = marshal.loads(bytes.fromhex(params['payload_hex']))", SV),
    attack("pickle-frombuffer-object",
           "result = np.frombuffer(bytes.fromhex(params['payload_hex'])[:8], dtype=object)", SV),
    attack("pickle-ndarray-buffer-object",
           "result = np.ndarray((1,), object, bytes.fromhex(params['payload_hex'])[:8])", SV),
    attack("pickle-setstate", "a = np.zeros(1)\ngetattr(a, '__setstate__')((1, (1,), np.dtype(object), False, b'\\0' * 8))", SV),
    attack("pickle-bytes-view-as-object",
           "result = np.array([bytes.fromhex(params['payload_hex'])[:8]]).view(object)", RT),
    attack("pickle-overlapping-object-dtype",
           "dt = np.dtype({'names': ['o', 'i'], 'formats': [object, np.int64], 'offsets': [0, 0]})\n"
           "a = np.zeros(1, dtype=dt)", RT),
    # --- as_strided and raw memory --------------------------------------------------------------
    attack("strided-np-lib-as-strided",
           "a = np.zeros(1)\nresult = np.lib.stride_tricks.as_strided(a, shape=(10**6,), strides=(8,)).sum()", SV),
    attack("strided-from-import", "from numpy.lib.stride_tricks import as_strided\nresult = as_strided", SV),
    attack("strided-ndarray-strides", "result = np.ndarray((10,), np.float64, strides=(10**9,)).sum()", SV),
    attack("strided-ndarray-buffer-offset", "result = np.ndarray((8,), np.uint8, bytes(8), -4096).tolist()", SV),
    attack("strided-set-strides", "a = np.zeros(4)\na.strides = (10**9,)\nresult = a.sum()", SV),
    attack("strided-sliding-window", "result = np.lib.stride_tricks.sliding_window_view(np.zeros(4), 2)", SV),
    attack("strided-broadcast-then-write",
           "b = np.broadcast_to(np.zeros(1), (10,))\nb.setflags(write=True)\nb[5] = 1.0\nresult = b.tolist()",
           harmless_ok=True),
    attack("strided-talib-bad-inputs",
           "a = df['close'].to_numpy()\nresult = [talib.SMA(a[::3], 5).tolist()[-1], talib.MAVP(a, a[:10])]", RT),
    # --- library output on the child's stdout/stderr must not reach the node's channel ---------
    attack("stdio-warnings-and-info",
           "x = np.array([1.0, 0.0])\nr = x / x\ndf.info()\nresult = str(np.log(np.zeros(1))[0])", harmless_ok=True),
    attack("stdio-errstate-print",
           "with np.errstate(all='print'):\n    r = np.ones(3) / np.zeros(3)\nresult = 1", harmless_ok=True),
    # --- the node itself: requests that could hurt the process that compiles --------------------
    attack("node-nested-parentheses", "x = " + "(" * 5000 + "1" + ")" * 5000, CE),
    attack("node-long-binop-chain", "x = " + "+".join(["1"] * 15000), CE, SV),
    attack("node-nested-blocks", "".join("    " * i + "if 1:\n" for i in range(120)) + "    " * 120 + "pass\n", CE),
    attack("node-nul-bytes", "x = 1\x00\nimport os", CE),
    attack("node-huge-int-literal", "x = " + "9" * 6000, CE),
]


@pytest.mark.parametrize("case", ATTACKS, ids=[a.id for a in ATTACKS])
async def test_attack_achieves_nothing(case: Attack, nc, node, traps, listener, zygote_pid):
    params = traps.params(case.id)
    params.update(host="127.0.0.1", port=listener.port, url=f"http://127.0.0.1:{listener.port}/data.csv")
    fields = {"timeout_ms": 5000, "parameters": params, **case.fields}
    request = json.dumps({"code": case.code, "parameters": params})
    reply, text, _elapsed = await send(nc, case.code, **fields)

    if reply["success"]:
        assert case.harmless_ok, f"the attack ran to completion: {text[:500]}"
    else:
        error = reply["error"]
        assert error["code"] in case.expect, f"expected {sorted(case.expect)}, got {error}"
        assert error["message"], error
    assert_reply_leaks_nothing(text, request)
    assert_no_side_effects(traps, listener)
    await assert_still_serving(nc, node, zygote_pid)


# ---------------------------------------------------------------------------------------------
# Requests built to hurt the node while it decodes them (not strategy code at all)
# ---------------------------------------------------------------------------------------------

_BARS_JSON = json.dumps(columnar_bars(20))
_BUY = json.dumps("def strategy(d): return 'BUY'")

RAW_REQUESTS: dict[str, bytes] = {
    "raw-deeply-nested-parameters": (
        '{"code":%s,"bars":%s,"parameters":{"a":%s%s}}' % (_BUY, _BARS_JSON, "[" * 50_000, "]" * 50_000)).encode(),
    "raw-deeply-nested-dicts": (
        '{"code":%s,"bars":%s,"parameters":%s1%s}' % (_BUY, _BARS_JSON, '{"a":' * 20_000, "}" * 20_000)).encode(),
    "raw-integer-beyond-64-bits": ('{"code":%s,"bars":%s,"parameters":{"a":%s}}' % (_BUY, _BARS_JSON, "9" * 400)).encode(),
    "raw-number-out-of-range": ('{"code":%s,"bars":%s,"parameters":{"a":1e999}}' % (_BUY, _BARS_JSON)).encode(),
    "raw-not-json": b"\xff\xfe{{{",
}


@pytest.mark.parametrize("raw", list(RAW_REQUESTS.values()), ids=list(RAW_REQUESTS))
async def test_malformed_request_gets_a_clear_reply(raw: bytes, nc, node, zygote_pid):
    msg = await nc.request(subjects.EXECUTE, raw, timeout=15.0)
    reply = json.loads(msg.data)
    assert reply["success"] is False
    assert reply["error"]["code"] == IR, reply["error"]
    assert_reply_leaks_nothing(msg.data.decode(), "")
    await assert_still_serving(nc, node, zygote_pid)


def test_attack_count():
    assert len(ATTACKS) + len(CPU_HOGS) + len(POISONINGS) + len(RAW_REQUESTS) >= 60
    assert len({a.id for a in ATTACKS}) == len(ATTACKS)


# ---------------------------------------------------------------------------------------------
# CPU hogs: TIMEOUT at the deadline, measured on both sides
# ---------------------------------------------------------------------------------------------

TIMEOUT_MS = 300
NODE_SLACK_MS = 100  # node side: the deadline is enforced within this
CLIENT_SLACK_MS = 250  # client side: + NATS round trip, decoding, a busy 2-core machine

CPU_HOGS: list[Attack] = [
    attack("cpu-while-true", "while True:\n    pass", TO),
    attack("cpu-while-true-in-strategy", "def strategy(d):\n    while True:\n        pass", TO),
    attack("cpu-sum-huge-range", "result = sum(range(10**12))", TO),
    attack("cpu-huge-pow", "result = pow(7, 10**9) % 10", TO, ML),
    attack("cpu-regex-backtracking-via-pandas",
           "result = pd.Series(['a' * 40 + 'b']).str.match('(a+)+$').tolist()", TO),
    attack("cpu-swallow-memory-errors",
           "while True:\n    try:\n        s = 'x' * 10**10\n    except MemoryError:\n        pass", TO),
    attack("cpu-loop-in-finally", "try:\n    1 / 0\nfinally:\n    while True:\n        pass", TO),
    attack("cpu-swallow-every-exception",
           "def strategy(d):\n    while True:\n        try:\n            while True:\n                pass\n"
           "        except BaseException:\n            pass", TO),
    attack("cpu-factorial", "result = math.factorial(10**7) % 7", TO),
    attack("cpu-matmul-loop", "a = np.ones((400, 400))\nwhile True:\n    a = (a @ a) / 400.0", TO),
    attack("cpu-recursion-swallowed",
           "def f(n):\n    try:\n        return f(n + 1)\n    except RecursionError:\n        return f(n + 1)\nf(0)",
           TO, RT),
]


@pytest.mark.parametrize("case", CPU_HOGS, ids=[a.id for a in CPU_HOGS])
async def test_cpu_hog_times_out_at_the_deadline(case: Attack, nc, node, traps, listener, zygote_pid):
    reply, text, elapsed = await send(nc, case.code, timeout_ms=TIMEOUT_MS, parameters=traps.params(case.id))
    assert reply["success"] is False, text[:300]
    assert reply["error"]["code"] in case.expect, reply["error"]
    if reply["error"]["code"] == TO:
        assert reply["execution_time_ms"] <= TIMEOUT_MS + NODE_SLACK_MS, reply["execution_time_ms"]
        assert elapsed * 1000 <= TIMEOUT_MS + CLIENT_SLACK_MS, f"client saw {elapsed * 1000:.0f} ms"
    assert_reply_leaks_nothing(text, case.code)
    assert_no_side_effects(traps, listener)
    await assert_still_serving(nc, node, zygote_pid)


# ---------------------------------------------------------------------------------------------
# Poisoning shared state for the next run
# ---------------------------------------------------------------------------------------------

POISONINGS: list[Attack] = [
    attack("poison-np-mean", "np.mean = lambda *a, **k: 42.0", SV),
    attack("poison-setattr-np-mean", "setattr(np, 'mean', len)", SV),
    attack("poison-dataframe-rolling", "pd.DataFrame.rolling = None", SV),
    attack("poison-setattr-series-rolling", "setattr(pd.Series, 'rolling', len)", SV),
    attack("poison-talib-sma", "talib.SMA = len", SV),
    attack("poison-math-pi", "math.pi = 3", SV),
    attack("poison-statistics-mean", "statistics.mean = len", SV),
    attack("poison-pd-set-option", "pd.set_option('display.max_rows', 5)", SV),
    attack("poison-pd-options-attr", "pd.options.display.max_rows = 5", SV),
    attack("poison-np-seterr", "np.seterr(all='raise')", SV),
    attack("poison-np-random-seed", "np.random.seed(0)", SV),
    attack("poison-sys-setrecursionlimit", "import sys\nsys.setrecursionlimit(60)", SV),
    attack("poison-setrecursionlimit-via-statistics", "statistics.sys.setrecursionlimit(60)", SV),
    attack("poison-datetime-now", "datetime.datetime.now = lambda: 0", SV),
    attack("poison-ndarray-class", "setattr(np.ndarray, 'sum', len)", SV),
    # legal code that changes state inside its own run only
    attack("poison-legacy-rng-advanced", "x = np.random.random(100_000)\nresult = float(x[-1])", harmless_ok=True),
    attack("poison-errstate-left-entered",
           "def g():\n    with np.errstate(all='raise'):\n        yield 1\nit = g()\nnext(it)\nresult = 1",
           harmless_ok=True),
    attack("poison-frame-attrs", "df.attrs['x'] = 1\ndf.index.name = 'evil'\nresult = 1", harmless_ok=True),
]

PRISTINE_PROBE = '''
def strategy(data):
    def depth(n):
        return 0 if n == 0 else 1 + depth(n - 1)
    close = data['close']
    return {
        'np_mean': float(np.mean([1.0, 2.0, 4.0])),
        'pi': math.pi,
        'rng': float(np.random.default_rng(1).random()),
        'legacy_rng': float(np.random.random()),
        'stats_mean': statistics.mean([1, 2, 4]),
        'rolling': close.rolling(5).mean().round(9).tolist()[-3:],
        'sma': talib.SMA(close.to_numpy(), 5).round(9).tolist()[-3:],
        'repr_rows': len(repr(pd.DataFrame({'a': list(range(100))})).splitlines()),
        'divide': str((np.array([1.0]) / np.array([0.0]))[0]),
        'depth': depth(600),
        'index_name': data.index.name,
        'sum': float(np.zeros(3).sum()),
        'year': datetime.datetime(2024, 5, 1).year,
    }
'''


def pristine_expected() -> dict[str, Any]:
    close = pd.Series(BARS["close"], dtype=float)
    with np.errstate(divide="ignore"):
        divide = str((np.array([1.0]) / np.array([0.0]))[0])
    return {
        "np_mean": float(np.mean([1.0, 2.0, 4.0])),
        "pi": math.pi,
        "rng": float(np.random.default_rng(1).random()),
        "stats_mean": statistics.mean([1, 2, 4]),
        "rolling": close.rolling(5).mean().round(9).tolist()[-3:],
        "sma": talib.SMA(close.to_numpy(), 5).round(9).tolist()[-3:],
        "repr_rows": len(repr(pd.DataFrame({"a": list(range(100))})).splitlines()),
        "divide": divide,
        "depth": 600,
        "index_name": "timestamp",
        "sum": 0.0,
        "year": 2024,
    }


@pytest.mark.parametrize("case", POISONINGS, ids=[a.id for a in POISONINGS])
async def test_poisoning_does_not_reach_the_next_run(case: Attack, nc, node, traps, listener, zygote_pid):
    before, _, _ = await send(nc, PRISTINE_PROBE)
    assert before["success"] is True, before["error"]
    reply, text, _ = await send(nc, case.code, parameters=traps.params(case.id))
    if reply["success"]:
        assert case.harmless_ok, f"the poisoning attempt was not refused: {text[:300]}"
    else:
        assert reply["error"]["code"] in case.expect, reply["error"]
    after, _, _ = await send(nc, PRISTINE_PROBE)
    assert after["success"] is True, after["error"]
    seen = dict(after["result"])
    legacy = seen.pop("legacy_rng")
    assert seen == pristine_expected()
    # the legacy global generator is reseeded from OS entropy for every run: run 1 drawing from
    # it (or trying to seed it) cannot decide what the next run draws
    assert legacy != before["result"]["legacy_rng"]
    assert legacy != float(np.random.RandomState(0).random_sample())
    assert_no_side_effects(traps, listener)
    await assert_still_serving(nc, node, zygote_pid)


async def test_traps_were_never_touched(traps, listener):
    """After every attack of the module: nothing written, nothing unpickled, nothing connected."""
    assert_no_side_effects(traps, listener)
    with open(traps.canary) as fh:
        assert fh.read().strip() == SECRET
