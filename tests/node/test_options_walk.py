"""Every backtest option either applies or is refused, in every mode and request type.

The walk goes through NATS as a client would: for each mode (native, backtesting_py), each
field of BacktestOptions (read from the contract, so a new option cannot escape the walk) and
each request type (a single backtest, an inline sweep, a sweep by reference that fans out over
strategy.v1.backtest.point, and a request straight to strategy.v1.backtest.point), the option is
set to a value other than its default. The reply must then either be INVALID_REQUEST naming the
option and the mode, or differ from the same request without the option. Nothing is silently
ignored.
"""

from __future__ import annotations

import uuid

import msgspec
import pytest

from backtest.store import BarStore
from contracts import BacktestOptions, Bars, from_columns, subjects
from tests.support import columnar_bars, request_json

SMA = (
    "import numpy as np\n"
    "def strategy(data, params):\n"
    "    fast = data['close'].rolling(params.get('fast', 5)).mean()\n"
    "    slow = data['close'].rolling(params.get('slow', 20)).mean()\n"
    "    return np.sign(fast - slow)\n"
)

# A value other than the default for every option; the walk fails on an option missing here.
CHANGED = {
    "mode": None,  # the walk's other axis
    "initial_cash": 5_000.0,
    "allow_short": True,
    "fill": "next_open",
    "commission_rate": 0.01,
    "commission_fixed": 5.0,
    "slippage_rate": 0.01,
    "fractional": False,
    "position_size": 0.5,
    "stop_loss_pct": 1.0,
    "take_profit_pct": 2.0,
    "risk_free_rate": 0.05,
    "periods_per_year": 12.0,
    "max_trades": 1,
    "equity_points": 3,
    "fractional_unit": 0.01,
    "per_bar": True,
}
MODES = ["native", "backtesting_py"]
KINDS = ["single", "inline-sweep", "stored-sweep", "point"]
GRID = {"fast": [3, 5]}


def gapped_bars(n: int) -> dict:
    """Bars whose open gaps away from the previous close (so next-open fills differ)."""
    bars = columnar_bars(n, seed=5)
    bars["open"] = [round(o * (1.004 if i % 2 else 0.996), 4) for i, o in enumerate(bars["open"])]
    bars["high"] = [max(h, o) for h, o in zip(bars["high"], bars["open"])]
    bars["low"] = [min(lo, o) for lo, o in zip(bars["low"], bars["open"])]
    return bars


BARS = gapped_bars(300)


def test_the_walk_covers_every_option_of_the_contract():
    assert set(CHANGED) == {f.name for f in msgspec.structs.fields(BacktestOptions)}
    defaults = BacktestOptions()
    for name, value in CHANGED.items():
        if value is not None:
            assert getattr(defaults, name) != value, name


@pytest.fixture(scope="module")
async def stored(nc):
    symbol = "OW" + uuid.uuid4().hex[:8].upper()
    await BarStore(nc.jetstream()).load(symbol, "1d", from_columns(msgspec.convert(BARS, Bars)))
    return symbol


def payload(kind: str, symbol: str, options: dict) -> tuple[str, dict]:
    body: dict = {"code": SMA, "options": options}
    if kind == "stored-sweep":
        body["source"] = {"symbol": symbol, "timeframe": "1d"}
    else:
        body["bars"] = BARS
    if kind != "single":
        body["grid"] = GRID
    return (subjects.BACKTEST_POINT if kind == "point" else subjects.BACKTEST), body


def outcome(reply: dict):
    """What a reply says, timing and node aside."""
    if reply.get("sweep"):
        return sorted((msgspec.json.encode(r["parameters"]), msgspec.json.encode(r["performance"]),
                       msgspec.json.encode(r["error"])) for r in reply["sweep"])
    return reply["performance"], reply["error"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
async def test_every_option_applies_or_is_refused_naming_it_and_the_mode(nc, stored, mode, kind):
    subject, base = payload(kind, stored, {"mode": mode})
    baseline = await request_json(nc, subject, base, timeout=60)
    assert baseline["error"] is None, baseline["error"]
    silent, refused, applied = [], [], []
    for name, value in CHANGED.items():
        if value is None:
            continue
        _, body = payload(kind, stored, {"mode": mode, name: value})
        reply = await request_json(nc, subject, body, timeout=60)
        error = reply["error"]
        if error is not None:
            assert error["code"] == "INVALID_REQUEST", (name, error)
            assert f"options.{name}" in error["message"] and repr(mode) in error["message"], (name, error)
            refused.append(name)
        elif outcome(reply) == outcome(baseline):
            silent.append(name)
        else:
            applied.append(name)
    assert silent == [], f"silently ignored in mode {mode} ({kind}): {silent}"
    assert applied  # the walk exercised something


@pytest.mark.parametrize("mode", MODES)
async def test_compat_mode_refuses_exactly_the_options_it_cannot_honour(nc, mode):
    expected = {"backtesting_py": {"fill", "periods_per_year"}, "native": {"fractional_unit"}}[mode]
    refused = set()
    for name, value in CHANGED.items():
        if value is None:
            continue
        reply = await request_json(nc, subjects.BACKTEST,
                                   {"code": SMA, "bars": BARS, "options": {"mode": mode, name: value}},
                                   timeout=60)
        if reply["error"] is not None:
            refused.add(name)
    assert refused == expected


async def test_sweeps_refuse_trade_lists_curves_and_per_bar_output(nc):
    for name in ("max_trades", "equity_points", "per_bar"):
        reply = await request_json(nc, subjects.BACKTEST,
                                   {"code": SMA, "bars": BARS, "grid": GRID, "options": {name: CHANGED[name]}},
                                   timeout=60)
        assert reply["error"]["code"] == "INVALID_REQUEST"
        assert f"options.{name} is not available in a sweep" in reply["error"]["message"]


async def test_rank_by_without_a_grid_is_refused(nc):
    reply = await request_json(nc, subjects.BACKTEST, {"code": SMA, "bars": BARS, "rank_by": "cagr"})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "rank_by applies to a sweep" in reply["error"]["message"]


async def test_a_misspelt_option_is_refused_naming_it(nc):
    reply = await request_json(nc, subjects.BACKTEST,
                               {"code": SMA, "bars": BARS, "options": {"positon_size": 0.5}})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "positon_size" in reply["error"]["message"]


async def test_fractional_unit_without_fractional_sizing_is_refused(nc):
    reply = await request_json(nc, subjects.BACKTEST, {"code": SMA, "bars": BARS, "options": {
        "mode": "backtesting_py", "fractional": False, "fractional_unit": 0.001}})
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert "options.fractional_unit" in reply["error"]["message"]
