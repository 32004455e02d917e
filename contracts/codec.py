"""JSON by default, msgpack when the request says `Content-Type: application/msgpack`.

Decoding failures become `ExecutionError(INVALID_REQUEST)` with msgspec's message, which names
the offending field path (`$.bars.close[3]`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Mapping, TypeVar

import msgspec

from .errors import ErrorCode, ExecutionError
from .subjects import CONTENT_TYPE, JSON, MSGPACK

T = TypeVar("T")

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()


def content_type(headers: Mapping[str, str] | None) -> str:
    if headers:
        value = headers.get(CONTENT_TYPE) or headers.get(CONTENT_TYPE.lower())
        if value and value.split(";")[0].strip().lower() in (MSGPACK, "application/x-msgpack"):
            return MSGPACK
    return JSON


# msgspec's wording for a key a `forbid_unknown_fields` Struct does not declare.
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*?)`(?: - at `([^`]*)`)?$", re.DOTALL)


@lru_cache(maxsize=None)
def _decoder(kind: str, type_: type) -> Any:
    if kind == MSGPACK:
        return msgspec.msgpack.Decoder(type_)
    return msgspec.json.Decoder(type_)


def decode(data: bytes, type_: type[T], kind: str = JSON) -> T:
    if not data:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, "empty payload: expected a JSON or msgpack object")
    try:
        return _decoder(kind, type_).decode(data)
    except msgspec.ValidationError as exc:
        if str(exc) == "Expected `str` of length >= 1 - at `$.code`":
            raise ExecutionError(ErrorCode.INVALID_REQUEST, "invalid request: `$.code` is empty: send the "
                                 "strategy's source (a strategy(data) function, script code over df, or "
                                 "classify_symbol(symbol))") from None
        unknown = _UNKNOWN_FIELD.match(str(exc))
        if unknown:
            name, at = unknown.group(1), unknown.group(2) or "$"
            shown = name if len(name) <= 64 else name[:64] + "..."
            raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid request: unknown field `{shown}` at "
                                 f"`{at}`: not a field of this request (a field is never ignored; "
                                 "check its spelling and where it is nested)") from None
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        what = "msgpack" if kind == MSGPACK else "JSON"
        raise ExecutionError(ErrorCode.INVALID_REQUEST, f"payload is not valid {what}: {exc}") from None
    except RecursionError:
        raise ExecutionError(ErrorCode.INVALID_REQUEST, "payload is nested too deeply") from None


def encode(obj: Any, kind: str = JSON) -> bytes:
    if kind == MSGPACK:
        return _msgpack_encoder.encode(obj)
    return _json_encoder.encode(obj)
