"""The client converts every bars shape a Python user holds into the right wire times.

Each shape is sent through NATS to the session's node; a script strategy marks every bar with a
signal, and the signals' timestamps must equal the input times (as UTC ISO-8601).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from contracts import ns_to_iso
from node.client import as_bars

N = 12
# Hourly bars across the 2024-03-10 US daylight-saving change: a tz-aware index must convert
# each bar with its own offset.
START = pd.Timestamp("2024-03-10T03:00:00Z")
UTC_TIMES = pd.date_range(START, periods=N, freq="h")  # tz-aware UTC
EXPECTED = [ns_to_iso(int(t.value)) for t in UTC_TIMES]
EPOCH_S = [int(t.timestamp()) for t in UTC_TIMES]
EPOCH_MS = [s * 1000 for s in EPOCH_S]
PRICES = {
    "open": [100.0 + i for i in range(N)],
    "high": [101.0 + i for i in range(N)],
    "low": [99.0 + i for i in range(N)],
    "close": [100.5 + i for i in range(N)],
    "volume": [1000.0 + i for i in range(N)],
}
MARK_EVERY_BAR = "for i in range(len(df)):\n    signal('buy', at=i)\n"


def naive_index(unit: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(UTC_TIMES.tz_convert(None)).as_unit(unit)


def with_index(index) -> pd.DataFrame:
    return pd.DataFrame(PRICES, index=index)


def with_column(name: str, values) -> pd.DataFrame:
    return pd.DataFrame({name: values, **PRICES})


def rows(times) -> list[dict]:
    return [{"timestamp": t, **{k: v[i] for k, v in PRICES.items()}} for i, t in enumerate(times)]


def read_csv_the_readme_way(tmp_path) -> pd.DataFrame:
    path = tmp_path / "bars.csv"
    with_column("timestamp", [t.strftime("%Y-%m-%d %H:%M:%S") for t in UTC_TIMES]).to_csv(path, index=False)
    return pd.read_csv(path, parse_dates=["timestamp"]).set_index("timestamp")


def structured_array() -> np.ndarray:
    dtype = [("timestamp", "datetime64[ms]")] + [(k, "f8") for k in PRICES]
    out = np.empty(N, dtype=dtype)
    out["timestamp"] = np.array(EPOCH_MS, dtype="datetime64[ms]")
    for k, v in PRICES.items():
        out[k] = v
    return out


SHAPES = {
    "index-ns-naive": lambda tmp: with_index(naive_index("ns")),
    "index-us-naive": lambda tmp: with_index(naive_index("us")),
    "index-ms-naive": lambda tmp: with_index(naive_index("ms")),
    "index-s-naive": lambda tmp: with_index(naive_index("s")),
    "index-us-utc": lambda tmp: with_index(UTC_TIMES.as_unit("us")),
    "index-ns-new-york": lambda tmp: with_index(UTC_TIMES.tz_convert("America/New_York").as_unit("ns")),
    "index-s-tokyo": lambda tmp: with_index(UTC_TIMES.tz_convert("Asia/Tokyo").as_unit("s")),
    "read-csv-parse-dates-set-index": read_csv_the_readme_way,
    "column-timestamp-datetime64": lambda tmp: with_column("timestamp", naive_index("us")),
    "column-Date-tz-aware": lambda tmp: with_column("Date", UTC_TIMES.tz_convert("Europe/Berlin")),
    "column-datetime-iso-strings": lambda tmp: with_column("datetime", EXPECTED),
    "column-time-epoch-ms": lambda tmp: with_column("time", EPOCH_MS),
    "column-timestamp-epoch-s": lambda tmp: with_column("timestamp", EPOCH_S),
    "rows-aware-datetime": lambda tmp: rows([t.to_pydatetime() for t in UTC_TIMES]),
    "rows-naive-datetime": lambda tmp: rows([t.to_pydatetime().replace(tzinfo=None) for t in UTC_TIMES]),
    "rows-mixed-offsets-datetime": lambda tmp: rows(
        [t.tz_convert("America/New_York" if i % 2 else "UTC").to_pydatetime() for i, t in enumerate(UTC_TIMES)]),
    "rows-pd-timestamp": lambda tmp: rows(list(UTC_TIMES)),
    "rows-pd-timestamp-naive": lambda tmp: rows(list(naive_index("ns"))),
    "rows-iso-strings": lambda tmp: rows(EXPECTED),
    "rows-iso-with-offset": lambda tmp: rows([t.tz_convert("America/New_York").isoformat() for t in UTC_TIMES]),
    "rows-epoch-ms": lambda tmp: rows(EPOCH_MS),
    "rows-epoch-s-float": lambda tmp: rows([float(s) for s in EPOCH_S]),
    "columns-datetime64-s": lambda tmp: {"timestamp": np.array(EPOCH_S, dtype="datetime64[s]"), **PRICES},
    "columns-datetime64-ns": lambda tmp: {"timestamp": np.array(EPOCH_S, dtype="datetime64[s]").astype("datetime64[ns]"),
                                          **{k: np.array(v) for k, v in PRICES.items()}},
    "columns-epoch-ms-lists": lambda tmp: {"timestamp": EPOCH_MS, **PRICES},
    "columns-series": lambda tmp: {"timestamp": pd.Series(UTC_TIMES), **{k: pd.Series(v) for k, v in PRICES.items()}},
    "numpy-structured-datetime64-ms": lambda tmp: structured_array(),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
async def test_every_bars_shape_reaches_the_strategy_with_its_own_times(client, shape, tmp_path):
    result = await client.execute(MARK_EVERY_BAR, bars=SHAPES[shape](tmp_path))
    assert result.success, result.error
    assert [s.timestamp for s in result.signals] == EXPECTED
    assert [s.price for s in result.signals] == PRICES["close"]


@pytest.mark.parametrize("shape", ["index-us-naive", "rows-pd-timestamp", "column-timestamp-datetime64"])
async def test_every_bars_shape_backtests_with_its_own_times(client, shape, tmp_path):
    code = "def strategy(data):\n    return ['BUY'] + ['HOLD'] * (len(data) - 2) + ['SELL']\n"
    result = await client.backtest(code, bars=SHAPES[shape](tmp_path))
    assert result.success, result.error
    assert result.bars == N
    trade = result.performance.trades[0]
    assert (trade.entry_time, trade.exit_time) == (EXPECTED[0], EXPECTED[-1])


def test_sub_millisecond_times_travel_as_iso_text_not_rounded():
    times = pd.DatetimeIndex(naive_index("ns") + pd.to_timedelta(np.arange(N) * 1500, unit="us"))
    wire = as_bars(with_index(times))
    assert wire.timestamp[1] == ns_to_iso(int(times[1].value))
    assert wire.timestamp[1].endswith(".001500Z")


def test_whole_millisecond_times_travel_as_epoch_milliseconds():
    assert as_bars(with_index(naive_index("us"))).timestamp == EPOCH_MS


def test_an_explicit_unit_overrides_the_guess():
    wire = as_bars(rows([s * 1000 for s in EPOCH_S]), unit="ms")
    assert wire.timestamp == EPOCH_MS


def test_a_non_numeric_price_is_refused_naming_the_column_and_row():
    frame = with_index(naive_index("us"))
    frame["close"] = frame["close"].astype(object)
    frame.iloc[3, frame.columns.get_loc("close")] = "abc"
    with pytest.raises(ValueError, match=r"row 3: close is 'abc', not a finite number"):
        as_bars(frame)


def test_an_unparseable_time_is_refused_naming_the_row_and_value():
    times = list(EXPECTED)
    times[5] = "yesterday"
    with pytest.raises(ValueError, match=r"row 5: time 'yesterday' is not a date/time"):
        as_bars(rows(times))


def test_a_frame_without_time_is_refused_saying_what_is_missing():
    with pytest.raises(ValueError, match="DatetimeIndex or one of the columns timestamp, date"):
        as_bars(pd.DataFrame(PRICES))


def test_a_missing_close_column_is_refused_naming_it():
    with pytest.raises(ValueError, match="no close column"):
        as_bars({"timestamp": EPOCH_MS, **{k: v for k, v in PRICES.items() if k != "close"}})


def test_columns_of_different_lengths_are_refused_naming_them():
    with pytest.raises(ValueError, match="different lengths: timestamp=12, open=11"):
        as_bars({"timestamp": EPOCH_MS, **PRICES, "open": PRICES["open"][:-1]})


def test_a_row_that_is_not_a_dict_is_refused_naming_it():
    with pytest.raises(ValueError, match="row 1 is a list"):
        as_bars([rows(EXPECTED)[0], [1, 2, 3]])


def test_unsorted_times_are_refused_before_sending():
    shuffled = rows(EXPECTED)
    shuffled[2], shuffled[3] = shuffled[3], shuffled[2]
    with pytest.raises(ValueError, match="row 3 is earlier than row 2"):
        as_bars(shuffled)


async def test_connect_with_no_server_fails_fast_when_asked_and_logs_one_line_per_attempt(caplog):
    import logging
    import time

    from node.client import connect
    from node.embedded import free_port

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="node.client"), pytest.raises(Exception) as exc:
        await connect(f"nats://127.0.0.1:{free_port()}", max_reconnect_attempts=1, reconnect_time_wait=0.1)
    assert time.monotonic() - started < 2.0
    assert type(exc.value).__name__ == "NoServersError"
    lines = [r.getMessage() for r in caplog.records if r.name == "node.client"]
    assert lines and all(m.startswith("NATS connection error: ") and "\n" not in m for m in lines)
