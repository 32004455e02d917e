"""What the node hands a sandbox child for the reference-data accessors: plain data only.

A child has no network and no filesystem, so everything a strategy may read is fetched by the
node before the run (backtest.refdata_preload) and travels inside the Job as this struct, msgpack
encoded: strings, numbers, lists and dicts. Nothing in it is an object of the node (no store, no
connection, no callable), so nothing a strategy reaches through an accessor leads back to the node.

Index series and sector members' bars travel with the other bars in `Job.universe`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .refdata_records import Fact

__all__ = ["RefBundle"]


class RefBundle(msgspec.Struct, array_like=True):
    securities: dict[str, dict[str, Any]] = {}  # symbol -> security-master record
    facts: list[Fact] = []  # fundamentals, earnings and statements of the symbols handed in
    indices: list[str] = []  # market indices whose bars are in the job's universe
    sectors: dict[str, list[str]] = {}  # sector -> member symbols (their bars in the universe)
    # The node's cutoff (a screen's `end`): facts known later were not fetched. A backtest cuts
    # further, at the bar being evaluated (sandbox.runtime).
    as_of_ns: int | None = None
    loaded: list[str] = []  # which data kinds the node looked up (to say what is missing)
