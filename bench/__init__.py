"""`python -m bench`: end-to-end benchmarks of a node, side by side with a raw NATS echo.

One run starts (or targets, with `--nats-url`) a nats-server and a node in their own processes,
plus a tiny echo responder, and measures every case at 1, 16 and 64 requests in flight from a
single client process. See BENCHMARKS.md for the method and the latest numbers.

Entry points: `python -m bench [--quick|--tiny] [--json out.json] [--nats-url URL]`, or
`bench.runner.run(profile, ...)` from Python (the tests use it with the `tiny` profile).
"""

from .profiles import PROFILES, Profile

__all__ = ["PROFILES", "Profile"]
