"""One size rule for every message the node publishes.

nats-server refuses a message whose headers plus body exceed its `max_payload` (from the
server's INFO, `nc.max_payload`) with `-ERR 'Maximum Payload Violation'` and closes the
connection; nats-py then closes the client for good. nats-py itself compares only the body
with `max_payload`, so a message that passes its check can still cost the node its connection.
Every publish of the node therefore goes through this module:

* `HEADER_ROOM` is the one margin: the bytes every message keeps free for its headers. A body
  (a reply, a job result, a stored result, a health reply, a dead letter's job body) may take
  `max_payload - HEADER_ROOM` bytes; `body_limit` says how many.
* `fit_reply` applies that rule to a result Struct: a result whose encoding does not fit
  becomes the same kind of result, emptied, with OUTPUT_LIMIT. The request path and the durable
  path both call it, so at every size they give the same answer.
* `check` is the server's own rule, applied before publishing: headers encoded the way nats-py
  writes them (`NATS/1.0\\r\\n`, one `key: value\\r\\n` per header, `\\r\\n`) plus the body must
  not exceed `max_payload`. A message that would break it raises `TooLarge` instead of being
  sent; the connection is never put at risk.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from contracts import ErrorCode, ErrorInfo, encode

# Room kept for headers on every message (Content-Type, error headers, job ids, traceparent...).
HEADER_ROOM = 4096
DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default, before the INFO has been seen

_HEADER_LINE = b"NATS/1.0\r\n"
_CRLF = b"\r\n"
_NEWLINES = str.maketrans({"\r": " ", "\n": " "})  # what nats-py does to a value's line breaks


class TooLarge(Exception):
    """A message that nats-server would refuse (and close the connection for)."""

    def __init__(self, what: str, size: int, max_payload: int) -> None:
        super().__init__(f"{what} would be {size:,} bytes with its headers; "
                         f"this NATS server carries at most {max_payload:,}")
        self.size = size
        self.max_payload = max_payload


def max_payload(nc_or_limit: Any) -> int:
    """The server's real max_payload: from a connection's INFO, or an int given as is."""
    if isinstance(nc_or_limit, int):
        return nc_or_limit
    value = getattr(nc_or_limit, "max_payload", None)
    return int(value) if value else DEFAULT_MAX_PAYLOAD


def body_limit(nc_or_limit: Any) -> int:
    """Bytes a message body may take on this server: max_payload less the header room."""
    return max(0, max_payload(nc_or_limit) - HEADER_ROOM)


def header_block(headers: Mapping[str, str]) -> bytes:
    """`headers` on the wire, encoded exactly as nats-py encodes them (nats.aio.client
    `_send_publish`: the NATS/1.0 line, `Key: value` lines with stripped keys and values, line
    breaks in a value made spaces, empty keys skipped, a blank line)."""
    parts = [_HEADER_LINE]
    for key, value in headers.items():
        key = key.strip()
        if not key:
            continue  # nats-py skips empty keys
        parts += (key.encode(), b": ", str(value).strip().translate(_NEWLINES).encode(), _CRLF)
    parts.append(_CRLF)
    return b"".join(parts)


def header_bytes(headers: Mapping[str, str] | None) -> int:
    """Size of `headers` on the wire, encoded exactly as nats-py encodes them (0 for None)."""
    return 0 if headers is None else len(header_block(headers))


def wire_size(payload: bytes, headers: Mapping[str, str] | None) -> int:
    """What nats-server compares with max_payload: headers plus body."""
    return header_bytes(headers) + len(payload)


def fits(nc_or_limit: Any, payload: bytes, headers: Mapping[str, str] | None) -> bool:
    return wire_size(payload, headers) <= max_payload(nc_or_limit)


def check(nc_or_limit: Any, payload: bytes, headers: Mapping[str, str] | None, what: str = "the message") -> None:
    """Raise TooLarge unless the server will accept this message (call it before publishing)."""
    size = wire_size(payload, headers)
    limit = max_payload(nc_or_limit)
    if size > limit:
        raise TooLarge(what, size, limit)


def check_size(nc_or_limit: Any, size: int, what: str = "the message") -> None:
    """As `check`, for a message whose wire size (headers plus body) is already known."""
    limit = max_payload(nc_or_limit)
    if size > limit:
        raise TooLarge(what, size, limit)


class PlainHeaders(NamedTuple):
    headers: Mapping[str, str]  # shared: callers must not extend it
    size: int  # on the wire
    block: bytes  # as nats-py would encode them (header_block)


_PLAIN: dict[str, PlainHeaders] = {}


def plain_headers(kind: str) -> PlainHeaders:
    """The headers of a reply with no error and no trace context: Content-Type alone. Built,
    sized and encoded once per content type."""
    entry = _PLAIN.get(kind)
    if entry is None:
        headers = {"Content-Type": kind}
        block = header_block(headers)
        entry = PlainHeaders(headers, len(block), block)
        if len(_PLAIN) < 16:
            _PLAIN[kind] = entry
    return entry


def output_limit_error(size: int, nc_or_limit: Any) -> ErrorInfo:
    limit = body_limit(nc_or_limit)
    return ErrorInfo(
        code=ErrorCode.OUTPUT_LIMIT,
        message=f"the result is {size:,} bytes encoded; this NATS server carries results of at most "
                f"{limit:,} bytes (max_payload {max_payload(nc_or_limit):,} less {HEADER_ROOM:,} for headers): "
                "return less (fewer signals, indicators, logs or a smaller result)")


def too_large(reply: Any, size: int, nc_or_limit: Any) -> Any:
    """The same kind of reply, emptied, with OUTPUT_LIMIT: a result NATS cannot carry."""
    names = set(getattr(type(reply), "__struct_fields__", ()))
    fields: dict[str, Any] = {"error": output_limit_error(size, nc_or_limit)}
    for name in ("node_id", "request_id", "execution_time_ms"):
        if name in names:
            fields[name] = getattr(reply, name)
    if "success" in names:
        fields["success"] = False
    if "valid" in names:
        fields["valid"] = False
    return type(reply)(**fields)


def fit_reply(reply: Any, kind: str, nc_or_limit: Any) -> tuple[Any, bytes]:
    """(reply, encoded body) within `body_limit`: the reply itself, or its OUTPUT_LIMIT form.

    A reply type without an `error` field (Health) is returned as is; `check` guards its publish.
    """
    body = encode(reply, kind)
    if len(body) > body_limit(nc_or_limit) and "error" in getattr(type(reply), "__struct_fields__", ()):
        reply = too_large(reply, len(body), nc_or_limit)
        body = encode(reply, kind)
    return reply, body
