"""No client input produces INTERNAL: a property over every request type, through NATS.

Hypothesis builds valid-looking requests for each request type (execute, validate, backtest,
sweep, screen, and durable execute/backtest jobs) and puts hostile values where a client could:
integers past 64 bits, NaN and infinities, wrong types, empty and deeply nested values, times
outside what int64 nanoseconds hold, unknown or out-of-range options. Each body goes as JSON
and as msgpack to the session's real node. Every one must get a reply with an error code from
the contract (or a success), and never INTERNAL, which means "the node's fault".

Examples are generated up front (deterministically) and sent concurrently, so the property
covers a few hundred bodies in seconds; a failure lists the offending bodies.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from contracts import ErrorCode, subjects
from tests.support import columnar_bars

CODES = {code.value for code in ErrorCode}
EXAMPLES = 60  # per request type
QUICK = "def strategy(data, params):\n    return 'BUY'\n"
VECTOR = "import numpy as np\ndef strategy(data, params):\n    return np.sign(data['close'].diff().fillna(0))\n"
CLASSIFY = "def classify_symbol(symbol):\n    return bool(params) or True\n"

# -- hostile values ----------------------------------------------------------------------------
huge_ints = st.sampled_from([2**63, 2**64, 2**70, -(2**63) - 1, -(2**70), 10**30, -(10**30)])
bad_floats = st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324])
bad_times = st.sampled_from([1e17, 9.3e15, -1e17, 9_300_000_000_000, -9_300_000_000_000, 10**19,
                             "9999-12-31T00:00:00Z", "0001-01-01", "1600-01-01", "2300-01-01",
                             "not a time", "", "2024-13-45"])
wrong_types = st.sampled_from(["", "x" * 300, [], {}, [[]], {"a": {"b": []}}, True, False, None, 0, -1])


def _nested(depth: int):
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


deep = st.sampled_from([_nested(40), _nested(200), {"a": _nested(60)}])
hostile = huge_ints | bad_floats | bad_times | wrong_types | deep | st.integers() | st.floats() \
    | st.text(max_size=20)
values = st.recursive(hostile, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=5)
parameters = st.dictionaries(st.text(max_size=8), huge_ints | values, min_size=1, max_size=3) | values


def _bars(n: int = 30) -> dict:
    return columnar_bars(n, step_ms=60_000)


@st.composite
def bars_with_hostile_cells(draw):
    bars = _bars()
    for _ in range(draw(st.integers(1, 3))):
        column = draw(st.sampled_from(["timestamp", "open", "high", "low", "close", "volume"]))
        i = draw(st.integers(0, len(bars[column]) - 1))
        cell = draw(bad_times) if column == "timestamp" else draw(hostile)
        bars[column][i] = cell
    if draw(st.booleans()):
        bars[draw(st.sampled_from(list(bars)))] = draw(values)
    return bars


@st.composite
def rows_with_hostile_cells(draw):
    cols = _bars(10)
    rows = [{k: cols[k][i] for k in cols} for i in range(10)]
    i = draw(st.integers(0, 9))
    key = draw(st.sampled_from(["timestamp", "open", "close", "volume"]))
    rows[i][key] = draw(bad_times if key == "timestamp" else hostile)
    return rows


option_names = st.sampled_from([
    "mode", "initial_cash", "allow_short", "fill", "commission_rate", "commission_fixed",
    "slippage_rate", "fractional", "position_size", "stop_loss_pct", "take_profit_pct",
    "risk_free_rate", "periods_per_year", "max_trades", "equity_points", "no_such_option"])
options = st.dictionaries(option_names, hostile | st.sampled_from(["native", "backtesting_py", "next_open"]),
                          max_size=3)
grids = st.dictionaries(st.sampled_from(["fast", "slow", "x"]), st.lists(huge_ints | hostile | st.integers(1, 30), max_size=4),
                        min_size=1, max_size=3) | values


def _with(base: dict, extra: dict) -> dict:
    out = dict(base)
    out.update(extra)
    return out


def _field(name: str, strategy) -> st.SearchStrategy:
    return strategy.map(lambda value: {name: value})


common = st.one_of(
    _field("parameters", parameters), _field("timeout_ms", hostile), _field("memory_mb", hostile),
    _field("language", hostile), _field("symbol", hostile), _field("timeframe", hostile),
    _field("request_id", hostile), _field("user_id", hostile), _field("code", hostile),
)
with_bars = st.one_of(common, _field("bars", bars_with_hostile_cells()),
                      _field("market_data", rows_with_hostile_cells()))
extras = st.lists(with_bars, min_size=1, max_size=1).map(lambda parts: {k: v for p in parts for k, v in p.items()})

execute_bodies = extras.map(lambda e: _with({"code": QUICK, "bars": _bars()}, e))
validate_bodies = st.one_of(_field("code", hostile), _field("language", hostile),
                            _field("request_id", hostile)).map(lambda e: _with({"code": QUICK}, e))
backtest_extra = st.one_of(with_bars, _field("options", options), _field("rank_by", hostile),
                           _field("source", st.fixed_dictionaries({
                               "symbol": hostile | st.just("AAPL"), "timeframe": hostile | st.just("1d"),
                               "start": bad_times | hostile, "end": bad_times})))
backtest_bodies = st.lists(backtest_extra, min_size=1, max_size=1).map(
    lambda parts: _with({"code": VECTOR, "bars": _bars()}, {k: v for p in parts for k, v in p.items()}))
sweep_bodies = st.tuples(grids, st.lists(backtest_extra, max_size=0)).map(
    lambda t: _with({"code": VECTOR, "bars": _bars(), "grid": t[0]}, {k: v for p in t[1] for k, v in p.items()}))
screen_extra = st.one_of(
    common, _field("symbols", st.lists(hostile, min_size=1, max_size=3) | values),
    _field("universe", st.lists(hostile, max_size=3) | values), _field("start", bad_times | hostile),
    _field("end", bad_times | hostile), _field("max_bars", hostile))
screen_bodies = st.lists(screen_extra, min_size=1, max_size=1).map(
    lambda parts: _with({"code": CLASSIFY, "symbols": ["NOSUCH1"]}, {k: v for p in parts for k, v in p.items()}))

# The reported findings, always among the examples: 2**70 / 10**30 as a parameter or grid
# value, epoch-ms times past int64 nanoseconds (one bar and 20 bars).
def _known(base: dict, sweep: bool) -> list[dict]:
    out = [_with(base, {"parameters": {"n": 2**70}}), _with(base, {"parameters": {"n": {"deep": [10**30]}}})]
    for stamps in ([1e17], [9.3e15], [-1e17]):
        bars = _bars(1)
        bars["timestamp"] = stamps
        out.append(_with(base, {"bars": bars}))
    bars = _bars(20)
    bars["timestamp"] = [1e17 + i for i in range(20)]
    out.append(_with(base, {"bars": bars}))
    if sweep:
        out += [_with(base, {"grid": {"fast": [2, 2**70]}}), _with(base, {"grid": {"fast": [10**30]}}),
                _with(base, {"grid": {"fast": [5], "slow": [[10**30]]}})]
    return out


KNOWN = {
    subjects.EXECUTE: _known({"code": QUICK, "bars": _bars()}, False),
    subjects.VALIDATE: [{"code": QUICK, "parameters": {"n": 2**70}}],
    subjects.BACKTEST: _known({"code": VECTOR, "bars": _bars()}, True),
    subjects.SCREEN: [{"code": CLASSIFY, "symbols": ["NOSUCH1"], "parameters": {"n": 2**70}},
                      {"code": CLASSIFY, "symbols": ["NOSUCH1"], "start": 1e17},
                      {"code": CLASSIFY, "symbols": ["NOSUCH1"], "end": -1e17}],
    "jobs.execute": _known({"code": QUICK, "bars": _bars()}, False),
    "jobs.backtest": _known({"code": VECTOR, "bars": _bars()}, True),
}

KINDS = {
    subjects.EXECUTE: execute_bodies, subjects.VALIDATE: validate_bodies,
    subjects.BACKTEST: st.one_of(backtest_bodies, sweep_bodies), subjects.SCREEN: screen_bodies,
    "jobs.execute": execute_bodies, "jobs.backtest": st.one_of(backtest_bodies, sweep_bodies),
}


def generate(strategy, count: int) -> list[dict]:
    out: list[dict] = []

    @settings(max_examples=count, database=None, derandomize=True, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(body):
        out.append(body)

    collect()
    return out


def encodings(body: dict) -> list[tuple[bytes, dict]]:
    """The body as JSON (NaN/Infinity literals where present, as many encoders write them) and
    as msgpack (where it has a msgpack form: integers past 64 bits have none)."""
    out = [(json.dumps(body, allow_nan=True).encode(), {"Content-Type": subjects.JSON})]
    try:
        out.append((msgspec.msgpack.encode(body), {"Content-Type": subjects.MSGPACK}))
    except (OverflowError, TypeError, RecursionError):
        pass
    return out


def verdict(data: bytes, headers: dict) -> tuple[str, str]:
    """(code or "success", message) of a reply."""
    if headers.get("Content-Type") == subjects.MSGPACK:
        reply = msgspec.msgpack.decode(data)
    else:
        reply = json.loads(data)
    error = reply.get("error")
    if error is None:
        assert reply.get("success") is True or reply.get("valid") is True, reply
        return "success", ""
    return error.get("code"), error.get("message") or ""


async def test_no_client_input_on_any_request_type_is_answered_internal(nc):
    problems: list[str] = []
    tally: dict[str, dict[str, int]] = {}
    gate = asyncio.Semaphore(24)
    inbox = f"_INBOX.clientinput.{uuid.uuid4().hex}"
    job_replies: dict[str, asyncio.Future] = {}

    async def on_job_reply(msg):
        future = job_replies.get(msg.subject)
        if future is not None and not future.done():
            future.set_result(msg)

    sub = await nc.subscribe(f"{inbox}.>", cb=on_job_reply)
    js = nc.jetstream(timeout=10)

    async def send(target: str, data: bytes, headers: dict, body: dict) -> None:
        async with gate:
            try:
                if target.startswith("jobs."):
                    reply_to = f"{inbox}.{uuid.uuid4().hex}"
                    job_replies[reply_to] = asyncio.get_running_loop().create_future()
                    await js.publish(f"{subjects.JOBS}.{target[5:]}", data, headers={
                        **headers, "Nats-Msg-Id": f"ci-{uuid.uuid4().hex}", subjects.JOB_REPLY_HEADER: reply_to})
                    msg = await asyncio.wait_for(job_replies[reply_to], 45)
                else:
                    msg = await nc.request(target, data, timeout=45, headers=headers)
            except Exception as exc:  # noqa: BLE001 - no reply is a failure of the property
                problems.append(f"{target}: no reply ({type(exc).__name__}) to {data[:200]!r}")
                return
        code, message = verdict(msg.data, {"Content-Type": (msg.headers or {}).get("Content-Type")})
        tally.setdefault(target, {}).setdefault(code, 0)
        tally[target][code] += 1
        if code == "success":
            return
        if code not in CODES or not message:
            problems.append(f"{target}: unclear error {code!r} {message!r}")
        elif code == ErrorCode.INTERNAL:
            problems.append(f"{target}: INTERNAL ({message}) for {data[:300]!r}")

    sends = []
    for target, strategy in KINDS.items():
        for body in KNOWN[target] + generate(strategy, EXAMPLES):
            for data, headers in encodings(body):
                sends.append(send(target, data, headers, body))
    await asyncio.gather(*sends)
    await sub.unsubscribe()
    print(f"\n[client input] {len(sends)} bodies; answers by request type and code: {tally}")
    assert problems == [], "\n".join(problems[:15])
    assert set(tally) == set(KINDS)


# -- the reported findings, one behaviour each, on every path -----------------------------------
async def _answer(nc, target: str, body: dict) -> dict:
    if target.startswith("jobs."):
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        await nc.jetstream().publish(f"{subjects.JOBS}.{target[5:]}", json.dumps(body).encode(), headers={
            "Nats-Msg-Id": f"ci-{uuid.uuid4().hex}", subjects.JOB_REPLY_HEADER: inbox})
        msg = await sub.next_msg(timeout=30)
    else:
        msg = await nc.request(target, json.dumps(body).encode(), timeout=30)
    return json.loads(msg.data)


PATHS = {
    "execute": (subjects.EXECUTE, {"code": QUICK, "bars": _bars()}),
    "backtest": (subjects.BACKTEST, {"code": VECTOR, "bars": _bars()}),
    "screen": (subjects.SCREEN, {"code": CLASSIFY, "symbols": ["NOSUCH1"]}),
    "execute job": ("jobs.execute", {"code": QUICK, "bars": _bars()}),
    "backtest job": ("jobs.backtest", {"code": VECTOR, "bars": _bars()}),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("value", [2**70, 10**30])
async def test_a_parameter_past_64_bits_is_an_invalid_request_naming_it_on_every_path(nc, path, value):
    target, base = PATHS[path]
    reply = await _answer(nc, target, {**base, "parameters": {"n": value}})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "parameters.n" in reply["error"]["message"] and "64 bits" in reply["error"]["message"]


@pytest.mark.parametrize("target", [subjects.BACKTEST, "jobs.backtest"])
@pytest.mark.parametrize("value", [2**70, 10**30])
async def test_a_grid_value_past_64_bits_is_an_invalid_request_naming_it(nc, target, value):
    reply = await _answer(nc, target, {"code": VECTOR, "bars": _bars(), "grid": {"fast": [3, value]}})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "grid.fast[1]" in reply["error"]["message"]


@pytest.mark.parametrize("path", ["execute", "backtest", "execute job", "backtest job"])
@pytest.mark.parametrize("stamp", [1e17, 9.3e15, -1e17])
async def test_one_bar_with_an_epoch_past_int64_nanoseconds_is_an_invalid_request(nc, path, stamp):
    target, base = PATHS[path]
    bars = _bars(1)
    bars["timestamp"] = [stamp]
    reply = await _answer(nc, target, {**base, "bars": bars})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "bars.timestamp[0] is out of range" in reply["error"]["message"]


async def test_twenty_bars_past_the_range_name_the_first_bar_not_a_repeat(nc):
    bars = _bars(20)
    bars["timestamp"] = [1e17 + i * 60_000 for i in range(20)]
    reply = await _answer(nc, subjects.EXECUTE, {"code": QUICK, "bars": bars})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "bars.timestamp[0] is out of range" in reply["error"]["message"]
    assert "repeats" not in reply["error"]["message"]


@pytest.mark.parametrize("field", ["start", "end"])
async def test_a_screen_range_past_int64_nanoseconds_is_an_invalid_request(nc, field):
    reply = await _answer(nc, subjects.SCREEN, {"code": CLASSIFY, "symbols": ["NOSUCH1"], field: 1e17})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "out of range" in reply["error"]["message"]
