"""The node's side of the reference-data accessors: fetch what a run may read, before it runs.

A sandbox child has no network, so the node looks at the names the strategy's code uses and
fetches only what those accessors can serve, for the run's symbols:

* `get_security_info` → the symbols' security-master records;
* `get_fundamental_data` / `get_earnings_data` / `get_financial_statements` → their facts, known
  at or before `as_of_ns` (a screen's `end`; None: all);
* `get_sector_data` → the members (security master `sector`) of the symbols' sectors, at most
  `MAX_SECTOR_MEMBERS` per sector, and their bars;
* `get_market_indices` → every series marked as an index in this timeframe, and its bars.

Extra bars (indices, sector members) come back separately: the caller adds them to the job's
universe and counts them against its bar limit. The result is a `RefBundle` of plain data; more than
`MAX_BUNDLE_FACTS` records refuse the request with INVALID_REQUEST.
"""

from __future__ import annotations

import asyncio
import types
from typing import Awaitable, Callable, Iterable

from contracts import BarArrays, ErrorCode, ExecutionError

from .refdata_bundle import RefBundle
from .refdata_store import RefDataStore

__all__ = ["preload", "wants_refdata", "code_names", "MAX_SECTOR_MEMBERS", "MAX_INDICES"]

MAX_SECTOR_MEMBERS = 200
MAX_INDICES = 50
#: reference records one run may receive (every run of a screen receives all of them, like the
#: universe's bars): beyond it the request is refused, never cut short silently
MAX_BUNDLE_FACTS = 100_000
_FACT_ACCESSORS = {
    "get_fundamental_data": "fundamentals",
    "get_earnings_data": "earnings",
    "get_financial_statements": "statements",
}
_REF_NAMES = frozenset({*_FACT_ACCESSORS, "get_security_info", "get_sector_data", "get_market_indices"})


def code_names(code: types.CodeType) -> frozenset[str]:
    """Every name the code (and the functions nested in it) looks up: globals and attributes."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= code_names(const)
    return frozenset(names)


def wants_refdata(names: Iterable[str]) -> bool:
    return not _REF_NAMES.isdisjoint(names)


async def preload(
    store: RefDataStore,
    symbols: list[str],
    names: frozenset[str],
    timeframe: str,
    as_of_ns: int | None,
    bars: Callable[[str], Awaitable[BarArrays | None]],
) -> tuple[RefBundle | None, dict[str, BarArrays]]:
    """(bundle, extra bars by symbol); (None, {}) when the code names no reference accessor."""
    if not wants_refdata(names):
        return None, {}
    bundle = RefBundle(as_of_ns=as_of_ns)
    loaded: list[str] = []
    extra: dict[str, BarArrays] = {}
    gate = asyncio.Semaphore(16)
    symbols = list(dict.fromkeys(symbols))

    kinds = [kind for name, kind in _FACT_ACCESSORS.items() if name in names]
    if kinds:
        async def facts_of(symbol: str):
            async with gate:
                return await store.facts(symbol, kinds, as_of_ns)

        for facts in await asyncio.gather(*(facts_of(s) for s in symbols)):
            bundle.facts.extend(facts)
        if len(bundle.facts) > MAX_BUNDLE_FACTS:
            raise ExecutionError(ErrorCode.INVALID_REQUEST, (
                f"the run would receive {len(bundle.facts):,} reference records ({', '.join(kinds)}) for "
                f"{len(symbols):,} symbols; the limit is {MAX_BUNDLE_FACTS:,}: name fewer symbols or set `end`"))
        loaded += kinds

    if "get_security_info" in names or "get_sector_data" in names:
        if "get_sector_data" in names:
            master = await store.securities()
        else:
            async def one(symbol: str):
                async with gate:
                    return symbol, await store.security(symbol)

            master = {s: r for s, r in await asyncio.gather(*(one(s) for s in symbols)) if r is not None}
        bundle.securities = {s: master[s] for s in symbols if s in master}
        loaded.append("securities")
        if "get_sector_data" in names:
            wanted = {str(r.get("sector")) for r in bundle.securities.values() if r.get("sector")}
            for sector in sorted(wanted):
                members = sorted(s for s, r in master.items() if r.get("sector") == sector)[:MAX_SECTOR_MEMBERS]
                bundle.sectors[sector] = members
            loaded.append("sectors")

    if "get_market_indices" in names:
        marked = await store.indices()
        bundle.indices = sorted(s for s, frames in marked.items() if timeframe in frames)[:MAX_INDICES]
        loaded.append("indices")

    needed = {m for members in bundle.sectors.values() for m in members} | set(bundle.indices)
    needed -= set(symbols)

    async def fetch(symbol: str) -> None:
        async with gate:
            arrays = await bars(symbol)
        if arrays is not None and arrays.count:
            extra[symbol] = arrays

    await asyncio.gather(*(fetch(s) for s in sorted(needed)))
    # an index marked in this timeframe whose bars are gone (or were never loaded) is not served:
    # one such mark must not make every get_market_indices() of every tenant fail
    bundle.indices = [s for s in bundle.indices if s in extra or s in symbols]
    bundle.loaded = loaded
    return bundle, extra
