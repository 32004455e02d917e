"""Reference-data accessors through NATS, as a client uses them: seed-style raw-data strategies on
strategy.v1.screen, point-in-time backtests (walked, vectorized, sweeps, durable jobs), and
attacks on what the accessors hand the strategy.

Every test loads its own symbols (a random tag), so the session's shared store holds no clashes.
"""

from __future__ import annotations

import uuid

import msgspec
import numpy as np
import pandas as pd
import pytest

from backtest.refdata_records import fact_from_row
from backtest.refdata_store import RefDataStore
from backtest.store import BarStore
from contracts import BarArrays, subjects
from node import jobs_client
from tests.support import DAY_MS, START_MS, columnar_bars, request_json

N = 120
PUBLISHED = "2024-02-15"  # the statement's publication day; bars are daily from 2024-01-01
FIRST_VISIBLE = (pd.Timestamp(PUBLISHED) - pd.Timestamp("2024-01-01")).days + 1  # bar of 2024-02-16


def arrays(seed: int, drift: float = 0.0) -> BarArrays:
    cols = columnar_bars(N, seed=seed)
    close = np.asarray(cols["close"]) * np.exp(drift * np.arange(N))
    ts = np.asarray(cols["timestamp"], dtype=np.int64) * 1_000_000
    return BarArrays.from_numpy(ts, open=close, high=close * 1.01, low=close * 0.99, close=close,
                                volume=np.asarray(cols["volume"]))


def facts(kind: str, rows: list[dict]):
    return [fact_from_row(kind, row, "test") for row in rows]


@pytest.fixture(scope="module")
async def world(nc) -> dict:
    """Three stocks (two in one sector), an index, and their reference data."""
    tag = uuid.uuid4().hex[:6].upper()
    cheap, pricey, energy, index = f"CH{tag}", f"PR{tag}", f"EN{tag}", f"IX{tag}"
    sector = f"Tech{tag}"
    bars = BarStore(nc.jetstream())
    await bars.load(cheap, "1d", arrays(1, 0.004))
    await bars.load(pricey, "1d", arrays(2, -0.004))
    await bars.load(energy, "1d", arrays(3, 0.0))
    await bars.load(index, "1d", arrays(4, 0.001))
    store = RefDataStore(nc.jetstream())
    await store.register_indices([index], "1d")
    await store.load_securities([
        {"symbol": cheap, "name": "Cheap Co", "exchange": "NYSE", "sector": sector, "industry": "Software",
         "currency": "USD", "lot_size": 1},
        {"symbol": pricey, "name": "Pricey Co", "exchange": "NASDAQ", "sector": sector, "industry": "Chips",
         "currency": "USD", "lot_size": 1},
        {"symbol": energy, "name": "Energy Co", "exchange": "NYSE", "sector": f"Energy{tag}", "industry": "Oil",
         "currency": "USD", "lot_size": 100},
    ])
    await store.load_facts("fundamentals", facts("fundamentals", [
        {"symbol": cheap, "known_date": "2024-01-10", "pe_ratio": 30, "pb_ratio": 4},
        {"symbol": cheap, "known_date": "2024-03-10", "pe_ratio": 11, "pb_ratio": 1.5},
        {"symbol": pricey, "known_date": "2024-01-10", "pe_ratio": 45, "pb_ratio": 9},
        {"symbol": energy, "known_date": "2024-01-10", "pe_ratio": 9, "pb_ratio": 5},
    ]))
    await store.load_facts("earnings", facts("earnings", [
        {"symbol": cheap, "period": "2023Q4", "report_date": "2024-02-01", "eps_actual": 1.30, "eps_estimate": 1.00},
        {"symbol": pricey, "period": "2023Q4", "report_date": "2024-02-01", "eps_actual": 0.90, "eps_estimate": 1.00},
        {"symbol": energy, "period": "2023Q4", "report_date": "2024-02-01", "eps_actual": 1.02, "eps_estimate": 1.00},
    ]))
    await store.load_facts("statements", facts("statements", [
        {"symbol": cheap, "statement_type": "income", "period_end": "2023-12-31", "published": PUBLISHED,
         "revenue": 1000, "net_income": 100},
        {"symbol": cheap, "statement_type": "income", "period_end": "2023-12-31", "published": "2024-04-01",
         "revenue": 900, "net_income": 80},  # restated later
    ]))
    return {"cheap": cheap, "pricey": pricey, "energy": energy, "index": index, "sector": sector, "tag": tag}


async def screen(nc, code: str, symbols: list[str], **extra) -> dict:
    reply = await request_json(nc, subjects.SCREEN, {"code": code, "symbols": symbols, "timeframe": "1d", **extra},
                               timeout=60)
    assert reply["success"] is True, reply["error"]
    return reply


def rows(reply: dict) -> dict[str, dict]:
    return {r["symbol"]: r for r in reply["results"]}


# -- the seed-style strategies -------------------------------------------------------------------

RSI = '''
def rsi(close, n=14):
    delta = close.diff()
    up = delta.clip(lower=0).ewm(alpha=1 / n, adjust=False).mean()
    down = (-delta.clip(upper=0)).ewm(alpha=1 / n, adjust=False).mean()
    return 100 - 100 / (1 + up / down)


def classify_symbol(symbol):
    close = get_price_data(symbol, "1d", days=90)["close"]
    value = float(rsi(close).iloc[-1])
    return {"rsi": round(value, 6), "oversold": value < 50}
'''


async def test_a_custom_rsi_over_get_price_data_matches_the_same_rsi_on_the_stored_bars(nc, world):
    symbols = [world["cheap"], world["pricey"]]
    reply = await screen(nc, RSI, symbols)
    for symbol, seed, drift in ((world["cheap"], 1, 0.004), (world["pricey"], 2, -0.004)):
        bars = arrays(seed, drift)
        close = pd.Series(bars.column("close"), index=pd.to_datetime(bars.column("timestamp"), utc=True))
        close = close[close.index > close.index[-1] - pd.Timedelta(days=90)]
        delta = close.diff()
        up = delta.clip(lower=0).ewm(alpha=1 / 14, adjust=False).mean()
        down = (-delta.clip(upper=0)).ewm(alpha=1 / 14, adjust=False).mean()
        expected = float((100 - 100 / (1 + up / down)).iloc[-1])
        assert rows(reply)[symbol]["result"]["rsi"] == pytest.approx(expected, abs=1e-5)
    assert rows(reply)[world["pricey"]]["result"]["oversold"] is True  # falling all along
    assert rows(reply)[world["cheap"]]["result"]["oversold"] is False


VALUE = '''
def classify_symbol(symbol):
    f = get_fundamental_data(symbol, ["pe_ratio", "pb_ratio"])
    return f["pe_ratio"] < 15 and f["pb_ratio"] < 3
'''


async def test_a_value_screen_over_fundamentals_passes_the_cheap_symbols(nc, world):
    reply = await screen(nc, VALUE, [world["cheap"], world["pricey"], world["energy"]])
    assert reply["passed"] == [world["cheap"]]


async def test_a_value_screen_with_an_end_sees_only_the_fundamentals_known_by_then(nc, world):
    reply = await screen(nc, VALUE, [world["cheap"]], end="2024-03-09")
    assert reply["passed"] == []  # the cheap figures came out on 2024-03-10
    reply = await screen(nc, VALUE, [world["cheap"]], end="2024-03-10")
    assert reply["passed"] == [world["cheap"]]


SURPRISE = '''
def classify_symbol(symbol):
    last = get_earnings_data(symbol, quarters=1)
    return float(last["eps_surprise_pct"].iloc[-1]) > 5
'''


async def test_an_earnings_surprise_screen_passes_the_symbols_that_beat_by_more_than_5_percent(nc, world):
    reply = await screen(nc, SURPRISE, [world["cheap"], world["pricey"], world["energy"]])
    assert reply["passed"] == [world["cheap"]]


CLASSIFY = '''
def classify_symbol(symbol):
    info = get_security_info(symbol)
    pe = get_fundamental_data(symbol, "pe_ratio")["pe_ratio"]
    surprise = get_earnings_data(symbol, 1)["eps_surprise_pct"].iloc[-1]
    index = get_market_indices(params["index"], days=60)[params["index"]]["close"]
    mine = get_price_data(symbol, days=60)["close"]
    excess = mine.iloc[-1] / mine.iloc[0] - index.iloc[-1] / index.iloc[0]
    log(info["name"], info["exchange"], info["lot_size"], round(pe, 1), round(float(surprise), 1))
    return bool(pe < 20 and surprise > 0 and excess > 0)
'''


async def test_a_classify_symbol_over_security_info_fundamentals_earnings_and_an_index_runs_via_screen(nc, world):
    reply = await screen(nc, CLASSIFY, [world["cheap"], world["pricey"], world["energy"]],
                         parameters={"index": world["index"]})
    assert all(r["error"] is None for r in reply["results"]), reply["results"]
    assert reply["passed"] == [world["cheap"]]
    assert f"{world['cheap']}: Cheap Co NYSE 1 11.0 30.0" in reply["logs"]
    assert f"{world['energy']}: Energy Co NYSE 100 9.0 2.0" in reply["logs"]


async def test_sector_data_aggregates_the_members_of_the_security_masters_sector(nc, world):
    code = '''
def classify_symbol(symbol):
    sector = get_security_info(symbol)["sector"]
    s = get_sector_data(sector)
    return {"members": int(s["members"].iloc[-1]), "last_return": float(s["return"].iloc[-1])}
'''
    reply = await screen(nc, code, [world["cheap"]])
    result = rows(reply)[world["cheap"]]["result"]
    a, b = arrays(1, 0.004).column("close"), arrays(2, -0.004).column("close")
    assert result["members"] == 2  # pricey's bars were fetched although the screen named only cheap
    assert result["last_return"] == pytest.approx(((a[-1] / a[-2] - 1) + (b[-1] / b[-2] - 1)) / 2)


async def test_volume_data_and_vectorized_operation_and_lagged_history_run_in_a_screen(nc, world):
    code = '''
def classify_symbol(symbol):
    v = get_volume_data(symbol, days=10)
    lagged = get_historical_data(symbol, "1d", 5, 1)
    doubled = vectorized_operation(lagged["close"], "multiply", 2)
    return {"rows": len(v), "dv": bool((v["dollar_volume"] > 0).all()), "lagged": len(lagged),
            "last": str(lagged.index[-1].date()), "doubled": float(doubled.iloc[-1] / lagged["close"].iloc[-1])}
'''
    reply = await screen(nc, code, [world["cheap"]])
    assert rows(reply)[world["cheap"]]["result"] == {
        "rows": 10, "dv": True, "lagged": 5, "doubled": 2.0,
        "last": str((pd.Timestamp(START_MS, unit="ms") + pd.Timedelta(days=N - 2)).date())}


async def test_missing_reference_data_is_a_runtime_error_naming_what_is_missing(nc, world):
    code = 'def classify_symbol(symbol):\n    return get_fundamental_data(symbol, ["roe"])\n'
    reply = await screen(nc, code, [world["cheap"]])
    error = rows(reply)[world["cheap"]]["error"]
    assert error["code"] == "RUNTIME_ERROR"
    assert error["message"] == (f"DataUnavailable: no roe for {world['cheap']}; available: pb_ratio, pe_ratio")
    code = 'def classify_symbol(symbol):\n    return get_security_info("NOPE" + symbol)\n'
    error = rows(await screen(nc, code, [world["cheap"]]))[world["cheap"]]["error"]
    assert f"no security info for NOPE{world['cheap']}" in error["message"]


# -- point in time in backtests ------------------------------------------------------------------

SEES_STATEMENT = '''
def strategy(data):
    try:
        st = get_financial_statements(SYMBOL, "income", 4)
    except LookupError:
        return "HOLD"
    return "BUY" if st["revenue"].iloc[-1] == 1000 else "SELL"
'''


def backtest_body(world: dict, code: str, **extra) -> dict:
    return {"code": code.replace("SYMBOL", repr(world["cheap"])),
            "source": {"symbol": world["cheap"], "timeframe": "1d"}, "timeout_ms": 9000,
            "options": {"max_trades": 0, "equity_points": 0}, **extra}


async def test_a_walked_backtest_cannot_read_a_statement_before_its_publication_date(nc, world):
    code = SEES_STATEMENT.replace('    return "BUY"', '    log(str(data.index[-1].date()), st["published"].iloc[-1])\n    return "BUY"')
    reply = await request_json(nc, subjects.BACKTEST, backtest_body(world, code), timeout=60)
    assert reply["success"] is True, reply["error"]
    # HOLD until the day after publication, then BUY on the original figure; the restatement
    # (published 2024-04-01) replaces it from the next day on, and reads SELL
    assert reply["signals_count"] == N - FIRST_VISIBLE
    days = pd.date_range("2024-02-16", "2024-04-29", freq="D")
    assert reply["logs"] == [f"{d.date()} {PUBLISHED if d <= pd.Timestamp('2024-04-01') else '2024-04-01'}"
                             for d in days]


async def test_a_vectorized_backtest_reads_reference_data_as_of_its_first_bar(nc, world):
    code = '''
import pandas as pd
def strategy(data):
    try:
        get_financial_statements(SYMBOL, "income", 4)
        return pd.Series(1, index=data.index)
    except LookupError:
        return pd.Series(0, index=data.index)
'''
    reply = await request_json(nc, subjects.BACKTEST, backtest_body(world, code), timeout=60)
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == 0  # published on day 46: unknown at the first bar


async def test_a_walked_backtest_cannot_read_a_later_bar_through_get_price_data(nc, world):
    code = '''
def strategy(data):
    mine = get_price_data(SYMBOL)
    idx = get_market_indices()
    later = len(mine) != len(data) or mine.index[-1] != data.index[-1] or idx[INDEX].index[-1] > data.index[-1]
    return "BUY" if later else "HOLD"
'''.replace("INDEX", repr(world["index"]))
    reply = await request_json(nc, subjects.BACKTEST, backtest_body(world, code), timeout=60)
    assert reply["success"] is True, reply["error"]
    assert reply["signals_count"] == 0


async def test_a_walked_sweep_cannot_read_a_statement_before_its_publication_date(nc, world):
    single = await request_json(nc, subjects.BACKTEST, backtest_body(world, SEES_STATEMENT), timeout=60)
    assert single["signals_count"] == N - FIRST_VISIBLE
    assert single["performance"]["total_trades"] == 1  # bought after publication, sold after the restatement
    reply = await request_json(nc, subjects.BACKTEST, backtest_body(world, SEES_STATEMENT, grid={"k": [1, 2, 3]}),
                               timeout=90)
    assert reply["success"] is True, reply["error"]
    assert [row["performance"] for row in reply["sweep"]] == [single["performance"]] * 3


async def test_a_walked_durable_job_cannot_read_a_statement_before_its_publication_date(nc, world):
    job_id = await jobs_client.submit(nc, "backtest", backtest_body(world, SEES_STATEMENT))
    result = await jobs_client.result(nc, job_id, wait=60)
    assert result is not None and result.success is True, result and result.error
    assert result.signals_count == N - FIRST_VISIBLE


# -- attacks: what the accessors hand over is plain data -------------------------------------------

async def test_reference_values_are_plain_data(nc, world):
    code = '''
def classify_symbol(symbol):
    info = get_security_info(symbol)
    f = get_fundamental_data(symbol)
    e = get_earnings_data(symbol)
    idx = get_market_indices()
    return {"info": sorted({type(v).__name__ for v in info.values()}),
            "fund": sorted({type(v).__name__ for v in f.values()}),
            "types": [type(info).__name__, type(f).__name__, type(e).__name__, type(idx).__name__],
            "earn": sorted({str(t) for t in e.dtypes})}
'''
    result = rows(await screen(nc, code, [world["cheap"]]))[world["cheap"]]["result"]
    assert set(result["info"]) <= {"str", "int", "float", "NoneType"}
    assert result["fund"] == ["float"]
    assert result["types"] == ["dict", "dict", "DataFrame", "dict"]
    assert set(result["earn"]) <= {"float64", "object", "str"}


async def test_changing_a_returned_value_does_not_change_what_the_next_call_sees(nc, world):
    code = '''
def classify_symbol(symbol):
    info = get_security_info(symbol)
    info["sector"] = "poisoned"
    f = get_fundamental_data(symbol)
    f["pe_ratio"] = -1.0
    e = get_earnings_data(symbol)
    e["eps_actual"] = 0.0
    e.loc[e.index[0], "period"] = "poisoned"
    st = get_financial_statements(symbol)
    st["revenue"] = 0
    return [get_security_info(symbol)["sector"], get_fundamental_data(symbol)["pe_ratio"],
            float(get_earnings_data(symbol)["eps_actual"].iloc[-1]), get_earnings_data(symbol)["period"].iloc[0],
            float(get_financial_statements(symbol)["revenue"].iloc[-1])]
'''
    result = rows(await screen(nc, code, [world["cheap"]]))[world["cheap"]]["result"]
    assert result == [world["sector"], 11.0, 1.3, "2023Q4", 900.0]


#: reaching from an accessor (or what it returns) toward the closures, globals and objects
#: behind it; written with getattr and a built name, so the runtime guards (not the compiler's
#: refusal of `_` names, tested elsewhere) must stop them
ATTACKS = {
    "closure": ("get_fundamental_data", "__closure__"),
    "globals": ("get_security_info", "__globals__"),
    "wrapped": ("get_financial_statements", "__wrapped__"),
    "self": ("get_earnings_data", "__self__"),
    "code": ("get_market_indices", "__code__"),
    "defaults": ("get_sector_data", "__defaults__"),
    "dict of a frame": ("get_earnings_data(symbol)", "__dict__"),
    "frame internals": ("get_earnings_data(symbol)", "_mgr"),
    "a dict's class": ("get_security_info(symbol)", "__class__"),
    "volume closure": ("get_volume_data", "__closure__"),
    "operation globals": ("vectorized_operation", "__globals__"),
    "history closure": ("get_historical_data", "__closure__"),
    "index frame internals": ("get_market_indices()[params['index']]", "_mgr"),
    "sector frame dict": ("get_sector_data(get_security_info(symbol)['sector'])", "__dict__"),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_an_accessor_leads_nowhere_near_the_node_through(nc, world, name):
    target, attribute = ATTACKS[name]
    head, tail = attribute[:3], attribute[3:]
    code = (f"def classify_symbol(symbol):\n    x = getattr({target}, {head!r} + {tail!r})\n"
            f"    return repr(x)[:200]\n")
    row = rows(await screen(nc, code, [world["cheap"]], parameters={"index": world["index"]}))[world["cheap"]]
    assert row["passed"] is False and row["error"] is not None, row
    assert row["error"]["code"] == "SECURITY_VIOLATION", row["error"]
    assert "RefBundle" not in row["error"]["message"] and "nats" not in row["error"]["message"].lower()


async def test_vectorized_operation_picks_operations_from_its_table_only(nc, world):
    code = ("def classify_symbol(symbol):\n"
            "    return vectorized_operation(get_price_data(symbol)['close'], '__glob' + 'als__').tolist()\n")
    error = rows(await screen(nc, code, [world["cheap"]]))[world["cheap"]]["error"]
    assert error["code"] == "RUNTIME_ERROR"
    assert error["message"].startswith("ValueError: operation must be one of add, subtract, multiply")


async def test_changing_returned_bars_does_not_change_what_the_next_call_sees(nc, world):
    code = """
def classify_symbol(symbol):
    sector = get_security_info(symbol)["sector"]
    before = [float(get_market_indices()[params["index"]]["close"].iloc[-1]),
              float(get_sector_data(sector)["return"].iloc[-1]), float(get_volume_data(symbol)["volume"].iloc[-1]),
              float(get_historical_data(symbol, "1d", 5, 1)["close"].iloc[-1])]
    get_market_indices()[params["index"]]["close"] = 0.0
    get_sector_data(sector)["return"] = 0.0
    v = get_volume_data(symbol)
    v["volume"] = 0.0
    h = get_historical_data(symbol, "1d", 5, 1)
    h["close"] = 0.0
    after = [float(get_market_indices()[params["index"]]["close"].iloc[-1]),
             float(get_sector_data(sector)["return"].iloc[-1]), float(get_volume_data(symbol)["volume"].iloc[-1]),
             float(get_historical_data(symbol, "1d", 5, 1)["close"].iloc[-1])]
    return before == after and 0.0 not in after
"""
    reply = await screen(nc, code, [world["cheap"]], parameters={"index": world["index"]})
    assert reply["passed"] == [world["cheap"]], reply["results"]


async def test_accessor_internals_named_in_the_source_are_refused_before_running(nc, world):
    code = "def classify_symbol(symbol):\n    return repr(get_fundamental_data.__closure__)\n"
    reply = await request_json(nc, subjects.SCREEN, {"code": code, "symbols": [world["cheap"]]}, timeout=30)
    assert reply["success"] is False and reply["error"]["code"] == "SECURITY_VIOLATION", reply


async def test_an_accessor_attack_in_a_backtest_fails_the_run(nc, world):
    code = "def strategy(data):\n    x = get_financial_statements.__closure__\n    return 'BUY'\n"
    reply = await request_json(nc, subjects.BACKTEST, backtest_body(world, code), timeout=60)
    assert reply["success"] is False
    assert reply["error"]["code"] in ("SECURITY_VIOLATION", "COMPILE_ERROR"), reply["error"]


async def test_only_code_that_names_a_reference_accessor_gets_reference_data(nc, world):
    code = '''
import strategy_api
def classify_symbol(symbol):
    fn = getattr(strategy_api, "get_" + "security_info")
    return fn(symbol)
'''
    row = rows(await screen(nc, code, [world["cheap"]]))[world["cheap"]]
    assert row["error"] is not None and "DataUnavailable" in row["error"]["message"], row


# -- execute -------------------------------------------------------------------------------------

PE_LOG = '''
def strategy(data):
    log(get_fundamental_data(SYMBOL, "pe_ratio")["pe_ratio"], get_security_info(SYMBOL)["name"])
    return "HOLD"
'''


async def test_execute_serves_reference_data_known_by_its_last_bar(nc, world):
    code = PE_LOG.replace("SYMBOL", repr(world["cheap"]))
    bars = columnar_bars(N, seed=1)
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": bars, "symbol": world["cheap"],
                                                      "timeframe": "1d"}, timeout=30)
    assert reply["success"] is True, reply["error"]
    assert reply["logs"] == ["11.0 Cheap Co"]
    early = {k: v[:60] for k, v in bars.items()}  # up to 2024-02-29: the 2024-03-10 figures are unknown
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": early, "symbol": world["cheap"],
                                                      "timeframe": "1d"}, timeout=30)
    assert reply["logs"] == ["30.0 Cheap Co"]


async def test_execute_of_a_classify_symbol_reads_the_index_and_earnings(nc, world):
    code = CLASSIFY.replace('params["index"]', repr(world["index"]))
    reply = await request_json(nc, subjects.EXECUTE, {"code": code, "bars": columnar_bars(N, seed=1),
                                                      "symbol": world["cheap"], "timeframe": "1d"}, timeout=30)
    assert reply["success"] is True, reply["error"]
    assert reply["logs"] == ["Cheap Co NYSE 1 11.0 30.0"]
    assert isinstance(reply["result"], bool)


async def test_a_screen_that_would_receive_too_many_reference_records_is_refused(nc, world, monkeypatch):
    from backtest import refdata_preload

    monkeypatch.setattr(refdata_preload, "MAX_BUNDLE_FACTS", 2)  # the session's node runs in this process
    reply = await request_json(nc, subjects.SCREEN, {"code": VALUE, "symbols": [world["cheap"], world["pricey"],
                                                                                world["energy"]]}, timeout=30)
    assert reply["success"] is False
    assert reply["error"]["code"] == "INVALID_REQUEST"
    assert reply["error"]["message"] == ("the run would receive 4 reference records (fundamentals) for 3 symbols; "
                                         "the limit is 2: name fewer symbols or set `end`")
