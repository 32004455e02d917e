"""`functools` for strategies: no attribute copying by name, no string-annotation evaluation."""

from __future__ import annotations

import functools as _ft
from typing import Any

from .. import guards

cache = _ft.cache
cached_property = _ft.cached_property
cmp_to_key = _ft.cmp_to_key
lru_cache = _ft.lru_cache
partial = _ft.partial
reduce = _ft.reduce


def total_ordering(cls: Any) -> Any:
    """The code's own classes only: it sets comparison methods on the class it is given."""
    if not (isinstance(cls, type) and guards._is_user_class(cls)):
        raise guards.violation("functools.total_ordering decorates only classes the strategy defines")
    return _ft.total_ordering(cls)
