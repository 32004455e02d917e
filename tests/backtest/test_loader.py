"""Bar files into BarArrays (and into the store), and the text progress bar."""

from __future__ import annotations

import importlib.util
import io
import uuid

import nats
import pytest

from backtest.loader import ProgressBar, load_file, read_bars
from backtest.store import BarStore
from contracts import ns_to_iso

DAY_MS = 86_400_000
JAN1_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z


def write(tmp_path, text: str, name: str = "bars.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def iso(arrays) -> list[str]:
    return [ns_to_iso(int(t)) for t in arrays.column("timestamp")]


def test_csv_with_iso_dates_and_any_header_case(tmp_path):
    path = write(tmp_path, "Date,OPEN,High,low,Close,Volume\n"
                           "2024-01-01,1,2,0.5,1.5,100\n"
                           "2024-01-02,1.5,2.5,1,2,200\n")
    out = read_bars(path)
    assert iso(out) == ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]
    assert out.column("close").tolist() == [1.5, 2.0]
    assert out.column("volume").tolist() == [100.0, 200.0]


def test_csv_times_with_offsets_are_converted_to_utc(tmp_path):
    path = write(tmp_path, "timestamp,open,high,low,close\n"
                           "2024-01-01T09:30:00-05:00,1,1,1,1\n"
                           "2024-01-01 15:00:00Z,1,1,1,1\n")
    assert iso(read_bars(path)) == ["2024-01-01T14:30:00Z", "2024-01-01T15:00:00Z"]


def test_csv_with_epoch_milliseconds(tmp_path):
    path = write(tmp_path, "time,open,high,low,close,volume\n"
                           f"{JAN1_MS},1,1,1,1,0\n{JAN1_MS + DAY_MS},2,2,2,2,0\n")
    assert iso(read_bars(path)) == ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"]


def test_csv_with_epoch_seconds_is_recognised_by_magnitude(tmp_path):
    path = write(tmp_path, "timestamp,open,high,low,close\n"
                           f"{JAN1_MS // 1000},1,1,1,1\n{JAN1_MS // 1000 + 60},1,1,1,1\n")
    assert iso(read_bars(path)) == ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"]


def test_csv_with_integer_yyyymmdd_dates(tmp_path):
    path = write(tmp_path, "date,open,high,low,close\n20240102,1,1,1,1\n20240103,1,1,1,1\n")
    assert iso(read_bars(path)) == ["2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"]


def test_missing_volume_column_reads_as_zero(tmp_path):
    path = write(tmp_path, "datetime,open,high,low,close\n2024-01-01,1,1,1,1\n")
    assert read_bars(path).column("volume").tolist() == [0.0]


def test_unsorted_rows_are_rejected_naming_the_row(tmp_path):
    path = write(tmp_path, "date,open,high,low,close\n2024-01-02,1,1,1,1\n2024-01-01,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\) is earlier than row 0"):
        read_bars(path)


def test_duplicate_times_are_rejected_naming_the_row(tmp_path):
    path = write(tmp_path, "date,open,high,low,close\n"
                           "2024-01-01,1,1,1,1\n2024-01-02,1,1,1,1\n2024-01-02,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"row 2 \(line 4\) repeats the time of row 1"):
        read_bars(path)


def test_empty_price_is_rejected_naming_the_column_and_row(tmp_path):
    path = write(tmp_path, "date,open,high,low,close\n2024-01-01,1,1,1,1\n2024-01-02,1,1,1,\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\): close"):
        read_bars(path)


def test_non_numeric_volume_is_rejected(tmp_path):
    path = write(tmp_path, "date,open,high,low,close,volume\n2024-01-01,1,1,1,1,lots\n")
    with pytest.raises(ValueError, match=r"volume is 'lots'"):
        read_bars(path)


def test_unparseable_time_is_rejected_naming_the_row(tmp_path):
    path = write(tmp_path, "date,open,high,low,close\n2024-01-01,1,1,1,1\nsoon,1,1,1,1\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\): time 'soon'"):
        read_bars(path)


def test_missing_time_column_is_rejected(tmp_path):
    path = write(tmp_path, "when,open,high,low,close\n2024-01-01,1,1,1,1\n")
    with pytest.raises(ValueError, match="no time column"):
        read_bars(path)


def test_missing_price_column_is_rejected(tmp_path):
    path = write(tmp_path, "date,open,high,close\n2024-01-01,1,1,1\n")
    with pytest.raises(ValueError, match="no low column"):
        read_bars(path)


@pytest.mark.skipif(importlib.util.find_spec("pyarrow") is not None, reason="pyarrow is installed")
def test_parquet_without_pyarrow_says_how_to_install_it(tmp_path):
    path = write(tmp_path, "not really parquet", name="bars.parquet")
    with pytest.raises(ValueError, match="pip install pyarrow"):
        read_bars(path)


async def test_load_file_stores_the_file_and_is_idempotent(tmp_path, nats_url):
    rows = "".join(f"{JAN1_MS + i * DAY_MS},{i},{i},{i},{i},1\n" for i in range(30))
    path = write(tmp_path, "timestamp,open,high,low,close,volume\n" + rows)
    symbol = "L" + uuid.uuid4().hex[:8].upper()
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        first = await load_file(js, path, symbol, "1d")
        again = await load_file(js, path, symbol, "1d")
        out = await BarStore(js).replay(symbol, "1d")
    finally:
        await nc.close()
    assert (first.bars, again.bars) == (30, 0)
    assert out.column("close").tolist() == list(range(30))


def test_progress_bar_prints_quarters_when_not_a_terminal():
    stream = io.StringIO()
    bar = ProgressBar(100, "AAPL 1d", stream=stream)
    for done in range(0, 101, 10):
        bar(done, 100)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("AAPL 1d [") and lines[0].endswith("0/100")
    assert lines[-1].endswith("100.0% 100/100")
    assert len(lines) == 5  # 0%, 25%, 50%, 75%, 100%


def test_progress_bar_redraws_one_line_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    with ProgressBar(10, stream=stream) as bar:
        bar(10, 10)
    text = stream.getvalue()
    assert text.startswith("\r[") and text.endswith("100.0% 10/10\n")
    assert "\n" not in text[:-1]
