"""`json` for strategies: loads(text) and dumps(obj, ...) without hooks or classes."""

from __future__ import annotations

import json as _json
from typing import Any, Callable

JSONDecodeError = _json.JSONDecodeError


def loads(s: str | bytes | bytearray) -> Any:
    """Parse JSON text into dicts, lists, str, int, float, bool and None."""
    if not isinstance(s, (str, bytes, bytearray)):
        raise TypeError(f"the JSON object must be str, bytes or bytearray, not {type(s).__name__}")
    return _json.loads(s)


def dumps(obj: Any, *, indent: int | str | None = None, sort_keys: bool = False,
          separators: tuple[str, str] | None = None, ensure_ascii: bool = True, allow_nan: bool = True,
          default: Callable[[Any], Any] | None = None) -> str:
    """JSON text of `obj`; `default` (the code's own function) converts what JSON cannot hold."""
    return _json.dumps(obj, indent=indent, sort_keys=bool(sort_keys), separators=separators,
                       ensure_ascii=bool(ensure_ascii), allow_nan=bool(allow_nan), default=default)
