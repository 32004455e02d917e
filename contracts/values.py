"""Checks on the free-form values a client sends (`parameters`, `grid`), run at decode.

Every request type that carries them (execute, backtest, sweeps, screens, and the durable jobs
that decode the same Structs) calls these from its `__post_init__`, so a value the node cannot
carry to the sandbox is INVALID_REQUEST naming it on every path, never INTERNAL later:

* integers must fit msgpack (the wire to the sandbox): -2**63 .. 2**64-1;
* nesting at most `MAX_VALUE_DEPTH` levels; keys of nested objects are strings;
* `parameters` at most `MAX_PARAMETERS_BYTES` encoded;
* each grid value at most `MAX_GRID_VALUE_BYTES` encoded (it is echoed in every row of the
  ranked table), and a sweep's parameters over all its points (points x (parameters + one
  point)) at most `MAX_SWEEP_PARAMETER_BYTES`, which bounds what the node builds for a sweep.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import msgspec

from .limits import (
    MAX_GRID_VALUE_BYTES,
    MAX_PARAMETERS_BYTES,
    MAX_SWEEP_PARAMETER_BYTES,
    MAX_VALUE_DEPTH,
)

_encoder = msgspec.msgpack.Encoder()
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


def _short(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _where(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key[:40]!r}]" if isinstance(key, str) else f"{path}[{_short(key)}]"


def check_value(value: Any, path: str, depth: int = 0) -> None:
    """ValueError naming the first part of `value` the sandbox wire cannot carry."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValueError(f"{path} is {_short(value)}; integers must fit in 64 bits")
        return
    if depth >= MAX_VALUE_DEPTH:
        raise ValueError(f"{path} is nested more than {MAX_VALUE_DEPTH} levels deep")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{path} has a key {_short(key)} that is not a string")
            check_value(item, _where(path, key), depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_value(item, _where(path, i), depth + 1)
        return
    raise ValueError(f"{path} is a {type(value).__name__}, which is not a JSON value")


def encoded_size(value: Any) -> int:
    return len(_encoder.encode(value))


def check_parameters(parameters: Mapping[str, Any], path: str = "parameters") -> int:
    """Check `parameters`; their encoded size in bytes."""
    check_value(dict(parameters), path)
    size = encoded_size(parameters)
    if size > MAX_PARAMETERS_BYTES:
        raise ValueError(f"{path} take {size:,} bytes encoded; the limit is {MAX_PARAMETERS_BYTES:,}")
    return size


def check_grid(grid: Mapping[str, Sequence[Any]], parameters_size: int) -> None:
    """Check a sweep grid's values and what its points add up to (see the module doc)."""
    widest = 0
    for name, values in grid.items():
        where = _where("grid", name)
        biggest = 0
        for i, value in enumerate(values):
            check_value(value, f"{where}[{i}]")
            size = encoded_size(value)
            if size > MAX_GRID_VALUE_BYTES:
                raise ValueError(f"{where}[{i}] takes {size:,} bytes encoded; a grid value may take at most "
                                 f"{MAX_GRID_VALUE_BYTES} (it is echoed in every row of the table)")
            biggest = max(biggest, size + len(name))
        widest += biggest
    points = math.prod(len(v) for v in grid.values())
    total = points * (parameters_size + widest)
    if total > MAX_SWEEP_PARAMETER_BYTES:
        raise ValueError(
            f"the grid's {points:,} points with these parameters make {total:,} bytes of parameters "
            f"to build and send; the limit is {MAX_SWEEP_PARAMETER_BYTES:,}: send fewer points or "
            f"smaller parameters")
