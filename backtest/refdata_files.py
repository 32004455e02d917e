"""Reference-data files (CSV, JSON, Parquet) into checked records.

* CSV: a header row, one record per row (`.csv`, also compressed, e.g. `.csv.gz`).
* JSON: a list of objects, an object with a `records` list, or JSON Lines (one object per line;
  `.jsonl`/`.ndjson`).
* Parquet (`.parquet`/`.pq`, needs pyarrow): one record per row.

Every error names the file, the row (0-based data row, and the line for CSV/JSON Lines) and the
column. Everything is read and checked before anything is stored.

`--kind indices` files are bars with a `symbol` column (or one index named with `symbol=`):
each index's rows become one series for BARS (see backtest.loader for the bar columns).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pandas as pd

from contracts import BarArrays

from .loader import frame_to_arrays
from .refdata_records import (FACT_KINDS, KINDS, Fact, RowError, check_symbol, fact_from_row,
                              security_from_row)

__all__ = ["read_rows", "read_facts", "read_securities", "read_indices", "MAX_ROWS"]

MAX_ROWS = 1_000_000


def _format(path: str) -> str:
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zip", ".zst"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    return "csv"


def _where(path: str, i: int, line_offset: int | None) -> str:
    return f"{path}: row {i}" + (f" (line {i + line_offset})" if line_offset is not None else "")


def _frame(path: str) -> tuple[pd.DataFrame, int | None]:
    """The file as a DataFrame of raw values, and the line of row 0 (None: no lines)."""
    fmt = _format(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow), "
                             f"or convert the file to CSV or JSON") from None
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input error
            raise ValueError(f"{path}: not a readable Parquet file ({type(exc).__name__})") from None
        return frame, None
    if fmt in ("json", "jsonl"):
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            raise ValueError(f"{path}: cannot read the file ({exc.strerror})") from None
        records: Any
        line_offset: int | None = None
        if fmt == "jsonl":
            records = []
            for n, line in enumerate(raw.decode("utf-8", "replace").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not JSON ({exc.msg})") from None
            line_offset = 1
        else:
            try:
                records = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ValueError(f"{path}: not a JSON file ({getattr(exc, 'msg', exc)})") from None
            if isinstance(records, dict) and isinstance(records.get("records"), list):
                records = records["records"]
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of objects (or an object with a `records` list)")
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise ValueError(f"{_where(path, i, None)}: expected an object, got {type(rec).__name__}")
            for key, value in rec.items():
                if isinstance(value, (dict, list)):
                    raise ValueError(f"{_where(path, i, None)}, column {key!r}: nested values are not "
                                     f"supported; use one flat object per record")
        if len(records) > MAX_ROWS:
            raise ValueError(f"{path}: {len(records):,} records; at most {MAX_ROWS:,} per file")
        return pd.DataFrame.from_records(records) if records else pd.DataFrame(), line_offset
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable CSV file: {exc}") from None
    return frame, 2


def read_rows(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """(where, row) for every data row; `where` names the file, the row and the line."""
    path = os.fspath(path)
    frame, line_offset = _frame(path)
    if frame.empty:
        raise ValueError(f"{path}: no records")
    if len(frame) > MAX_ROWS:
        raise ValueError(f"{path}: {len(frame):,} rows; at most {MAX_ROWS:,} per file")
    frame = frame.astype(object).where(pd.notna(frame), None)
    rows = frame.to_dict("records")
    return [(_where(path, i, line_offset), row) for i, row in enumerate(rows)]


def read_facts(path: str | os.PathLike, kind: str) -> list[Fact]:
    if kind not in FACT_KINDS:
        raise ValueError(f"--kind must be one of {', '.join(KINDS)}, not {kind!r}")
    facts: list[Fact] = []
    seen: dict[tuple, str] = {}
    for where, row in read_rows(path):
        fact = fact_from_row(kind, row, where)
        key = (fact.symbol, fact.statement, fact.period, fact.known)
        if key in seen:
            raise RowError(f"{where}: repeats {fact.symbol} {fact.statement + ' ' if fact.statement else ''}"
                           f"period {fact.period} known {fact.known} of {seen[key].split(': ', 1)[-1]}; "
                           f"one record per symbol, period and known date")
        seen[key] = where
        facts.append(fact)
    return facts


def read_securities(path: str | os.PathLike) -> list[dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    whereabouts: dict[str, str] = {}
    for where, row in read_rows(path):
        record = security_from_row(row, where)
        symbol = record["symbol"]
        if symbol in records:
            raise RowError(f"{where}, column 'symbol': {symbol} is already listed ({whereabouts[symbol].split(': ', 1)[-1]})")
        records[symbol] = record
        whereabouts[symbol] = where
    return list(records.values())


def read_indices(path: str | os.PathLike, symbol: str | None = None) -> dict[str, BarArrays]:
    """{index symbol: bars}. With `symbol`, the whole file is that one index's bars."""
    path = os.fspath(path)
    frame, line_offset = _frame(path)
    if frame.empty:
        raise ValueError(f"{path}: no records")
    sym_col = next((c for c in frame.columns if str(c).strip().lower() in ("symbol", "index")), None)
    if symbol is not None:
        check_symbol(symbol, "--symbol")
        if sym_col is not None:
            frame = frame.drop(columns=[sym_col])
        groups = {symbol: frame}
    else:
        if sym_col is None:
            raise ValueError(f"{path}: no symbol column; add one (e.g. SPY on every row) or name the index "
                             f"with --symbol")
        groups = {}
        for i, value in enumerate(frame[sym_col].tolist()):
            name = check_symbol(str(value).strip(), f"{_where(path, i, line_offset)}, column {sym_col!r}")
            groups.setdefault(name, [])
            groups[name].append(i)
        groups = {name: frame.iloc[rows].drop(columns=[sym_col]).reset_index(drop=True)
                  for name, rows in groups.items()}
    out: dict[str, BarArrays] = {}
    for name, part in groups.items():
        source = path if len(groups) == 1 else f"{path} [{name}; rows counted within {name}'s rows]"
        if line_offset is not None and len(groups) == 1:
            out[name] = frame_to_arrays(part, source=source, line_offset=line_offset)
        else:
            out[name] = frame_to_arrays(part, source=source)
    return out
