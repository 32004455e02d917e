"""Standard-library surfaces for strategies, where the real module cannot be exposed as it is.

Each module here is what a strategy's `import json` / `random` / `operator` / `functools` /
`dataclasses` / `warnings` / `enum` / `talib.abstract` proxy is built from (sandbox.policy.MODULE_REAL_NAMES points at it);
the other allowed stdlib modules (collections, itertools, typing, bisect, heapq, decimal,
fractions) are exposed from the real module with a curated surface in sandbox.policy.

Why each wrapper exists:

- json: `loads(text)` and `dumps(obj, ...)` only: no `cls=` (would instantiate any class the
  code names), no `object_hook`/`parse_*` hooks, no file `load`/`dump`.
- random: the module functions are methods of one generator per process, reseeded from OS
  entropy before every run (`reseed()`), so forked children never share a sequence; `Random`
  makes seeded generators; the global `seed`/`getstate`/`setstate` are left out.
- operator: `attrgetter` / `methodcaller` look attributes up by name in C, past the attribute
  guard: here they go through `sandbox.guards.guarded_getattr`. `setitem`/`delitem`/`getitem`
  go through the item guards.
- functools: `wraps`/`update_wrapper` (copy arbitrary attributes by name),
  `singledispatch` (evaluates string annotations) are left out; `total_ordering` only decorates
  the code's own classes.
- dataclasses: `dataclass`, `fields`, `replace`, `asdict`, `astuple` on the code's own classes
  only (asdict/astuple rebuilt without `copy.deepcopy`, which reduces and rebuilds any object);
  `make_dataclass` (any bases) is left out.
- talib.abstract: a fresh `Function` per use, never the module's shared, settable ones.
- enum: the functional API with identifier member names, without `type=` (a mixin base) or
  `module=`/`qualname=`/`boundary=`.
- warnings: `warn()` lands in the run's logs (as do library warnings; see `bind_sink`).
"""
