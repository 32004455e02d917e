"""The standard library a strategy needs, through NATS: it works, and every way around the
guards it could offer is refused.

collections, itertools, functools, operator, typing, dataclasses, json, random, bisect, heapq,
decimal, fractions, statistics, warnings and talib.abstract are importable (sandbox.policy,
sandbox.stdlib); `match`, `nonlocal` and `x.__name__` compile (sandbox.compiler). The attacks
below are the surfaces of those that reach attributes by name, evaluate strings, mutate library
classes or process-wide state, or hand C code a name to read; each must end in
SECURITY_VIOLATION (or, where the attack is only a misuse, a plain RUNTIME_ERROR) and leak
nothing.
"""

from __future__ import annotations

import os
import re

import pytest

from contracts import subjects
from sandbox import guards, policy
from sandbox.compiler import compile_strategy
from sandbox.proxies import MODULE_PROXIES, proxy_surface
from sandbox.restricted import build_globals
from tests.support import columnar_bars, request_json

SV = "SECURITY_VIOLATION"
RT = "RUNTIME_ERROR"

pytestmark = pytest.mark.usefixtures("node")


async def run(nc, code: str, n: int = 60) -> dict:
    return await request_json(nc, subjects.EXECUTE, {"code": code, "bars": columnar_bars(n), "timeout_ms": 5000})


def strategy(body: str, imports: str = "") -> str:
    lines = "\n".join("    " + line for line in body.strip().splitlines())
    return f"{imports}\ndef strategy(data):\n{lines}\n    return 'HOLD'\n"


# -- honest use ------------------------------------------------------------------------------

HONEST = {
    "collections": ("import collections\nc = collections.Counter('abca'); c['z'] += 1\n"
                    "d = collections.defaultdict(list); d['k'].append(1)\n"
                    "q = collections.deque([1, 2], maxlen=2); q.append(3)\n"
                    "P = collections.namedtuple('P', ['x', 'y']); p = P(1, 2)\n"
                    "log(c['a'], c['z'], d['k'], list(q), p.x + p.y, collections.OrderedDict(a=1)['a'])",
                    "2 1 [1] [2, 3] 3 1"),
    "itertools": ("import itertools\nlog(list(itertools.islice(itertools.count(5), 3)), "
                  "list(itertools.pairwise([1, 2, 3])), len(list(itertools.combinations(range(4), 2))))",
                  "[5, 6, 7] [(1, 2), (2, 3)] 6"),
    "functools": ("import functools\nimport operator\n@functools.lru_cache(maxsize=None)\ndef fib(k):\n"
                  "    return k if k < 2 else fib(k - 1) + fib(k - 2)\n"
                  "add3 = functools.partial(operator.add, 3)\n"
                  "log(fib(20), add3(4), functools.reduce(operator.mul, [1, 2, 3, 4]))",
                  "6765 7 24"),
    "operator": ("import operator\nrows = [{'k': 2}, {'k': 1}]\n"
                 "log(sorted(rows, key=operator.itemgetter('k'))[0]['k'], operator.attrgetter('shape')(data), "
                 "operator.methodcaller('mean')(data['close']) > 0)",
                 "1 (60, 5) True"),
    "typing": ("from typing import List, Optional, Dict, cast\n"
               "def f(xs: List[float], k: Optional[int] = None) -> Dict[str, float]:\n"
               "    return {'n': float(len(xs))}\nlog(cast(dict, f([1.0]))['n'])",
               "1.0"),
    "dataclasses": ("from dataclasses import dataclass, field, fields, replace\n"
                    "@dataclass(frozen=True)\nclass Pos:\n    qty: int\n    price: float = 1.5\n"
                    "    tags: list = field(default_factory=list)\n"
                    "p = replace(Pos(2), price=3.0)\nlog(p, [f.name for f in fields(p)], p == Pos(2, 3.0))",
                    "strategy.<locals>.Pos(qty=2, price=3.0, tags=[]) ['qty', 'price', 'tags'] True"),
    "json": ("import json\nlog(json.dumps({'b': [1, 2.5, None]}, sort_keys=True), json.loads('{\"a\": [1]}')['a'])",
             '{"b": [1, 2.5, null]} [1]'),
    "random": ("import random\nr = random.Random(42)\nx = random.random()\n"
               "log(0 <= x < 1, r.randint(1, 100) == random.Random(42).randint(1, 100), "
               "len(random.sample(range(10), 3)))",
               "True True 3"),
    "bisect-heapq": ("import bisect, heapq\nh = [5, 1, 3]; heapq.heapify(h)\n"
                     "log(bisect.bisect_left([1, 2, 4], 3), heapq.heappop(h), heapq.nlargest(1, [4, 9, 2]))",
                     "2 1 [9]"),
    "decimal-fractions": ("import decimal, fractions\n"
                          "with decimal.localcontext(prec=3):\n    third = decimal.Decimal(1) / 3\n"
                          "log(third, decimal.Decimal('0.1') + decimal.Decimal('0.2'), fractions.Fraction(1, 3) * 3)",
                          "0.333 0.3 1"),
    "statistics": ("import statistics\nlog(statistics.median([3, 1, 2]))", "2"),
    "talib-abstract": ("from talib import abstract\nsma = abstract.SMA(data, timeperiod=5)\n"
                       "log(round(float(sma.iloc[-1]), 6) == round(float(data['close'].iloc[-5:].mean()), 6))",
                       "True"),
    "type-name": ("log(type(data).__name__, type(3).__name__, strategy.__name__, np.__name__)",
                  "DataFrame int strategy numpy"),
    "nonlocal": ("def counter():\n    n = 0\n    def inc():\n        nonlocal n\n        n += 1\n        return n\n"
                 "    return inc\ninc = counter(); inc()\nlog(inc())",
                 "2"),
    "match": ("def kind(x):\n    match x:\n        case {'side': 'buy', 'qty': q} if q > 0:\n            return f'buy {q}'\n"
              "        case [first, *rest]:\n            return f'list {first} {len(rest)}'\n"
              "        case int() | float():\n            return 'number'\n        case _:\n            return 'other'\n"
              "log(kind({'side': 'buy', 'qty': 2}), kind([1, 2, 3]), kind(2.5), kind('x'))",
              "buy 2 list 1 2 number other"),
    "dataclass-asdict": ("from dataclasses import dataclass, asdict, astuple\n@dataclass\nclass Leg:\n"
                         "    qty: int\n@dataclass\nclass Order:\n    legs: list\n    note: str = 'x'\n"
                         "o = Order([Leg(1), Leg(2)])\nd = asdict(o)\nd['legs'][0]['qty'] = 9\n"
                         "log(d, astuple(o), o.legs[0].qty)",
                         "{'legs': [{'qty': 9}, {'qty': 2}], 'note': 'x'} ([(1,), (2,)], 'x') 1"),
    "enum": ("import enum\nSide = enum.Enum('Side', {'BUY': 1, 'SELL': -1})\n"
             "def act(s):\n    match s:\n        case Side.BUY:\n            return 'long'\n"
             "        case _:\n            return 'flat'\n"
             "log(Side.BUY.name, Side(-1).name, [m.value for m in Side], act(Side.BUY), act(Side.SELL), "
             "enum.IntEnum('Lvl', 'LOW HIGH').HIGH + 1)",
             "BUY SELL [1, -1] long flat 3"),
    "match-dataclass": ("from dataclasses import dataclass\n@dataclass\nclass Bar:\n    o: float\n    c: float\n"
                        "match Bar(1.0, 2.0):\n    case Bar(o, c) if c > o:\n        log('up', c - o)",
                        "up 1.0"),
}


@pytest.mark.parametrize("name", sorted(HONEST))
async def test_honest_standard_library_code_runs(nc, name):
    body, expected = HONEST[name]
    reply = await run(nc, strategy(body))
    assert reply["success"], reply["error"]
    assert reply["logs"][-1] == expected


async def test_warnings_land_in_the_run_logs(nc):
    code = strategy("import warnings\nwarnings.warn('thin volume')\nwarnings.warn('stale', DeprecationWarning)\n"
                    "np.log(np.array([-1.0]))")
    reply = await run(nc, code)
    assert reply["success"], reply["error"]
    assert reply["logs"][:2] == ["UserWarning: thin volume", "DeprecationWarning: stale"]
    assert any(line.startswith("RuntimeWarning: invalid value encountered in log") for line in reply["logs"])


async def test_random_is_seeded_afresh_for_every_run(nc):
    code = strategy("import random\nlog(random.getrandbits(64))")
    draws = {(await run(nc, code))["logs"][0] for _ in range(4)}
    assert len(draws) == 4


# -- attacks ---------------------------------------------------------------------------------

ATTACKS = {
    # operator: C lookups by name
    "attrgetter-dunder": ("import operator\nleak = operator.attrgetter('__class__')(data)", SV),
    "attrgetter-writer": ("import operator\nleak = operator.attrgetter('to_pickle')(data)", SV),
    "attrgetter-dotted": ("import operator\nleak = operator.attrgetter('index.__class__')(data)", SV),
    "attrgetter-globals": ("import operator\nleak = operator.attrgetter('__globals__')(log)", SV),
    "methodcaller-writer": ("import operator\noperator.methodcaller('to_csv', 'x.csv')(data)", SV),
    "methodcaller-reduce": ("import operator\nleak = operator.methodcaller('__reduce_ex__', 4)(data)", SV),
    "setitem-module": ("import operator\noperator.setitem(np.random, 'x', 1)", SV),
    "setitem-library-class": ("import operator\noperator.setitem(pd.Timestamp, 'x', 1)", SV),
    "getitem-dunder-format": ("import operator\nleak = operator.getitem(data, '__class__')", RT),
    # functools
    "partial-getattr": ("import functools\nleak = functools.partial(getattr, data)('__class__')", SV),
    "reduce-getattr": ("import functools\nleak = functools.reduce(getattr, ['__class__', '__subclasses__'], data)", SV),
    "wraps": ("from functools import wraps", SV),
    "update-wrapper": ("import functools\nfunctools.update_wrapper", SV),
    "singledispatch": ("import functools\nfunctools.singledispatch", SV),
    "total-ordering-library-class": ("import functools\nfunctools.total_ordering(pd.Timestamp)", SV),
    # typing: string evaluation
    "get-type-hints": ("import typing\ntyping.get_type_hints", SV),
    "forward-ref": ("from typing import ForwardRef", SV),
    "named-tuple-class": ("import typing\ntyping.NamedTuple", SV),
    "typing-private": ("import typing\nleak = typing.List.__origin__", SV),
    # dataclasses
    "dataclass-library-class": ("import dataclasses\ndataclasses.dataclass(pd.Timestamp)", SV),
    "dataclass-options-library-class": ("import dataclasses\ndataclasses.dataclass(frozen=True)(pd.Series)", SV),
    "fields-library-object": ("import dataclasses\nleak = dataclasses.fields(data)", SV),
    "replace-library-object": ("import dataclasses\nleak = dataclasses.replace(pd.Timestamp(0), year=2)", SV),
    "make-dataclass": ("import dataclasses\ndataclasses.make_dataclass", SV),
    "asdict-library-object": ("import dataclasses\nleak = dataclasses.asdict(pd.Timestamp(0))", RT),
    "asdict-not-a-dataclass": ("import dataclasses\nleak = dataclasses.asdict(dataclasses.field())", RT),
    "post-init-dunder": ("from dataclasses import dataclass\n@dataclass\nclass A:\n    x: int\n"
                         "    def __post_init__(self):\n        pass\nA(1)", SV),
    "private-field": ("from dataclasses import dataclass\n@dataclass\nclass A:\n    _x: int = 1", SV),
    # collections
    "namedtuple-private-field": ("import collections\ncollections.namedtuple('P', ['__class__'])", RT),
    "namedtuple-source-injection": ("import collections\ncollections.namedtuple('P', ['a=__import__(\"os\")'])", RT),
    "collections-abc": ("import collections\ncollections.abc", SV),
    "counter-class-write": ("import collections\ncollections.Counter.most_common = None", SV),
    # json
    "json-object-hook": ("import json\njson.loads('{}', object_hook=print)", RT),
    "json-cls": ("import json\njson.loads('{}', cls=pd.DataFrame)", RT),
    "json-load-file": ("import json\njson.load", SV),
    "json-decoder-class": ("import json\njson.JSONDecoder", SV),
    # random: global state
    "random-seed": ("import random\nrandom.seed(1)", SV),
    "random-setstate": ("import random\nrandom.setstate", SV),
    "random-bound-self": ("import random\nleak = random.random.__self__", SV),
    # warnings: process-wide filters
    "warnings-simplefilter": ("import warnings\nwarnings.simplefilter('error')", SV),
    "warnings-catch": ("import warnings\nwarnings.catch_warnings", SV),
    "warnings-showwarning": ("import warnings\nwarnings.showwarning = print", SV),
    # decimal: process-wide context
    "decimal-setcontext": ("import decimal\ndecimal.setcontext", SV),
    "decimal-getcontext": ("import decimal\ndecimal.getcontext", SV),
    "decimal-context-write": ("import decimal\nwith decimal.localcontext() as ctx:\n    ctx.prec = 2", SV),
    # enum: the functional API only (a class statement cannot derive from Enum; no mixins)
    "enum-class-statement": ("import enum\nclass Side(enum.Enum):\n    BUY = 1", SV),
    "enum-mixin-type": ("import enum\nleak = enum.Enum('X', 'A', type=pd.DataFrame)", RT),
    "enum-private-member": ("import enum\nleak = enum.Enum('X', ['__class__'])", SV),
    "enum-private-member-pair": ("import enum\nleak = enum.Enum('X', [('_x', 1)])", SV),
    "enum-metaclass": ("import enum\nleak = enum.EnumMeta", SV),
    "enum-members-map": ("import enum\nleak = enum.Enum('X', 'A B').__members__", SV),
    "enum-write-member": ("import enum\nX = enum.Enum('X', 'A B')\nX.A = 5", SV),
    # talib.abstract
    "abstract-private": ("from talib import abstract\nleak = abstract._ta_lib", SV),
    "abstract-function-class": ("from talib import abstract\nleak = abstract.Function('SMA').__class__", SV),
    "abstract-function-not-an-indicator": ("from talib import abstract\nleak = abstract.Function('os')", RT),
    "abstract-shared-object-write": ("from talib import abstract\nabstract.SMA.parameters = {}", SV),
    # match: names C code reads by itself
    "match-keyword-dunder": ("match data:\n    case object(__class__=c):\n        leak = c", SV),
    "match-keyword-writer": ("match data:\n    case pd.DataFrame(to_pickle=w):\n        w('x')", SV),
    "match-keyword-denied": ("match np.random.default_rng():\n    case object(ctypes=c):\n        leak = c", SV),
    "match-value-private": ("match 1:\n    case pd._libs:\n        pass", SV),
    "match-value-writer": ("match 1:\n    case data.to_csv:\n        pass", SV),
    "match-capture-private": ("match 1:\n    case _hidden:\n        pass", SV),
    "match-args-in-class": ("class P:\n    __match_args__ = ('x',)", SV),
    "match-star-private": ("match [1]:\n    case [*_rest]:\n        pass", SV),
    "match-rest-private": ("match {}:\n    case {**_rest}:\n        pass", SV),
    # nonlocal / __name__
    "nonlocal-private": ("def f():\n    _x = 1\n    def g():\n        nonlocal _x\n    return g", SV),
    "name-store": ("def f():\n    pass\nf.__name__ = 'g'", SV),
    "name-getattr": ("leak = getattr(data, '__name__')", SV),
    "name-helper": ("leak = _name_of_(data)", SV),
    "match-helper": ("leak = _match_vet_((data,))", SV),
    "qualname": ("leak = type(data).__qualname__", SV),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_standard_library_attack_is_refused(nc, name):
    body, code = ATTACKS[name]
    reply = await run(nc, strategy(body))
    assert reply["success"] is False, reply
    assert reply["error"]["code"] == code, reply["error"]
    assert "leak" not in str(reply["result"])


async def test_a_refused_attack_leaves_the_node_serving(nc):
    reply = await run(nc, strategy("import operator\noperator.attrgetter('__class__')(data)"))
    assert reply["error"]["code"] == SV
    honest = await run(nc, "def strategy(data):\n    return 'BUY'\n")
    assert honest["success"]


# -- in process: what NATS cannot show directly ------------------------------------------------

def test_match_captures_are_vetted_like_attribute_reads():
    """A value only C code could hand over (here a real module planted in a list) is refused."""
    guards.reset_violations()
    compiled = compile_strategy("match box:\n    case [m]:\n        leak = m\n")
    env = build_globals({"box": [os]}, lambda line: None)
    with pytest.raises(Exception) as exc:
        exec(compiled.code, env)
    assert getattr(exc.value, "code", None) == SV
    assert "leak" not in env
    guards.reset_violations()


def _reachable_classes():
    for path, proxy in MODULE_PROXIES.items():
        for name, value in proxy_surface(proxy).items():
            if isinstance(value, type):
                yield f"{path}.{name}", value


def test_no_reachable_class_lets_a_positional_pattern_read_a_refused_name():
    """Positional class patterns read `__match_args__` names in C: none may be a refused one."""
    bad = []
    for where, cls in _reachable_classes():
        declared = next((k.__dict__["__match_args__"] for k in type.__getattribute__(cls, "__mro__")
                         if "__match_args__" in k.__dict__), ())
        for name in declared:
            if (not isinstance(name, str) or name.startswith("_") or name in policy.LIBRARY_DENIED_ATTRIBUTES
                    or (name.startswith(policy.DENIED_ATTRIBUTE_PREFIXES)
                        and name not in policy.ALLOWED_PREFIXED_ATTRIBUTES)):
                bad.append((where, name))
    assert bad == []


def test_the_readme_lists_exactly_the_importable_modules():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    section = readme.split("## Writing strategies", 1)[1].split("\n## ", 1)[0]
    sentence = re.split(r"\.\s", section.split("Importable:", 1)[1], maxsplit=1)[0]
    listed = set(re.findall(r"`([a-z_.]+)`", sentence))
    importable = {m for m in policy.MODULE_SURFACES if m.count(".") == 0 or m == "talib.abstract"}
    assert listed == importable


async def test_a_strategy_filters_exchange_hours_in_new_york_time(nc):
    """Named time zones work inside the sandbox (zone data preloaded by the zygote)."""
    bars = columnar_bars(48, step_ms=3_600_000)  # hourly from 2024-01-01T00:00Z
    code = ("def strategy(data):\n"
            "    local = data.index.tz_convert('America/New_York')\n"
            "    open_hours = (local.hour >= 9) & (local.hour < 16)\n"
            "    log(str(local[0].tzinfo), int(open_hours.sum()), local[14].strftime('%H:%M %Z'))\n"
            "    return 'HOLD'\n")
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": bars})
    assert reply["success"], reply["error"]
    assert reply["logs"] == ["America/New_York 14 09:00 EST"]
