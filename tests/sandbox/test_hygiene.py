"""sandbox.hygiene in process: what a run leaves behind is gone before the next run that shares
the process, and a process that cannot be shown clean says so. (Through NATS, the same is
checked by tests/node/test_fingerprint_after_attack.py.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from contracts import BacktestOptions, BarArrays
from sandbox import guards, hygiene, runtime
from sandbox.compiler import compile_strategy
from sandbox.protocol import Job, OutputLimits

N = 120
_TS = (np.arange(N, dtype=np.int64) + 19_000) * 86_400_000_000_000
_CLOSE = 100 + np.cumsum(np.sin(np.arange(N) / 5.0))
BARS = BarArrays.from_numpy(_TS, open=_CLOSE, high=_CLOSE + 1, low=_CLOSE - 1, close=_CLOSE, volume=np.ones(N))

ARM_RAISE = '''
import numpy as np
def arm():
    with np.errstate(all='raise'):
        yield 1
        yield 2
def strategy(data, params):
    c = data['close'].to_numpy()
    log(np.float64(1.0) / np.float64(0.0))
    if params.get('mode') == 'poison':
        g = arm()
        next(g)
        loop = [g]
        loop.append(loop)
    return np.sign(np.diff(c, prepend=c[0]))
'''

RE_ARMING = '''
import numpy as np
LEFT = [3 * 4]  # re-arms 12 times (more than hygiene.MAX_PASSES), then lets the test process go
def arm():
    try:
        with np.errstate(all='raise'):
            yield 1
            yield 2
    finally:
        if LEFT[0] > 0:
            LEFT[0] -= 1
            again = arm()
            next(again)
            loop = [again]
            loop.append(loop)
def strategy(data, params):
    if params.get('mode') == 'poison':
        g = arm()
        next(g)
        loop = [g]
        loop.append(loop)
    return np.zeros(len(data))
'''


def job(source: str, **fields) -> Job:
    base = dict(kind="backtest", code=compile_strategy(source).to_bytes(), bars=BARS, symbol="T", timeframe="1d",
                parameters={}, timeout_ms=10_000, memory_mb=256, limits=OutputLimits(),
                options=BacktestOptions(max_trades=0, equity_points=0))
    base.update(fields)
    return Job(**base)


@pytest.fixture(autouse=True)
def baseline():
    yield
    for _ in range(5):  # leave the test process clean for the next test
        if hygiene.scrub():
            break


# Each test captures its baseline itself: pytest sets up warning filters per test phase, so a
# baseline taken in a fixture would differ from the test body's on purpose-free grounds.


def test_an_errstate_held_open_by_garbage_is_gone_after_a_scrub() -> None:
    hygiene.capture()
    runtime.run(job(ARM_RAISE, parameters={"mode": "poison"}))
    assert hygiene.scrub() is True
    assert np.geterr()["divide"] == "warn"
    assert np.float64(1.0) / np.float64(0.0) == np.inf


def test_the_signal_and_metric_code_runs_under_the_baseline_errstate() -> None:
    hygiene.capture()
    outcome = runtime.run(job(ARM_RAISE, parameters={"mode": "poison"}))
    assert outcome.success is True, outcome.error
    assert outcome.logs == ["inf"]


def test_a_finalizer_that_keeps_re_arming_leaves_the_process_untrusted() -> None:
    hygiene.capture()
    runtime.run(job(RE_ARMING, parameters={"mode": "poison"}))
    assert hygiene.scrub() is False
    assert np.geterr()["divide"] == "warn"  # reset all the same


def test_a_changed_global_setter_leaves_the_process_untrusted() -> None:
    hygiene.capture()
    with np.printoptions(precision=3):
        assert hygiene.scrub() is False
    assert hygiene.scrub() is True


def test_the_decision_cache_is_back_to_its_baseline_after_a_scrub() -> None:
    hygiene.capture()
    before = guards.decisions_snapshot()

    class Made:
        value = 1

    guards.guarded_getattr(Made, "value")
    assert hygiene.scrub() is True
    assert guards.decisions_snapshot() == before


def test_an_honest_sweep_chunk_runs_every_point_in_its_one_process() -> None:
    hygiene.capture()
    points = [{"mode": "honest", "k": k} for k in range(5)]
    outcome = runtime.run(job(ARM_RAISE, points=points))
    assert len(outcome.points) == 5, (hygiene.last_failure, [t.name for t in threading.enumerate()])
    assert all(p.error is None and p.performance is not None for p in outcome.points)
    assert len({p.performance.total_return for p in outcome.points}) == 1


def test_a_sweep_chunk_stops_after_a_point_it_cannot_clean() -> None:
    hygiene.capture()
    points = [{"mode": "poison"}, {"mode": "honest"}, {"mode": "honest"}]
    outcome = runtime.run(job(RE_ARMING, points=points))
    assert len(outcome.points) == 1  # the node runs the other two in fresh children


def test_a_walked_strategy_is_probed_here_and_walked_elsewhere() -> None:
    hygiene.capture()
    source = "def strategy(data):\n    return 'BUY' if len(data) % 2 else 'SELL'\n"
    probe = runtime.run(job(source))
    assert probe.walk is True and probe.success is True and probe.performance is None
    walked = runtime.run(job(source, walk=True))
    assert walked.walk is False and walked.signals_count == N
    chunk = runtime.run(job(source, points=[{}, {}]))
    assert [p.walk for p in chunk.points] == [True, True]
