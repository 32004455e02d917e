"""Sizes and iteration bounds of a run: `full` (the published table), `quick` and `tiny` (tests).

Every phase is bounded twice: by a request count and by a time budget for issuing requests
(requests already in flight when the budget runs out are still awaited and counted).
A phase at concurrency c always issues at least c requests, so c really are in flight.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


@dataclass(frozen=True)
class Profile:
    name: str
    bars: int = 1_000  # bars per execute request
    concurrency: tuple[int, ...] = (1, 16, 64)
    # fast cases (echo, execute, validate): per phase
    requests: int = 2_000
    seconds: float = 6.0
    warmup: int = 50
    # heavy cases (backtest, sweep): per phase
    heavy_requests: int = 10
    heavy_seconds: float = 15.0
    heavy_warmup: int = 1
    heavy_concurrency: tuple[int, ...] = (1, 16, 64)
    backtest_bars: int = 1_000_000
    sweep_bars: int = 100_000
    sweep_fast: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50)
    sweep_slow: tuple[int, ...] = (60, 80, 100, 120, 140, 160, 180, 200, 220, 240)
    # memory probe: requests whose strategy holds its state for `hold_ms` while sampled
    memory_requests: int = 8
    heavy_memory_requests: int = 3
    hold_iterations: int = 1_500_000
    settle_s: float = 0.3  # pause between phases so the zygote refills its ready children
    request_timeout_s: float = 30.0
    # issue 18: open-loop phases (bench/openloop.py) at these rates and at 50 % of each system's
    # closed-loop maximum; a phase sends min(rate x seconds, openloop_requests) requests
    openloop_rates: tuple[float, ...] = (20, 50, 100)
    openloop_half_max: bool = True
    openloop_seconds: float = 6.0
    openloop_requests: int = 3_000
    openloop_arrivals: str = "poisson"
    # the fork floor (bench/forkfloor.py), in its own process
    forkfloor_forks: int = 300
    forkfloor_fault_pages: int = 4_096
    forkfloor_fault_rounds: int = 7
    forkfloor_zygote_like: bool = True
    # issue 18: the warm node and the in-process baseline's closed-loop maximum, interleaved
    # (bench/saturation.py): this many rounds of one burst of this many requests each
    saturation_rounds: int = 8
    saturation_requests: int = 1_000
    heavy_timeout_s: float = 600.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def sweep_pairs(self) -> int:
        return len(self.sweep_fast) * len(self.sweep_slow)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["sweep_pairs"] = self.sweep_pairs
        return out


FULL = Profile(name="full")

QUICK = replace(
    FULL, name="quick", requests=300, seconds=1.0, warmup=20,
    heavy_requests=3, heavy_seconds=2.0, heavy_warmup=1,
    backtest_bars=100_000, sweep_bars=10_000,
    sweep_fast=(5, 20), sweep_slow=(60, 150),
    memory_requests=4, heavy_memory_requests=1, settle_s=0.15,
    openloop_seconds=1.5, openloop_requests=400, forkfloor_forks=100, forkfloor_fault_rounds=5,
    saturation_rounds=6, saturation_requests=300,
    notes=("quick: smaller backtest/sweep sizes; those targets are not comparable",),
)

TINY = replace(
    FULL, name="tiny", bars=200, concurrency=(1, 4), requests=20, seconds=1.0, warmup=3,
    heavy_requests=2, heavy_seconds=1.0, heavy_warmup=1, heavy_concurrency=(1, 4),
    backtest_bars=5_000, sweep_bars=2_000, sweep_fast=(5, 10), sweep_slow=(20, 40),
    memory_requests=2, heavy_memory_requests=1, hold_iterations=300_000, settle_s=0.05,
    openloop_rates=(20,), openloop_seconds=0.15, openloop_requests=3, forkfloor_forks=10,
    forkfloor_fault_pages=256, forkfloor_fault_rounds=2, forkfloor_zygote_like=False,
    saturation_rounds=2, saturation_requests=8,
    notes=("tiny: a smoke run for tests; numbers mean nothing",),
)

PROFILES = {p.name: p for p in (FULL, QUICK, TINY)}
