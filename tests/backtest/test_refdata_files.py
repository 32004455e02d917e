"""Reference-data files (CSV, JSON, JSON Lines, Parquet) into checked records, with errors that
name the file, the row and the column."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from backtest.refdata_files import read_facts, read_indices, read_securities
from backtest.refdata_records import RowError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples", "refdata")
DAY_NS = 86_400 * 10**9


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_example_files_read_cleanly():
    assert len(read_securities(os.path.join(EXAMPLES, "securities.csv"))) == 3
    assert len(read_facts(os.path.join(EXAMPLES, "fundamentals.csv"), "fundamentals")) == 12
    assert len(read_facts(os.path.join(EXAMPLES, "earnings.json"), "earnings")) == 12
    assert len(read_facts(os.path.join(EXAMPLES, "statements.csv"), "statements")) == 10
    indices = read_indices(os.path.join(EXAMPLES, "indices.csv"))
    assert sorted(indices) == ["QQQ", "SPY"] and indices["SPY"].count == 250


def test_a_date_only_known_date_counts_from_the_end_of_that_day(tmp_path):
    path = write(tmp_path, "f.csv", "symbol,known_date,pe_ratio\nAAA,2024-05-02,12.5\n")
    (fact,) = read_facts(path, "fundamentals")
    day = pd.Timestamp("2024-05-02", tz="UTC").value
    assert fact.known == "2024-05-02" and fact.known_ns == day + DAY_NS - 1
    assert fact.period == "2024-05-02" and fact.values == {"pe_ratio": 12.5}


def test_a_known_time_with_a_clock_time_counts_from_that_instant(tmp_path):
    path = write(tmp_path, "f.csv", "symbol,published,eps\nAAA,2024-05-02T21:30:00Z,1.5\n")
    (fact,) = read_facts(path, "fundamentals")
    assert fact.known_ns == pd.Timestamp("2024-05-02T21:30:00Z").value


def test_a_bad_number_names_the_row_the_line_and_the_column(tmp_path):
    path = write(tmp_path, "f.csv", "symbol,known_date,pe_ratio\nAAA,2024-05-02,12\nBBB,2024-05-02,twelve\n")
    with pytest.raises(RowError) as err:
        read_facts(path, "fundamentals")
    assert str(err.value) == f"{path}: row 1 (line 3), column 'pe_ratio': 'twelve' is not a number"


def test_a_missing_known_date_column_is_refused_naming_the_accepted_names(tmp_path):
    path = write(tmp_path, "e.csv", "symbol,period,eps_actual\nAAA,2024Q1,1.0\n")
    with pytest.raises(RowError, match=r"row 0 \(line 2\): no known-date column; name one of known_date, "):
        read_facts(path, "earnings")


def test_a_bad_date_names_its_column(tmp_path):
    path = write(tmp_path, "e.csv", "symbol,period,report_date,eps_actual\nAAA,2024Q1,soon,1.0\n")
    with pytest.raises(RowError, match=r"row 0 \(line 2\), column 'report_date': 'soon' is not a date"):
        read_facts(path, "earnings")


def test_earnings_need_a_period(tmp_path):
    path = write(tmp_path, "e.csv", "symbol,report_date,eps_actual\nAAA,2024-05-02,1.0\n")
    with pytest.raises(RowError, match="no period column"):
        read_facts(path, "earnings")


def test_a_statement_type_outside_income_balance_cash_flow_is_refused(tmp_path):
    path = write(tmp_path, "s.csv", "symbol,statement_type,period_end,published,revenue\nAAA,ratios,2024-03-31,2024-05-02,1\n")
    with pytest.raises(RowError, match=r"column 'statement_type': 'ratios' is not one of income, balance, cash_flow"):
        read_facts(path, "statements")


def test_a_repeated_record_is_refused_naming_both_rows(tmp_path):
    path = write(tmp_path, "f.csv", "symbol,known_date,period,pe\nAAA,2024-05-02,Q1,1\nAAA,2024-05-02,Q1,2\n")
    with pytest.raises(RowError, match=r"row 1 \(line 3\): repeats AAA period Q1 known 2024-05-02 of row 0"):
        read_facts(path, "fundamentals")


def test_a_bad_symbol_is_refused(tmp_path):
    path = write(tmp_path, "f.csv", "symbol,known_date,pe\nA/B,2024-05-02,1\n")
    with pytest.raises(RowError, match=r"column 'symbol': 'A/B' is not a symbol"):
        read_facts(path, "fundamentals")


def test_json_records_name_their_row_and_column(tmp_path):
    path = write(tmp_path, "e.json", json.dumps([
        {"symbol": "AAA", "period": "Q1", "report_date": "2024-05-02", "eps_actual": 1.0},
        {"symbol": "AAA", "period": "Q2", "report_date": "2024-08-02", "eps_actual": "n/a"},
    ]))
    with pytest.raises(RowError) as err:
        read_facts(path, "earnings")
    assert str(err.value) == f"{path}: row 1, column 'eps_actual': 'n/a' is not a number"


def test_json_lines_name_the_line(tmp_path):
    path = write(tmp_path, "e.jsonl",
                 '{"symbol": "AAA", "period": "Q1", "report_date": "2024-05-02", "eps_actual": 1.0}\n'
                 '{"symbol": "AAA", "period": "Q2", "report_date": "2024-08-02", "eps_actual": true}\n')
    with pytest.raises(RowError, match=r"row 1 \(line 2\), column 'eps_actual': True is not a number"):
        read_facts(path, "earnings")


def test_nested_json_values_are_refused(tmp_path):
    path = write(tmp_path, "s.json", json.dumps([{"symbol": "AAA", "name": {"en": "A"}}]))
    with pytest.raises(ValueError, match=r"row 0, column 'name': nested values are not supported"):
        read_securities(path)


try:
    import pyarrow  # noqa: F401
    HAVE_PYARROW = True
except ImportError:
    HAVE_PYARROW = False

#: pyarrow is the `parquet` extra of a loading machine, not installed with the node (see pyproject)
needs_pyarrow = pytest.mark.skipif(not HAVE_PYARROW, reason="pyarrow (the `parquet` extra) is not installed")


@pytest.mark.skipif(HAVE_PYARROW, reason="pyarrow is installed")
def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    path = write(tmp_path, "f.parquet", "PAR1")
    with pytest.raises(ValueError, match=r"f.parquet: reading Parquet needs pyarrow \(pip install pyarrow\)"):
        read_facts(path, "fundamentals")


@needs_pyarrow
def test_parquet_files_read_like_csv(tmp_path):
    path = str(tmp_path / "f.parquet")
    pd.DataFrame({"symbol": ["AAA", "BBB"], "known_date": pd.to_datetime(["2024-05-02", "2024-05-03"]),
                  "pe_ratio": [10.0, None], "shares": [100, 200]}).to_parquet(path)
    facts = read_facts(path, "fundamentals")
    assert [f.symbol for f in facts] == ["AAA", "BBB"]
    assert facts[1].values == {"pe_ratio": None, "shares": 200.0}


@needs_pyarrow
def test_parquet_errors_name_row_and_column(tmp_path):
    path = str(tmp_path / "s.parquet")
    pd.DataFrame({"symbol": ["AAA", "BBB"], "lot_size": [100, -5]}).to_parquet(path)
    with pytest.raises(RowError, match=r"s.parquet: row 1, column 'lot_size': -5 is not a positive whole number"):
        read_securities(path)


def test_securities_keep_the_standard_fields_and_extra_columns(tmp_path):
    path = write(tmp_path, "s.csv", "Symbol,Name,Sector,lot_size,country\nAAA,Alpha,Tech,100,US\n")
    (record,) = read_securities(path)
    assert record == {"symbol": "AAA", "name": "Alpha", "exchange": None, "sector": "Tech", "industry": None,
                      "currency": None, "lot_size": 100, "country": "US"}


def test_a_security_listed_twice_is_refused(tmp_path):
    path = write(tmp_path, "s.csv", "symbol,name\nAAA,A\nAAA,B\n")
    with pytest.raises(RowError, match=r"row 1 \(line 3\), column 'symbol': AAA is already listed \(row 0"):
        read_securities(path)


def test_an_index_file_with_one_index_takes_its_symbol_from_the_option(tmp_path):
    path = write(tmp_path, "i.csv", "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n2024-01-03,1,2,0.5,oops\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3\): close is 'oops'"):
        read_indices(path, "SPX")
    path = write(tmp_path, "j.csv", "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n")
    assert read_indices(path, "SPX")["SPX"].count == 1


def test_an_index_file_without_symbols_or_option_is_refused(tmp_path):
    path = write(tmp_path, "i.csv", "date,open,high,low,close\n2024-01-02,1,2,0.5,1.5\n")
    with pytest.raises(ValueError, match="no symbol column"):
        read_indices(path)


def test_an_empty_or_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_facts(str(tmp_path / "nope.csv"), "fundamentals")
    with pytest.raises(ValueError, match="the file is empty"):
        read_facts(write(tmp_path, "e.csv", ""), "fundamentals")
