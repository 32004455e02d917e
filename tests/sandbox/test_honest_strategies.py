"""Honest strategies run unchanged through NATS, in every programming style, and compute exactly
what pandas / numpy / TA-Lib compute outside the sandbox.

Indicators: RSI, SMA crossover, Bollinger bands, MACD. Styles: a function returning one signal
string (the last bar), a function returning a per-bar series / array / list / frame, and script
style calling signal()/indicator()/log(). Every expected value is computed here, in the test
process, from the same bars.
"""

from __future__ import annotations

import datetime
import json
import math
import statistics
from typing import Any

import numpy as np
import pandas as pd
import pytest
import talib

from contracts import subjects
from contracts.bars import ns_to_iso
from tests.support import columnar_bars

BARS = columnar_bars(300, seed=11)
CLOSE = pd.Series(BARS["close"], dtype=float)
ARR = CLOSE.to_numpy()
INDEX = pd.DatetimeIndex(np.array(BARS["timestamp"], dtype="datetime64[ms]").astype("datetime64[ns]"),
                         name="timestamp").tz_localize("UTC")
STAMPS = [ns_to_iso(ms * 1_000_000) for ms in BARS["timestamp"]]


async def execute(nc, code: str, **fields: Any) -> dict:
    payload = {"code": code, "language": "python", "bars": BARS, "timeout_ms": 10_000, **fields}
    msg = await nc.request(subjects.EXECUTE, json.dumps(payload).encode(), timeout=30)
    reply = json.loads(msg.data)
    assert reply["success"] is True, reply["error"]
    return reply


def signals_of(reply: dict) -> list[tuple[str, str]]:
    return [(s["timestamp"], s["type"]) for s in reply["signals"]]


def per_bar(codes: np.ndarray) -> list[tuple[str, str]]:
    """The reply's signal list for a per-bar return: every bar whose code is not HOLD."""
    names = {1: "BUY", -1: "SELL"}
    return [(STAMPS[i], names[int(c)]) for i, c in enumerate(codes) if c != 0]


def last_bar(kind: str) -> list[tuple[str, str]]:
    return [(STAMPS[-1], kind)]


def assert_series(reply_values: list[float | None], expected: Any) -> None:
    got = np.array([np.nan if v is None else v for v in reply_values], dtype=float)
    want = np.asarray(expected, dtype=float)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10, equal_nan=True)


def wilder_rsi(close: pd.Series, period: int) -> pd.Series:
    delta = close.diff()
    gain = delta.where(delta > 0, 0.0).ewm(alpha=1 / period, adjust=False).mean()
    loss = (-delta.where(delta < 0, 0.0)).ewm(alpha=1 / period, adjust=False).mean()
    return 100 - 100 / (1 + gain / loss)


def crossings(series: np.ndarray, low: float, high: float) -> np.ndarray:
    """+1 where the series crosses `low` upwards, -1 where it crosses `high` downwards."""
    prev = np.concatenate([[np.nan], series[:-1]])
    with np.errstate(invalid="ignore"):
        up = (prev < low) & (series >= low)
        down = (prev > high) & (series <= high)
    return np.where(up, 1, np.where(down, -1, 0))


# ---------------------------------------------------------------------------------------------
# RSI
# ---------------------------------------------------------------------------------------------

RSI_STRING = """
import talib

def strategy(data):
    rsi = talib.RSI(data['close'].to_numpy(), timeperiod=params.get('period', 14))
    last = rsi[-1]
    if last < params['low']:
        return 'BUY'
    if last > params['high']:
        return 'SELL'
    return 'HOLD'
"""


@pytest.mark.parametrize("low,high", [(30, 70), (100, 100), (0, 0)], ids=["30-70", "always-buy", "always-sell"])
async def test_rsi_function_returning_a_string(nc, low, high):
    reply = await execute(nc, RSI_STRING, parameters={"period": 14, "low": low, "high": high})
    last = talib.RSI(ARR, timeperiod=14)[-1]
    expected = "BUY" if last < low else "SELL" if last > high else "HOLD"
    assert reply["result"] == expected
    assert signals_of(reply) == last_bar(expected)
    assert reply["signals"][0]["price"] == BARS["close"][-1]


RSI_VECTOR = """
import numpy as np

def strategy(data):
    period = params['period']
    delta = data['close'].diff()
    gain = delta.where(delta > 0, 0.0)
    loss = -delta.where(delta < 0, 0.0)
    avg_gain = gain.ewm(alpha=1 / period, adjust=False).mean()
    avg_loss = loss.ewm(alpha=1 / period, adjust=False).mean()
    rsi = 100 - 100 / (1 + avg_gain / avg_loss)
    indicator('rsi', rsi)
    prev = rsi.shift(1)
    buy = (prev < params['low']) & (rsi >= params['low'])
    sell = (prev > params['high']) & (rsi <= params['high'])
    return np.where(buy, 'BUY', np.where(sell, 'SELL', 'HOLD'))
"""


async def test_rsi_function_returning_a_per_bar_array(nc):
    reply = await execute(nc, RSI_VECTOR, parameters={"period": 14, "low": 40, "high": 60})
    rsi = wilder_rsi(CLOSE, 14)
    assert_series(reply["indicators"]["rsi"], rsi)
    expected = per_bar(crossings(rsi.to_numpy(), 40, 60))
    assert expected and {t for _, t in expected} == {"BUY", "SELL"}
    assert signals_of(reply) == expected
    assert reply["performance"]["buy_count"] == sum(t == "BUY" for _, t in expected)


RSI_SCRIPT = """
close = df['close']
rsi = pd.Series(talib.RSI(close.to_numpy(), 14), index=df.index)
indicator('rsi', rsi)
for i in range(1, len(df)):
    if rsi.iloc[i - 1] < 35 <= rsi.iloc[i]:
        signal('buy', f'rsi crossed up to {rsi.iloc[i]:.1f}', at=i)
    elif rsi.iloc[i - 1] > 65 >= rsi.iloc[i]:
        signal('sell', 'rsi crossed down', at=i)
log('last rsi', round(float(rsi.iloc[-1]), 4))
"""


async def test_rsi_script_with_signal_indicator_and_log(nc):
    reply = await execute(nc, RSI_SCRIPT)
    rsi = talib.RSI(ARR, 14)
    assert_series(reply["indicators"]["rsi"], rsi)
    codes = crossings(rsi, 35, 65)
    expected = per_bar(codes)
    assert expected and {t for _, t in expected} == {"BUY", "SELL"}
    assert signals_of(reply) == expected
    reasons = [s["reason"] for s in reply["signals"] if s["type"] == "BUY"]
    assert reasons == [f"rsi crossed up to {rsi[i]:.1f}" for i in np.flatnonzero(codes == 1)]
    assert reply["logs"] == [f"last rsi {round(float(rsi[-1]), 4)}"]


# ---------------------------------------------------------------------------------------------
# SMA crossover
# ---------------------------------------------------------------------------------------------

SMA_STRING = """
def strategy(data):
    fast = data['close'].rolling(params['fast']).mean()
    slow = data['close'].rolling(params['slow']).mean()
    return 'BUY' if fast.iloc[-1] > slow.iloc[-1] else 'SELL'
"""


async def test_sma_crossover_function_returning_a_string(nc):
    reply = await execute(nc, SMA_STRING, parameters={"fast": 10, "slow": 30})
    fast, slow = CLOSE.rolling(10).mean().iloc[-1], CLOSE.rolling(30).mean().iloc[-1]
    expected = "BUY" if fast > slow else "SELL"
    assert reply["result"] == expected
    assert signals_of(reply) == last_bar(expected)


SMA_SERIES = """
def strategy(data):
    fast = data['close'].rolling(params['fast']).mean()
    slow = data['close'].rolling(params['slow']).mean()
    above = fast > slow
    cross_up = above & ~above.shift(1, fill_value=False)
    cross_down = ~above & above.shift(1, fill_value=False)
    signals = pd.Series('HOLD', index=data.index)
    signals[cross_up] = 'BUY'
    signals.loc[cross_down] = 'SELL'
    indicator('fast', fast)
    indicator('slow', slow)
    return signals
"""


def sma_cross_codes(fast: pd.Series, slow: pd.Series) -> np.ndarray:
    above = fast > slow
    up = above & ~above.shift(1, fill_value=False)
    down = ~above & above.shift(1, fill_value=False)
    return np.where(up, 1, np.where(down, -1, 0))


async def test_sma_crossover_function_returning_a_series(nc):
    reply = await execute(nc, SMA_SERIES, parameters={"fast": 10, "slow": 30})
    fast, slow = CLOSE.rolling(10).mean(), CLOSE.rolling(30).mean()
    assert_series(reply["indicators"]["fast"], fast)
    assert_series(reply["indicators"]["slow"], slow)
    expected = per_bar(sma_cross_codes(fast, slow))
    assert len(expected) >= 4
    assert signals_of(reply) == expected


SMA_SCRIPT = """
import talib
import numpy as np

close = df['close'].to_numpy()
fast = talib.SMA(close, timeperiod=10)
slow = talib.EMA(close, timeperiod=30)
indicator('sma_10', fast)
indicator('ema_30', slow)
# trade only on days whose volume beats that weekday's average
busy = df['volume'] > df.groupby(df.index.day_of_week)['volume'].transform('mean')
diff = np.sign(fast - slow)
for i in range(1, len(close)):
    if diff[i - 1] < 0 < diff[i] and busy.iloc[i]:
        signal('BUY', 'sma over ema on a busy day', at=i)
    elif diff[i - 1] > 0 > diff[i] and busy.iloc[i]:
        signal('SELL', 'sma under ema on a busy day', at=i)
"""


async def test_sma_ema_crossover_script_with_groupby_filter(nc):
    reply = await execute(nc, SMA_SCRIPT)
    fast, slow = talib.SMA(ARR, timeperiod=10), talib.EMA(ARR, timeperiod=30)
    assert_series(reply["indicators"]["sma_10"], fast)
    assert_series(reply["indicators"]["ema_30"], slow)
    volume = pd.Series(BARS["volume"], index=INDEX)
    busy = (volume > volume.groupby(INDEX.day_of_week).transform("mean")).to_numpy()
    diff = np.sign(fast - slow)
    codes = np.zeros(len(ARR), dtype=int)
    for i in range(1, len(ARR)):
        if diff[i - 1] < 0 < diff[i] and busy[i]:
            codes[i] = 1
        elif diff[i - 1] > 0 > diff[i] and busy[i]:
            codes[i] = -1
    expected = per_bar(codes)
    assert expected
    assert signals_of(reply) == expected


# ---------------------------------------------------------------------------------------------
# Bollinger bands
# ---------------------------------------------------------------------------------------------

BOLLINGER_STRING = """
def strategy(data):
    close = data['close']
    mid = close.rolling(20).mean()
    std = close.rolling(20).std()
    k = params['k']
    if close.iloc[-1] < mid.iloc[-1] - k * std.iloc[-1]:
        return 'buy'
    if close.iloc[-1] > mid.iloc[-1] + k * std.iloc[-1]:
        return 'sell'
    return 'hold'
"""


@pytest.mark.parametrize("k", [2.0, 0.0, -50.0])
async def test_bollinger_function_returning_a_string(nc, k):
    reply = await execute(nc, BOLLINGER_STRING, parameters={"k": k})
    mid, std = CLOSE.rolling(20).mean().iloc[-1], CLOSE.rolling(20).std().iloc[-1]
    last = CLOSE.iloc[-1]
    expected = "buy" if last < mid - k * std else "sell" if last > mid + k * std else "hold"
    assert reply["result"] == expected
    assert signals_of(reply) == last_bar(expected.upper())


BOLLINGER_NUMERIC = """
import numpy as np
import talib

def strategy(data):
    close = data['close'].to_numpy()
    upper, middle, lower = talib.BBANDS(close, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
    indicator('bb_upper', upper)
    indicator('bb_middle', middle)
    indicator('bb_lower', lower)
    return np.where(close < lower, 1.0, np.where(close > upper, -1.0, 0.0))
"""


async def test_bollinger_function_returning_numeric_per_bar_signals(nc):
    reply = await execute(nc, BOLLINGER_NUMERIC)
    upper, middle, lower = talib.BBANDS(ARR, timeperiod=20, nbdevup=2, nbdevdn=2, matype=0)
    assert_series(reply["indicators"]["bb_upper"], upper)
    assert_series(reply["indicators"]["bb_middle"], middle)
    assert_series(reply["indicators"]["bb_lower"], lower)
    with np.errstate(invalid="ignore"):
        codes = np.where(ARR < lower, 1, np.where(ARR > upper, -1, 0))
    expected = per_bar(codes)
    assert expected
    assert signals_of(reply) == expected


BOLLINGER_SCRIPT = """
import math
import statistics
import datetime

close = df['close']
mid = close.rolling(20).mean()
std = close.rolling(20).std()
upper = mid + 2 * std
lower = mid - 2 * std
indicator('upper', upper)
indicator('lower', lower)
width = (upper - lower) / mid
indicator('width', width)
window = close.tail(20).tolist()
sigma = statistics.stdev(window)
annualised = sigma / statistics.mean(window) * math.sqrt(252)
cutoff = df.index[-1] - datetime.timedelta(days=30)
recent = close[close.index > cutoff]
last = close.iloc[-1]
if last < lower.iloc[-1]:
    signal('buy', 'under the lower band')
elif last > upper.iloc[-1]:
    signal('sell', 'over the upper band')
else:
    signal('hold', f'inside the bands, width {width.iloc[-1]:.4f}')
log('sigma', round(sigma, 6), 'annualised', round(annualised, 6))
log('recent bars', len(recent), 'since', cutoff.date().isoformat())
print('max width', round(float(width.max()), 6))
"""


async def test_bollinger_script_with_math_statistics_and_datetime(nc):
    reply = await execute(nc, BOLLINGER_SCRIPT)
    mid, std = CLOSE.rolling(20).mean(), CLOSE.rolling(20).std()
    upper, lower = mid + 2 * std, mid - 2 * std
    width = (upper - lower) / mid
    assert_series(reply["indicators"]["upper"], upper)
    assert_series(reply["indicators"]["lower"], lower)
    assert_series(reply["indicators"]["width"], width)
    window = CLOSE.tail(20).tolist()
    sigma = statistics.stdev(window)
    annualised = sigma / statistics.mean(window) * math.sqrt(252)
    cutoff = INDEX[-1] - datetime.timedelta(days=30)
    recent = int((INDEX > cutoff).sum())
    last = CLOSE.iloc[-1]
    if last < lower.iloc[-1]:
        expected = ("BUY", "under the lower band")
    elif last > upper.iloc[-1]:
        expected = ("SELL", "over the upper band")
    else:
        expected = ("HOLD", f"inside the bands, width {width.iloc[-1]:.4f}")
    (sig,) = reply["signals"]
    assert (sig["timestamp"], sig["type"], sig["reason"]) == (STAMPS[-1], *expected)
    assert reply["logs"] == [
        f"sigma {round(sigma, 6)} annualised {round(annualised, 6)}",
        f"recent bars {recent} since {cutoff.date().isoformat()}",
        f"max width {round(float(width.max()), 6)}",
    ]


# ---------------------------------------------------------------------------------------------
# MACD
# ---------------------------------------------------------------------------------------------

MACD_STRING = """
import talib

def strategy(data):
    macd, macd_signal, hist = talib.MACD(data['close'].to_numpy(), fastperiod=12, slowperiod=26, signalperiod=9)
    return 'BUY' if hist[-1] > 0 else 'SELL'
"""


async def test_macd_function_returning_a_string(nc):
    reply = await execute(nc, MACD_STRING)
    hist = talib.MACD(ARR, fastperiod=12, slowperiod=26, signalperiod=9)[2]
    expected = "BUY" if hist[-1] > 0 else "SELL"
    assert reply["result"] == expected
    assert signals_of(reply) == last_bar(expected)


MACD_LIST = """
def strategy(data, params):
    close = data['close']
    macd = close.ewm(span=params['fast'], adjust=False).mean() - close.ewm(span=params['slow'], adjust=False).mean()
    macd_signal = macd.ewm(span=params['signal'], adjust=False).mean()
    hist = macd - macd_signal
    indicator('macd', macd)
    indicator('macd_signal', macd_signal)
    turn = np.sign(hist).diff().fillna(0)
    out = []
    for value in turn.tolist():
        out.append('BUY' if value > 0 else 'SELL' if value < 0 else 'HOLD')
    return out
"""


async def test_macd_two_argument_function_returning_a_list(nc):
    reply = await execute(nc, MACD_LIST, parameters={"fast": 12, "slow": 26, "signal": 9})
    macd = CLOSE.ewm(span=12, adjust=False).mean() - CLOSE.ewm(span=26, adjust=False).mean()
    macd_signal = macd.ewm(span=9, adjust=False).mean()
    assert_series(reply["indicators"]["macd"], macd)
    assert_series(reply["indicators"]["macd_signal"], macd_signal)
    turn = np.sign(macd - macd_signal).diff().fillna(0).to_numpy()
    expected = per_bar(np.sign(turn).astype(int))
    assert len(expected) >= 4
    assert signals_of(reply) == expected


MACD_FRAME = """
def strategy(data):
    macd, macd_signal, hist = talib.MACD(data['close'].to_numpy())
    frame = pd.DataFrame({'hist': hist}, index=data.index)
    frame['signal'] = 'HOLD'
    frame.loc[(frame['hist'] > 0) & (frame['hist'].shift(1) <= 0), 'signal'] = 'BUY'
    frame.loc[(frame['hist'] < 0) & (frame['hist'].shift(1) >= 0), 'signal'] = 'SELL'
    return frame
"""


async def test_macd_function_returning_a_frame_with_a_signal_column(nc):
    reply = await execute(nc, MACD_FRAME)
    hist = pd.Series(talib.MACD(ARR)[2])
    codes = np.where((hist > 0) & (hist.shift(1) <= 0), 1, np.where((hist < 0) & (hist.shift(1) >= 0), -1, 0))
    expected = per_bar(codes)
    assert expected
    assert signals_of(reply) == expected


MACD_SCRIPT = """
from strategy import signal, indicator
import talib

macd, macd_signal, hist = talib.MACD(df['close'].to_numpy(), fastperiod=12, slowperiod=26, signalperiod=9)
indicator('macd', macd)
indicator('macd_signal', macd_signal)
indicator('macd_hist', hist)
for i in range(1, len(hist)):
    if hist[i - 1] <= 0 < hist[i]:
        signal('buy', 'histogram turned positive', at=i)
    elif hist[i - 1] >= 0 > hist[i]:
        signal('sell', 'histogram turned negative', at=i)
result = {'last_hist': round(float(hist[-1]), 10), 'bars': len(df), 'symbol': symbol}
"""


async def test_macd_script_with_imported_api_and_a_result(nc):
    reply = await execute(nc, MACD_SCRIPT, symbol="ACME")
    macd, macd_signal, hist = talib.MACD(ARR, fastperiod=12, slowperiod=26, signalperiod=9)
    assert_series(reply["indicators"]["macd"], macd)
    assert_series(reply["indicators"]["macd_signal"], macd_signal)
    assert_series(reply["indicators"]["macd_hist"], hist)
    prev = np.concatenate([[np.nan], hist[:-1]])
    with np.errstate(invalid="ignore"):
        codes = np.where((prev <= 0) & (hist > 0), 1, np.where((prev >= 0) & (hist < 0), -1, 0))
    expected = per_bar(codes)
    assert expected
    assert signals_of(reply) == expected
    assert reply["result"] == {"last_hist": round(float(hist[-1]), 10), "bars": 300, "symbol": "ACME"}


# ---------------------------------------------------------------------------------------------
# Everyday things honest code does that the process layer must not break
# ---------------------------------------------------------------------------------------------

PRINTING = """
import numpy as np
tail = df[['close', 'volume']].tail(3)
print(tail)
print(df['close'].describe().round(4).to_dict())
ratio = np.log(np.array([0.0, 1.0]))          # a RuntimeWarning: a line of the run's logs
with np.errstate(divide='ignore'):
    inf = np.array([1.0]) / 0.0
result = {'ratio': str(ratio[0]), 'inf': str(inf[0]), 'text': tail.to_string().splitlines()[0].split()}
"""


async def test_printing_frames_and_library_warnings_work(nc):
    reply = await execute(nc, PRINTING)
    frame = pd.DataFrame({"close": CLOSE.to_numpy(), "volume": BARS["volume"]}, index=INDEX)
    tail = frame.tail(3)
    assert reply["logs"] == repr(tail).splitlines() + [str(frame["close"].describe().round(4).to_dict()),
                                                       "RuntimeWarning: divide by zero encountered in log"]
    assert reply["result"] == {"ratio": "-inf", "inf": "inf", "text": ["close", "volume"]}


LINEAR_ALGEBRA = """
import numpy as np

rng = np.random.default_rng(5)
returns = rng.normal(0, 0.01, size=(500, 60))
corr = np.corrcoef(returns.T)
cov = np.cov(returns.T)
weights = np.linalg.solve(cov + np.eye(60) * 1e-4, np.ones(60))
weights = weights / weights.sum()
result = {'corr_sum': round(float(corr.sum()), 8), 'w0': round(float(weights[0]), 10),
          'gram_trace': round(float((returns.T @ returns).trace()), 8)}
"""


async def test_portfolio_linear_algebra_on_a_60_asset_matrix(nc):
    reply = await execute(nc, LINEAR_ALGEBRA)
    rng = np.random.default_rng(5)
    returns = rng.normal(0, 0.01, size=(500, 60))
    cov = np.cov(returns.T)
    weights = np.linalg.solve(cov + np.eye(60) * 1e-4, np.ones(60))
    weights = weights / weights.sum()
    assert reply["result"]["corr_sum"] == pytest.approx(round(float(np.corrcoef(returns.T).sum()), 8), rel=1e-9)
    assert reply["result"]["w0"] == pytest.approx(round(float(weights[0]), 10), rel=1e-8)
    assert reply["result"]["gram_trace"] == pytest.approx(round(float((returns.T @ returns).trace()), 8), rel=1e-9)
