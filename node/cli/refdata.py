"""`strategy-node refdata load`: reference data for the raw-data accessors (registered by node.cli).

    strategy-node refdata load FILE --kind fundamentals|earnings|statements|securities|indices
        [--timeframe 1d] [--symbol SPY] [--json]

FILE is CSV, JSON (a list of objects, or JSON Lines) or Parquet; the columns of each kind are
described in backtest/refdata_records.py and the README. The whole file is read and checked
first (an error names the row and the column, and nothing is stored); then only records not
stored yet are written, so loading the same file again stores nothing. `indices` files are bars
(with a `symbol` column, or `--symbol` for a file of one index): stored in BARS under
`--timeframe` and marked as market indices.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

__all__ = ["register"]


def register(sub: Any) -> None:
    ref = sub.add_parser("refdata", help="load reference data (securities, fundamentals, earnings, "
                                         "statements, indices) for the raw-data accessors")
    ref_sub = ref.add_subparsers(dest="refdata_command", required=True, metavar="load",
                                 title="commands", help="load: store a CSV/JSON/Parquet file (idempotent)")
    p = ref_sub.add_parser("load", help="store a CSV/JSON/Parquet file of reference data (idempotent)")
    p.add_argument("file", help="CSV, JSON / JSON Lines, or Parquet")
    p.add_argument("--kind", required=True,
                   choices=["fundamentals", "earnings", "statements", "securities", "indices"],
                   help="what the file holds")
    p.add_argument("--timeframe", default="1d", help="indices only: the bars' timeframe (default 1d)")
    p.add_argument("--symbol", help="indices only: the index the whole file belongs to (else a symbol column)")
    p.add_argument("--url", help="NATS URL (default: $NATS_URL or nats://127.0.0.1:4222)")
    p.add_argument("--json", action="store_true", help="print what was stored as JSON")
    p.set_defaults(func=cmd_refdata_load)


async def cmd_refdata_load(args: argparse.Namespace) -> int:
    import nats.errors

    from backtest.refdata_files import read_facts, read_indices, read_securities
    from backtest.refdata_store import RefDataStore, StoreUnavailable

    from ..nats_auth import denied_subject
    from .connect import CliError, connect_jetstream, url_of

    kind = args.kind
    if args.symbol and kind != "indices":
        raise ValueError("--symbol applies to --kind indices only (other files carry a symbol column)")
    # Read and check everything before connecting: a bad row stores nothing.
    if kind == "indices":
        payload: Any = read_indices(args.file, args.symbol)
    elif kind == "securities":
        payload = read_securities(args.file)
    else:
        payload = read_facts(args.file, kind)
    denied: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_error(exc: Exception) -> None:
        subject = denied_subject(exc)  # the server refused a request of the load: say so now
        if subject and (RefDataStore.concerns(subject) or subject.startswith(("bars.", "$js.api"))) \
                and not denied.done():
            denied.set_result(subject)

    nc = await connect_jetstream(args, on_error)
    try:
        storing = asyncio.ensure_future(_store(nc, kind, payload, args.timeframe))
        await asyncio.wait((storing, denied), return_when=asyncio.FIRST_COMPLETED)
        if not storing.done():
            storing.cancel()
            raise CliError(f"NATS at {url_of(args)} refused {denied.result()!r} to this NATS user: check that it may "
                           f"load reference data (deploy/nats/permissions.conf grants it to `ingest`, connecting "
                           f"with NATS_INBOX_PREFIX=_INBOX_ingest)")
        summary = storing.result()
    except (nats.errors.TimeoutError, asyncio.TimeoutError, StoreUnavailable) as exc:
        # A JetStream request the server dropped (a user without permission) or did not answer;
        # not "no node is running": loading needs no node.
        raise CliError(f"NATS at {url_of(args)} did not answer the load's JetStream requests in time: check that "
                       f"this NATS user may load reference data (deploy/nats/permissions.conf grants it to "
                       f"`ingest`, connecting with NATS_INBOX_PREFIX=_INBOX_ingest)") from exc
    finally:
        await nc.drain()
    if args.json:
        sys.stdout.write(msgspec.json.encode(summary).decode() + "\n")
    else:
        unit = "bars" if kind == "indices" else "records"
        print(f"{kind}: {summary['records']:,} {unit} for {summary['symbols']:,} symbols read from {args.file}; "
              f"stored {summary['stored']:,} new, skipped {summary['skipped']:,} already stored")
    return 0


async def _store(nc: Any, kind: str, payload: Any, timeframe: str) -> dict[str, Any]:
    """Write the checked records; what was stored and skipped."""
    from backtest.refdata_store import RefDataStore
    from backtest.store import BarStore

    store = RefDataStore(nc.jetstream(), nc)
    if kind == "indices":
        bars = BarStore(nc.jetstream(), nc)
        reports = [await bars.load(symbol, timeframe, arrays) for symbol, arrays in payload.items()]
        marked = await store.register_indices(payload, timeframe)
        return {
            "kind": kind, "records": sum(a.count for a in payload.values()),
            "stored": sum(r.bars for r in reports), "skipped": sum(r.skipped_bars for r in reports),
            "symbols": len(payload), "indices_marked": marked,
        }
    if kind == "securities":
        return msgspec.structs.asdict(await store.load_securities(payload))
    return msgspec.structs.asdict(await store.load_facts(kind, payload))
