"""Reference-data records: what one row of a fundamentals, earnings, statements or securities file
becomes, checked field by field with errors that name the row and the column.

Point-in-time facts (`Fact`): fundamentals, earnings and statements. Every fact carries `known`,
the time it became known (a report, filing or publication date). A date without a time means the
END of that day (UTC): a figure published on 2024-05-02 is visible to a bar stamped 2024-05-03,
not to the daily bar stamped 2024-05-02 (it may have come out after that day's close). A later
fact for the same period (a restatement) replaces the earlier one only from its own `known` on.

Securities (the security master) are plain metadata records, not point-in-time.

Row shape (columns matched case-insensitively):

* fundamentals: `symbol`, a known-date column, optional `period`; every other column is a metric
  (a number, or empty for "not reported").
* earnings: `symbol`, a known-date column (`report_date` ...), `period` (e.g. 2024Q1); number
  columns such as `eps_actual`, `eps_estimate`, `revenue_actual`, `revenue_estimate`.
* statements: `symbol`, `statement_type` (income, balance, cash_flow), `period_end`, a known-date
  column (`published` ...); every other column is a line item.
* securities: `symbol`, `name`, `exchange`, `sector`, `industry`, `currency`, `lot_size`; other
  columns are kept as extra fields (text or numbers).
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Iterable

import msgspec
import pandas as pd

__all__ = [
    "FACT_KINDS", "KINDS", "STATEMENT_TYPES", "KNOWN_COLUMNS", "Fact", "RowError", "fact_from_row",
    "security_from_row", "digest", "canonical", "check_symbol",
]

FACT_KINDS = ("fundamentals", "earnings", "statements")
KINDS = (*FACT_KINDS, "securities", "indices")
STATEMENT_TYPES = ("income", "balance", "cash_flow")
KNOWN_COLUMNS = ("known_date", "known", "published", "report_date", "filed", "filing_date", "as_of")
PERIOD_COLUMNS = ("period", "fiscal_period", "quarter", "period_end")
SECURITY_FIELDS = ("name", "exchange", "sector", "industry", "currency", "lot_size")
MAX_VALUES = 500  # metrics / line items per row
MAX_TEXT = 200
_SYMBOL_RE = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DATE_ONLY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$|^\d{8}$")
_DAY_NS = 86_400 * 1_000_000_000

_canonical = msgspec.json.Encoder(order="sorted")


class RowError(ValueError):
    """A bad value; `str()` names the file, the row (and line) and the column."""


class Fact(msgspec.Struct, kw_only=True, frozen=True):
    """One point-in-time record. `known_ns`: epoch ns from which the fact is visible."""

    kind: str
    symbol: str
    known: str  # as written (normalized ISO date or time)
    known_ns: int
    period: str
    statement: str = ""  # statements only: income, balance or cash_flow
    values: dict[str, float | None] = {}


def canonical(value: Any) -> bytes:
    """Deterministic JSON (sorted keys): equal records encode to equal bytes."""
    return _canonical.encode(value)


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:40]


def check_symbol(symbol: Any, where: str = "symbol") -> str:
    if not isinstance(symbol, str) or not 1 <= len(symbol) <= 64 or not _SYMBOL_RE.match(symbol):
        raise RowError(f"{where}: {str(symbol)[:70]!r} is not a symbol (1-64 of A-Z a-z 0-9 _ - and inner dots)")
    return symbol


def _blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def _text(value: Any, where: str, required: bool = True) -> str | None:
    if _blank(value):
        if required:
            raise RowError(f"{where} is empty")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise RowError(f"{where}: expected text, got {type(value).__name__}")
    text = str(value).strip()
    if len(text) > MAX_TEXT:
        raise RowError(f"{where} is longer than {MAX_TEXT} characters")
    return text


def _number(value: Any, where: str) -> float | None:
    if _blank(value):
        return None
    if isinstance(value, bool):
        raise RowError(f"{where}: {value!r} is not a number")
    if isinstance(value, str):
        text = value.strip().replace(",", "")
        try:
            number = float(text)
        except ValueError:
            raise RowError(f"{where}: {value[:40]!r} is not a number") from None
    elif isinstance(value, (int, float)) or hasattr(value, "__float__"):
        number = float(value)
    else:
        raise RowError(f"{where}: expected a number, got {type(value).__name__}")
    if not math.isfinite(number):
        raise RowError(f"{where}: {value!r} is not a finite number")
    return number


def _time(value: Any, where: str) -> tuple[str, int]:
    """(normalized text, epoch ns from which it counts as known)."""
    if _blank(value):
        raise RowError(f"{where} is empty")
    if isinstance(value, pd.Timestamp):
        stamp = value
        date_only = False
    else:
        text = str(value).strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and len(text.split(".")[0]) == 8:
            text = text.split(".")[0]  # 20240502 read as a number
        date_only = bool(_DATE_ONLY_RE.match(text))
        try:
            stamp = pd.Timestamp(text)
        except (ValueError, TypeError):
            raise RowError(f"{where}: {text[:40]!r} is not a date (use YYYY-MM-DD or ISO-8601)") from None
    if stamp is pd.NaT:
        raise RowError(f"{where} is not a date")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if date_only:
        return stamp.strftime("%Y-%m-%d"), int(stamp.value) + _DAY_NS - 1
    return stamp.isoformat(), int(stamp.value)


def _lookup(row: dict[str, Any], names: Iterable[str]) -> str | None:
    for name in names:
        if name in row:
            return name
    return None


def _lowered(row: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in row.items():
        name = str(key).strip().lower()
        if name in out:
            raise RowError(f"{where}: column {name!r} appears twice")
        out[name] = value
    return out


def fact_from_row(kind: str, row: dict[str, Any], where: str) -> Fact:
    """`where` is e.g. "file.csv: row 3 (line 5)"; errors read "<where>, column 'x': ..."."""
    if kind not in FACT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FACT_KINDS)}, not {kind!r}")
    cols = _lowered(row, where)
    col = lambda name: f"{where}, column {name!r}"  # noqa: E731
    if "symbol" not in cols:
        raise RowError(f"{where}: no symbol column")
    symbol = check_symbol(_text(cols["symbol"], col("symbol")), col("symbol"))
    known_col = _lookup(cols, KNOWN_COLUMNS)
    if known_col is None:
        raise RowError(f"{where}: no known-date column; name one of {', '.join(KNOWN_COLUMNS)} "
                       f"(the date the figure became public)")
    known, known_ns = _time(cols[known_col], col(known_col))
    statement = ""
    skip = {"symbol", known_col}
    if kind == "statements":
        st_col = _lookup(cols, ("statement_type", "statement"))
        if st_col is None:
            raise RowError(f"{where}: no statement_type column ({', '.join(STATEMENT_TYPES)})")
        statement = (_text(cols[st_col], col(st_col)) or "").lower().replace("-", "_").replace(" ", "_")
        if statement == "cashflow":
            statement = "cash_flow"
        if statement not in STATEMENT_TYPES:
            raise RowError(f"{col(st_col)}: {statement[:30]!r} is not one of {', '.join(STATEMENT_TYPES)}")
        skip.add(st_col)
    period_col = _lookup(cols, PERIOD_COLUMNS)
    if period_col is None:
        if kind != "fundamentals":
            raise RowError(f"{where}: no period column; name one of {', '.join(PERIOD_COLUMNS)}")
        period = known[:10]
    else:
        raw = cols[period_col]
        if period_col == "period_end" and not _blank(raw):
            period = _time(raw, col(period_col))[0][:10]
        else:
            period = _text(raw, col(period_col)) or ""
        skip.add(period_col)
    values: dict[str, float | None] = {}
    for name, raw in cols.items():
        if name in skip:
            continue
        if not _NAME_RE.match(name):
            raise RowError(f"{col(name)}: a column name is a letter or _ then up to 63 letters, digits or _")
        values[name] = _number(raw, col(name))
    if not values:
        raise RowError(f"{where}: no value columns (metrics, line items or eps_*)")
    if len(values) > MAX_VALUES:
        raise RowError(f"{where}: {len(values)} value columns; at most {MAX_VALUES}")
    return Fact(kind=kind, symbol=symbol, known=known, known_ns=known_ns, period=period,
                statement=statement, values=values)


def security_from_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    """A security-master record: plain JSON-safe dict with the standard fields (None if absent)."""
    cols = _lowered(row, where)
    col = lambda name: f"{where}, column {name!r}"  # noqa: E731
    if "symbol" not in cols:
        raise RowError(f"{where}: no symbol column")
    record: dict[str, Any] = {"symbol": check_symbol(_text(cols["symbol"], col("symbol")), col("symbol"))}
    for name in SECURITY_FIELDS:
        raw = cols.get(name)
        if name == "lot_size":
            number = _number(raw, col(name))
            if number is not None and (number <= 0 or number != int(number)):
                raise RowError(f"{col(name)}: {raw!r} is not a positive whole number")
            record[name] = None if number is None else int(number)
        else:
            record[name] = _text(raw, col(name), required=False)
    for name, raw in cols.items():
        if name in record:
            continue
        if not _NAME_RE.match(name):
            raise RowError(f"{col(name)}: a column name is a letter or _ then up to 63 letters, digits or _")
        if _blank(raw):
            record[name] = None
        elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
            record[name] = _number(raw, col(name))
        else:
            record[name] = _text(raw, col(name))
    if len(record) > MAX_VALUES:
        raise RowError(f"{where}: too many columns (at most {MAX_VALUES})")
    return record
