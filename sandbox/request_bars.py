"""A warm run's bars, decoded inside the sandbox worker from the request the client sent.

The node's event loop is one thread for every request it serves; the tenant's warm workers run
in parallel beside it. For a run in a warm worker the node therefore decodes only the request's
small fields (node/raw_execute.py) and hands the request's bytes as they arrived (`Job.request`,
JSON or msgpack) to the worker, which decodes them here with the same contract decoder and the
same bar checks the node applies to every other request: the whole `ExecuteRequest` (every field
and limit), the columnar or row bars to int64 nanoseconds and float64 columns, strictly
increasing times, at least one bar.

Any failure only says "refused": the node then works out the error the client gets with its own
checks on the same bytes (node/raw_execute.py), so every error code and message stays the one
the node gives for a request it decodes itself. Nothing here is trusted by the node beyond that
yes/no: the bars only ever feed the strategy's own run.
"""

from __future__ import annotations

from contracts import BarArrays, ExecuteRequest, decode, first_out_of_order, from_columns, from_rows


class RefusedRequest(Exception):
    """The request bytes did not decode, or their bars did not pass the node's checks."""


def bars_of_request(data: bytes, kind: str) -> BarArrays:
    """The request's bars as arrays; RefusedRequest for anything the node would refuse."""
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
