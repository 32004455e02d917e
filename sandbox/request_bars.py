"""A warm run's bars, decoded inside the sandbox worker from the request the client sent.

The node's event loop is one thread for every request it serves; the tenant's warm workers run
in parallel beside it. For a run in a warm worker the node therefore decodes only the request's
small fields (`ExecuteHead`, node/raw_execute.py) and hands the request's bytes as they arrived
(`Job.request`, JSON or msgpack) to the worker, which decodes them here with the same contract
decoder and the same bar checks the node applies to every other request: the whole
`ExecuteRequest` (every field and limit), the columnar or row bars to int64 nanoseconds and
float64 columns, strictly increasing times, at least one bar.

msgpack columns without a value per element: a msgpack array of float64 values is a run of
9-byte items (tag 0xcb, 8 bytes big-endian), so when every item of a column has that one tag
(or, for `timestamp`, every item is a 64-bit integer: 0xcf or 0xd3) the column is read with one
`np.frombuffer` over the bytes instead of a Python float per value. The request's other fields
are decoded with `ExecuteHead` (the same fields, types and limits as `ExecuteRequest`), the bars
object with the same field names and unknown-field refusal as `Bars`, and the numbers go through
the same conversion as `to_epoch_ns` / `from_columns`, so the arrays are bit for bit the ones the
full decode gives. Anything else (other tags, rows, a column too long, any check failing) takes
the full decode, which decides.

Any failure only says "refused": the node then works out the error the client gets with its own
checks on the same bytes (node/raw_execute.py), so every error code and message stays the one
the node gives for a request it decodes itself. Nothing here is trusted by the node beyond that
yes/no: the bars only ever feed the strategy's own run.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
import numpy as np

from contracts import BarArrays, ExecuteRequest, decode, first_out_of_order, from_columns, from_rows
from contracts.bars import MAX_EPOCH_MS, MIN_EPOCH_MS
from contracts.execute import Code, Id, MemoryMb, Parameters, TimeoutMs
from contracts.limits import MAX_BARS
from contracts.subjects import MSGPACK
from contracts.values import check_parameters


class RefusedRequest(Exception):
    """The request bytes did not decode, or their bars did not pass the node's checks."""


class ExecuteHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`ExecuteRequest` with its bars left undecoded (same fields, types and limits)."""

    code: Code
    language: Annotated[str, msgspec.Meta(max_length=32)] = "python"
    bars: msgspec.Raw = msgspec.Raw()
    market_data: msgspec.Raw = msgspec.Raw()
    symbol: Id = ""
    timeframe: Annotated[str, msgspec.Meta(max_length=16)] = ""
    parameters: Parameters = {}
    timeout_ms: TimeoutMs | None = None
    memory_mb: MemoryMb | None = None
    user_id: Id | None = None
    strategy_id: Id | None = None
    request_id: Id | None = None

    def __post_init__(self) -> None:
        check_parameters(self.parameters)


_ABSENT = (b"", b"null", b"\xc0")  # no value, JSON null, msgpack nil


def present(raw: msgspec.Raw) -> bool:
    return len(raw) > 4 or bytes(raw) not in _ABSENT


class _RawColumns(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`Bars` with each column left as its msgpack bytes."""

    timestamp: msgspec.Raw
    open: msgspec.Raw
    high: msgspec.Raw
    low: msgspec.Raw
    close: msgspec.Raw
    volume: msgspec.Raw = msgspec.Raw()


_HEAD = msgspec.msgpack.Decoder(ExecuteHead)
_COLUMNS = msgspec.msgpack.Decoder(_RawColumns)
_FLOAT64, _UINT64, _INT64 = 0xCB, 0xCF, 0xD3


def _items(raw: msgspec.Raw) -> tuple[int, memoryview] | None:
    """(count, the items' bytes) of a msgpack array, or None if `raw` is not one."""
    view = memoryview(raw)
    if not view:
        return None
    tag = view[0]
    if 0x90 <= tag <= 0x9F:
        return tag & 0x0F, view[1:]
    if tag == 0xDC and len(view) >= 3:
        return int.from_bytes(view[1:3], "big"), view[3:]
    if tag == 0xDD and len(view) >= 5:
        return int.from_bytes(view[1:5], "big"), view[5:]
    return None


def _column(raw: msgspec.Raw, tags: tuple[int, ...]) -> np.ndarray | None:
    """The array's values as float64 when every item is a 9-byte item with one of `tags`."""
    items = _items(raw)
    if items is None:
        return None
    count, body = items
    if count > MAX_BARS or len(body) != 9 * count:
        return None
    if count == 0:
        return np.empty(0, dtype=np.float64)
    cells = np.frombuffer(body, dtype=np.dtype([("tag", "u1"), ("value", "V8")]))
    tag = int(cells["tag"][0])
    if tag not in tags or not (cells["tag"] == tag).all():
        return None
    kind = {_FLOAT64: ">f8", _UINT64: ">u8", _INT64: ">i8"}[tag]
    return cells["value"].view(kind).astype(np.float64)


def _epoch_ns(millis: np.ndarray) -> np.ndarray | None:
    """`contracts.bars.to_epoch_ns` for numeric times already in float64 (None: a time it refuses)."""
    if not np.isfinite(millis).all() or ((millis < MIN_EPOCH_MS) | (millis >= MAX_EPOCH_MS)).any():
        return None
    whole = np.floor(millis)
    return whole.astype(np.int64) * 1_000_000 + np.round((millis - whole) * 1_000_000).astype(np.int64)


def _msgpack_columns(data: bytes) -> BarArrays | None:
    """The bars of a msgpack request read column by column, or None: take the full decode."""
    try:
        head = _HEAD.decode(data)
        if present(head.market_data) or not present(head.bars):
            return None
        raw = _COLUMNS.decode(head.bars)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        return None
    millis = _column(raw.timestamp, (_FLOAT64, _UINT64, _INT64))
    prices = {name: _column(getattr(raw, name), (_FLOAT64,)) for name in ("open", "high", "low", "close")}
    if present(raw.volume):
        prices["volume"] = _column(raw.volume, (_FLOAT64,))
    if millis is None or any(column is None for column in prices.values()):
        return None
    if any(len(column) != len(millis) for column in prices.values()):
        return None
    ts = _epoch_ns(millis)
    if ts is None:
        return None
    prices.setdefault("volume", np.zeros(len(millis)))
    return BarArrays.from_numpy(ts, **prices)


def bars_of_request(data: bytes, kind: str) -> BarArrays:
    """The request's bars as arrays; RefusedRequest for anything the node would refuse."""
    arrays = _msgpack_columns(data) if kind == MSGPACK else None
    if arrays is None:
        try:
            req = decode(data, ExecuteRequest, kind)
            if req.bars is not None:
                arrays = from_columns(req.bars)
            elif req.market_data is not None:
                arrays = from_rows(req.market_data)
            else:
                raise RefusedRequest("no bars")
        except RefusedRequest:
            raise
        except Exception as exc:  # noqa: BLE001 - ExecutionError, ValueError, RecursionError, ...
            raise RefusedRequest(type(exc).__name__) from None
    if arrays.count == 0 or first_out_of_order(arrays.column("timestamp")) is not None:
        raise RefusedRequest("bars")
    return arrays
