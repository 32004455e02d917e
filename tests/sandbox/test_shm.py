"""Bars in a sealed memfd (sandbox/shm.py): what the node seals, what a child maps, and that
neither a child nor anyone else can change them."""

from __future__ import annotations

import fcntl
import mmap
import os

import msgspec
import numpy as np
import pytest
import pytest_asyncio

from contracts import BacktestOptions, BarArrays
from contracts.bars import COLUMNS
from sandbox import SandboxPool, shm
from sandbox.compiler import compile_strategy
from sandbox.protocol import Job, OutputLimits, job_encoder

N = 30_000  # 1.44 MB of bars: above shm.MIN_BYTES


def bars(n: int = N, seed: int = 3) -> BarArrays:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    ts = (1_577_836_800_000 + np.arange(n, dtype=np.int64) * 60_000) * 1_000_000
    return BarArrays.from_numpy(ts, open=close * 0.999, high=close * 1.002, low=close * 0.998, close=close,
                                volume=rng.integers(1, 9, n).astype(float))


def columns(arrays: BarArrays) -> dict[str, np.ndarray]:
    return {name: arrays.column(name).copy() for name in ("timestamp", *COLUMNS)}


def job_for(arrays: BarArrays, code: str, **extra) -> Job:
    return Job(kind="backtest", code=compile_strategy(code).to_bytes(), bars=arrays, symbol="SHM", timeframe="1m",
               parameters=extra.pop("parameters", {}), timeout_ms=20_000, memory_mb=512, limits=OutputLimits(),
               options=BacktestOptions(), **extra)


def received(sealed: BarArrays) -> shm.Received:
    fd, shape = shm.fd_of(sealed)
    return shm.Received(os.dup(fd), shape)


# -- the node's side ---------------------------------------------------------------------------
def test_sealed_bars_hold_the_same_values_as_read_only_views():
    plain = bars()
    sealed = shm.seal(plain)
    assert shm.fd_of(sealed) is not None
    for name, values in columns(plain).items():
        column = sealed.column(name)
        assert np.array_equal(column, values)
        assert not column.flags.writeable
        with pytest.raises(ValueError):
            column.flags.writeable = True


def test_the_memfd_refuses_writes_resizes_and_writable_shared_mappings():
    sealed = shm.seal(bars())
    fd, shape = shm.fd_of(sealed)
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & shm.SEALS == shm.SEALS
    with pytest.raises(PermissionError):
        os.pwrite(fd, b"\0" * 8, 0)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, 0)
    with pytest.raises(PermissionError):
        os.ftruncate(fd, shape.size + mmap.PAGESIZE)
    with pytest.raises(PermissionError):
        mmap.mmap(fd, shape.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    with pytest.raises(PermissionError):  # F_SEAL_SEAL: the seals themselves cannot change
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0x0010)  # F_SEAL_FUTURE_WRITE


def test_small_bars_stay_bytes_and_travel_in_the_frame():
    small = bars(1_000)
    assert shm.seal(small) is small
    body, fds = shm.payload(job_for(small, "def strategy(data):\n    return 'BUY'\n"), job_encoder.encode)
    assert fds == [] and len(body) > 48 * 1_000


def test_a_job_on_sealed_bars_carries_the_memfd_instead_of_the_bars():
    sealed = shm.seal(bars())
    fd, shape = shm.fd_of(sealed)
    body, fds = shm.payload(job_for(sealed, "def strategy(data):\n    return 'BUY'\n"), job_encoder.encode)
    assert fds == [fd]
    assert len(body) < 2_000  # the job without its 1.44 MB of bars
    wire = msgspec.msgpack.decode(body, type=Job)
    assert wire.bars is None and wire.shared_bars == shape


def test_sealing_sealed_bars_again_reuses_their_memfd():
    sealed = shm.seal(bars())
    assert shm.seal(sealed) is sealed


# -- a child's side ----------------------------------------------------------------------------
def test_a_childs_frame_block_is_private_and_pristine_for_every_frame():
    plain = bars()
    sealed = shm.seal(plain)
    mapped = received(sealed)
    block = mapped.frame_block()
    close = plain.column("close")
    assert np.array_equal(block[COLUMNS.index("close")], close)
    block[:] = -1.0  # a strategy writing all over its frame
    assert np.array_equal(sealed.column("close"), close)  # the node's view: unchanged
    assert np.array_equal(mapped.bars.column("close"), close)  # the run's own read-only columns too
    assert np.array_equal(received(sealed).frame_block()[COLUMNS.index("close")], close)  # another child
    again = mapped.frame_block()  # the next run (a sweep's next point) in the same child
    assert np.array_equal(again[COLUMNS.index("close")], close)


def test_a_childs_columns_cannot_be_made_writable():
    mapped = received(shm.seal(bars()))
    for name in ("timestamp", *COLUMNS):
        column = mapped.bars.column(name)
        with pytest.raises(ValueError):
            column.flags.writeable = True
        with pytest.raises(ValueError):
            column[0] = 0


def test_a_child_refuses_a_memfd_that_is_not_sealed():
    fd = os.memfd_create("bars", os.MFD_ALLOW_SEALING)
    shape = shm.layout(N)
    os.ftruncate(fd, shape.size)
    with pytest.raises(shm.SharedBarsError, match="not sealed"):
        shm.Received(fd, shape)


def test_a_child_refuses_a_memfd_of_another_size_than_the_job_says():
    sealed = shm.seal(bars())
    fd, shape = shm.fd_of(sealed)
    with pytest.raises(shm.SharedBarsError, match="size"):
        shm.Received(os.dup(fd), shm.layout(N + 1))


def test_a_job_naming_shared_bars_without_a_descriptor_is_refused():
    _fd, shape = shm.fd_of(shm.seal(bars()))
    job = msgspec.structs.replace(job_for(None, "def strategy(data):\n    return 'BUY'\n"), shared_bars=shape)
    with pytest.raises(shm.SharedBarsError, match="did not arrive"):
        shm.receive(job, [])


# -- through real sandbox children -------------------------------------------------------------
SMA = (
    "def strategy(data, params):\n"
    "    close = data['close']\n"
    "    fast = close.rolling(params.get('fast', 10)).mean()\n"
    "    slow = close.rolling(params.get('slow', 40)).mean()\n"
    "    return (fast > slow).astype('int8').diff().fillna(0)\n"
)
# The same signals, computed before the strategy rewrites every price of its frame.
REWRITES_ITS_FRAME = (
    "def strategy(data, params):\n"
    "    fast = data['close'].copy().rolling(params.get('fast', 10)).mean()\n"
    "    slow = data['close'].copy().rolling(params.get('slow', 40)).mean()\n"
    "    signals = (fast > slow).astype('int8').diff().fillna(0)\n"
    "    data.iloc[:, :] = 1.0\n"
    "    return signals\n"
)


@pytest_asyncio.fixture(scope="module")
async def pool():
    running = SandboxPool(ready_target=2)
    await running.start()
    yield running
    await running.close()


async def test_a_backtest_on_sealed_bars_gives_the_result_of_one_on_bytes(pool):
    plain = bars()
    by_bytes = await pool.run(job_for(plain, SMA))
    by_memfd = await pool.run(job_for(shm.seal(plain), SMA))
    assert by_bytes.success and by_memfd.success, (by_bytes.error, by_memfd.error)
    assert by_memfd.performance == by_bytes.performance
    assert by_memfd.performance.total_trades > 10


async def test_a_strategy_rewriting_its_frame_changes_neither_its_metrics_nor_the_bars(pool):
    plain = bars()
    sealed = shm.seal(plain)
    clean = await pool.run(job_for(sealed, SMA))
    rewritten = await pool.run(job_for(sealed, REWRITES_ITS_FRAME))
    assert rewritten.success, rewritten.error
    assert rewritten.performance == clean.performance  # metrics read the sealed columns
    for name, values in columns(plain).items():
        assert np.array_equal(sealed.column(name), values)
    assert (await pool.run(job_for(sealed, SMA))).performance == clean.performance


async def test_a_sweep_point_rewriting_its_frame_changes_no_later_point_of_its_chunk(pool):
    sealed = shm.seal(bars())
    points = [{"fast": f, "slow": 40} for f in (5, 10, 15, 20)]
    first_rewrites = SMA.replace(  # before any view of the frame exists: written in place
        "    close = data['close']\n",
        "    if params['fast'] == 5:\n"
        "        data.iloc[:, 3] = data.iloc[::-1, 3].to_numpy()  # the close, reversed\n"
        "    close = data['close']\n",
    )
    clean = await pool.run(job_for(sealed, SMA, points=points))
    attacked = await pool.run(job_for(sealed, first_rewrites, points=points))
    assert [p.error for p in attacked.points] == [None] * 4
    assert [p.performance for p in attacked.points[1:]] == [p.performance for p in clean.points[1:]]


def test_bars_go_through_the_socket_when_no_memfd_can_be_made(monkeypatch):
    def refuse(*_args):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(os, "memfd_create", refuse)
    plain = bars()
    assert shm.seal(plain) is plain


def test_bars_go_through_the_socket_when_the_memfd_cannot_be_filled(monkeypatch):
    def full(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "ftruncate", full)
    plain = bars()
    assert shm.seal(plain) is plain


def test_bars_built_straight_into_a_memfd_are_sealed_views_of_what_was_filled_in():
    plain = bars()

    def fill(columns):
        for name, column in columns.items():
            column[:] = plain.column(name)

    built = shm.build(N, fill)
    fd, shape = shm.fd_of(built)
    assert shape == shm.layout(N)
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & shm.SEALS == shm.SEALS
    for name, values in columns(plain).items():
        assert np.array_equal(built.column(name), values)
        assert not built.column(name).flags.writeable
