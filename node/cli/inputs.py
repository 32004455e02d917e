"""What the client commands read from their command line: --param values and strategy files."""

from __future__ import annotations

import json
from typing import Any


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_params(items: list[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: --param takes key=value, got {item!r}")
        params[key] = _parse_value(value)
    return params


def read_strategy(path: str) -> str:
    """A strategy file's source; a readable refusal for an empty one (before any request)."""
    with open(path, encoding="utf-8") as fh:
        code = fh.read()
    if not code.strip():
        raise SystemExit(f"error: {path} is empty: a strategy defines strategy(data), "
                         f"classify_symbol(symbol), or top-level code over df")
    return code
