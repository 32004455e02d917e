"""Reference-data accessors, run inside the sandbox over a `RefBundle` of plain data.

| accessor | returns |
|---|---|
| `get_security_info(symbol)` | dict: symbol, name, exchange, sector, industry, currency, lot_size (+ extra fields) |
| `get_fundamental_data(symbol, metrics=None)` | dict {metric: latest value known as of now} |
| `get_earnings_data(symbol, quarters=4)` | DataFrame, one row per quarter (index: report date), oldest first |
| `get_financial_statements(symbol, statement_type="income", periods=4)` | DataFrame, one row per period (index: period end), oldest first |
| `get_sector_data(sector, days=None)` | DataFrame per bar: equal-weight `return`, `close` (from 100), `members`, `advancers`, `volume`, `dollar_volume` |
| `get_market_indices(indices=None, days=None)` | dict {index: DataFrame of bars} |

"As of now" is the clock: the bar being evaluated in a backtest or walk, the screen's `end`, or
everything stored for execute/screen without an end. A fact is visible from its `known` time on;
for a period reported more than once the latest version visible wins. Every value handed out is a
fresh copy; a missing symbol, metric, sector or index raises `DataUnavailable` naming it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from .refdata_bundle import RefBundle
from .refdata_records import STATEMENT_TYPES, Fact

__all__ = ["make_refdata_accessors", "REFDATA_ACCESSORS"]

REFDATA_ACCESSORS = frozenset({
    "get_security_info", "get_fundamental_data", "get_earnings_data", "get_financial_statements",
    "get_sector_data", "get_market_indices",
})
MAX_ROWS = 10_000


def _count(value: Any, name: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number, not {type(value).__name__}")
    if not 1 <= int(value) <= MAX_ROWS:
        raise ValueError(f"{name} must be between 1 and {MAX_ROWS}, not {int(value)}")
    return int(value)


def _names(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        if len(value) > 1_000:
            raise ValueError(f"at most 1000 {what} per call")
        return list(value)
    raise TypeError(f"{what} must be a name or a list of names")


def _shown(names: Any) -> str:
    names = sorted(names)
    return (", ".join(names[:20]) + (" ..." if len(names) > 20 else "")) or "none"


def make_refdata_accessors(
    bundle: RefBundle | None,
    clock: Callable[[], int | None],
    bars_of: Callable[[str, Any, Any], pd.DataFrame],
    unavailable: type[LookupError],
) -> dict[str, Callable[..., Any]]:
    """`bars_of(symbol, timeframe, days)` serves the (point-in-time) bars; `unavailable` is
    DataUnavailable (passed in, so this module and backtest.accessors share one class)."""
    bundle = bundle or RefBundle()
    securities = bundle.securities
    loaded = set(bundle.loaded)
    by_symbol: dict[tuple[str, str], list[Fact]] = {}
    for fact in sorted(bundle.facts, key=lambda f: f.known_ns):
        by_symbol.setdefault((fact.kind, fact.symbol), []).append(fact)

    def when() -> str:
        now = clock()
        if now is None:
            now = bundle.as_of_ns
        return "" if now is None else f" known by {pd.Timestamp(now, tz='UTC').isoformat()}"

    def visible(kind: str, symbol: Any) -> list[Fact]:
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be a string, not {type(symbol).__name__}")
        if kind not in loaded:
            raise unavailable(f"no {kind} were loaded for this run (the node fetches them when the "
                              f"strategy names the accessor)")
        now = clock()
        facts = by_symbol.get((kind, symbol), [])
        return facts if now is None else [f for f in facts if f.known_ns <= now]

    def latest_per_period(facts: list[Fact]) -> list[Fact]:
        latest: dict[str, Fact] = {}
        for fact in facts:  # sorted by known time: a restatement replaces the earlier version
            latest[fact.period] = fact
        return sorted(latest.values(), key=lambda f: (f.period, f.known_ns))

    def get_security_info(symbol: str) -> dict[str, Any]:
        """The security-master record of `symbol` (a fresh dict)."""
        if not isinstance(symbol, str):
            raise TypeError(f"symbol must be a string, not {type(symbol).__name__}")
        if "securities" not in loaded:
            raise unavailable("no security master was loaded for this run")
        record = securities.get(symbol)
        if record is None:
            raise unavailable(f"no security info for {symbol} in the security master")
        return dict(record)

    def get_fundamental_data(symbol: str, metrics: Any = None) -> dict[str, float | None]:
        """{metric: value}: for each metric its latest value known as of now."""
        wanted = _names(metrics, "metrics")
        facts = visible("fundamentals", symbol)
        if not facts:
            raise unavailable(f"no fundamentals for {symbol}{when()}")
        values: dict[str, float | None] = {}
        for fact in facts:
            for name, value in fact.values.items():
                if value is not None or name not in values:
                    values[name] = value
        if wanted is None:
            return values
        missing = [m for m in wanted if values.get(m) is None]
        if missing:
            raise unavailable(f"no {', '.join(missing[:10])} for {symbol}{when()}; "
                              f"available: {_shown(k for k, v in values.items() if v is not None)}")
        return {m: values[m] for m in wanted}

    def get_earnings_data(symbol: str, quarters: int = 4) -> pd.DataFrame:
        """The last `quarters` reported quarters (index: report date, oldest first) with
        eps/revenue actual and estimate and their surprise (actual - estimate, and in %)."""
        n = _count(quarters, "quarters", 4)
        facts = latest_per_period(visible("earnings", symbol))
        if not facts:
            raise unavailable(f"no earnings for {symbol}{when()}")
        facts = sorted(facts, key=lambda f: f.known_ns)[-n:]
        frame = pd.DataFrame([{"period": f.period, **f.values} for f in facts],
                             index=pd.DatetimeIndex([pd.Timestamp(f.known[:10], tz="UTC") for f in facts],
                                                    name="report_date"))
        for stem in ("eps", "revenue"):
            actual, estimate = f"{stem}_actual", f"{stem}_estimate"
            if actual in frame and estimate in frame:
                a = pd.to_numeric(frame[actual], errors="coerce")
                e = pd.to_numeric(frame[estimate], errors="coerce")
                frame[f"{stem}_surprise"] = a - e
                frame[f"{stem}_surprise_pct"] = (a - e) / e.abs().replace(0, np.nan) * 100.0
        return frame

    def get_financial_statements(symbol: str, statement_type: str = "income", periods: int = 4) -> pd.DataFrame:
        """The last `periods` statements of one type (index: period end, oldest first): one
        column per line item, and `published` (when that version became known)."""
        if not isinstance(statement_type, str):
            raise TypeError("statement_type must be a string")
        kind = statement_type.strip().lower().replace("-", "_").replace(" ", "_")
        kind = "cash_flow" if kind == "cashflow" else kind
        if kind not in STATEMENT_TYPES:
            raise ValueError(f"statement_type must be one of {', '.join(STATEMENT_TYPES)}, not {statement_type[:30]!r}")
        n = _count(periods, "periods", 4)
        facts = latest_per_period([f for f in visible("statements", symbol) if f.statement == kind])
        if not facts:
            raise unavailable(f"no {kind} statements for {symbol}{when()}")
        facts = facts[-n:]
        frame = pd.DataFrame([dict(f.values) for f in facts],
                             index=pd.DatetimeIndex([pd.Timestamp(f.period, tz="UTC") for f in facts], name="period_end"),
                             dtype=np.float64)
        frame = frame.dropna(axis=1, how="all")
        frame["published"] = [f.known for f in facts]
        return frame

    def get_sector_data(sector: str, days: float | None = None) -> pd.DataFrame:
        """Equal-weight performance of the sector's members (security master `sector` field)."""
        if not isinstance(sector, str):
            raise TypeError(f"sector must be a string, not {type(sector).__name__}")
        if "sectors" not in loaded:
            raise unavailable("no sector data was loaded for this run")
        names = {k.lower(): k for k in bundle.sectors}
        key = names.get(sector.strip().lower())
        if key is None:
            raise unavailable(f"no sector {sector[:60]!r}; sectors of this run: {_shown(bundle.sectors)}")
        closes, volumes = {}, {}
        for member in bundle.sectors[key]:
            try:
                bars = bars_of(member, None, days)
            except unavailable:
                continue
            if len(bars):
                closes[member] = bars["close"]
                volumes[member] = bars["volume"]
        if not closes:
            raise unavailable(f"no bars for any member of sector {key}{when()}")
        close = pd.DataFrame(closes).sort_index()
        volume = pd.DataFrame(volumes).reindex(close.index)
        returns = close.pct_change(fill_method=None)
        mean = returns.mean(axis=1, skipna=True).fillna(0.0)
        return pd.DataFrame({
            "return": mean,
            "close": 100.0 * (1.0 + mean).cumprod(),
            "members": close.notna().sum(axis=1).astype(np.int64),
            "advancers": (returns > 0).sum(axis=1).astype(np.int64),
            "volume": volume.sum(axis=1, min_count=1).fillna(0.0),
            "dollar_volume": (volume * close).sum(axis=1, min_count=1).fillna(0.0),
        }, index=close.index)

    def get_market_indices(indices: Any = None, days: float | None = None) -> dict[str, pd.DataFrame]:
        """{index: bars} for the named indices (default: every index loaded for this run)."""
        if "indices" not in loaded:
            raise unavailable("no market indices were loaded for this run")
        names = _names(indices, "indices")
        names = list(bundle.indices) if names is None else names
        out = {}
        for name in names:
            if name not in bundle.indices:
                raise unavailable(f"no market index {name[:60]!r}; loaded indices: {_shown(bundle.indices)}")
            out[name] = bars_of(name, None, days)
        return out

    return {
        "get_security_info": get_security_info,
        "get_fundamental_data": get_fundamental_data,
        "get_earnings_data": get_earnings_data,
        "get_financial_statements": get_financial_statements,
        "get_sector_data": get_sector_data,
        "get_market_indices": get_market_indices,
    }
