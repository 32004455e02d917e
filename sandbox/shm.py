"""Bars handed to a sandbox child through a sealed memfd instead of through its socket.

A 1,000,000-bar backtest carries 48 MB of bars. Through the child's socket they were copied
five times (msgpack encode, frame, socket, the child's reads and joins, decode) and then once
more into the strategy's frame, and the child faulted in every fresh page of those copies.
Here the node writes them once into an anonymous memory file and seals it; each child maps it.

Node side (`seal`, `payload`): the bars are written into a memfd (`memfd_create`), which is then
sealed with F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: from then on nobody, the
node included, can change its bytes or its size, and no writable shared mapping of it can be
made. The node keeps the sealed memfd beside the columns it reads itself (a read-only mapping of
the same pages), so a series replayed once (node.backtesting's replay cache) is handed to every
backtest and sweep chunk that runs on it without another copy. Only bars that a request asked
for are ever in one memfd: a child sees exactly the bars of its own run.

Wire: the job goes out as usual, with `bars=None` and `Job.shared_bars` describing the layout;
the memfd's descriptor rides on the frame's first bytes (SCM_RIGHTS). Layout: int64 timestamps
at offset 0, then the five float64 price columns (open, high, low, close, volume), one after
the other, at the first page boundary after them (`SharedBars.prices`).

Child side (`receive`): the child checks the memfd's size and seals, maps it twice and closes
the descriptor it received:

* a read-only shared mapping (PROT_READ, MAP_SHARED): the job's columns (`Job.bars`), read by
  the signal and metric code. Their buffers are read-only, so numpy refuses to make them
  writable, and the kernel refuses a writable mapping of a sealed file;
* a private copy-on-write mapping of the price block: the strategy's DataFrame is built on it
  without a copy (`frame_block`). A strategy may write to its frame as it could before; the
  kernel copies just the pages it writes, into this process only. Each call of `frame_block`
  (every run, and every point of a sweep chunk) first drops those private pages
  (MADV_DONTNEED), so the next frame is the pristine bars again.

Arrays over either mapping are built on memoryviews, which strategy code cannot hold (the
sandbox refuses memoryview values), so `.base` chains end there. (Python's mmap objects keep a
duplicate of the descriptor while their mapping lives; through it, too, the sealed memfd can be
neither written nor resized.)
"""

from __future__ import annotations

import array
import ctypes
import fcntl
import mmap
import os
import socket
import weakref

import msgspec
import numpy as np

from contracts import BarArrays
from contracts.bars import COLUMNS

PAGE = mmap.ALLOCATIONGRANULARITY
# Below this many bytes of bars the socket is cheaper than a memfd (and a series that small
# would cost the node an open descriptor per cached replay for nothing).
MIN_BYTES = 1 << 20  # ~21,800 bars
SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
_REQUIRED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_MFD_NOEXEC_SEAL = 0x0008  # Linux >= 6.3: the memfd can never be made executable


class SharedBars(msgspec.Struct, array_like=True):
    """Where a job's bars are in the memfd passed with it."""

    count: int  # bars
    prices: int  # byte offset of the price block (page aligned)

    @property
    def size(self) -> int:
        return self.prices + 8 * len(COLUMNS) * self.count


def layout(count: int) -> SharedBars:
    return SharedBars(count=count, prices=-(-8 * count // PAGE) * PAGE)


class SharedBarsError(Exception):
    """The bars handed to a child are not what the job says (never the strategy's doing)."""


# -- node side ---------------------------------------------------------------------------------
class _Sealed(mmap.mmap):
    """The node's read-only mapping of a sealed memfd; carries the descriptor to pass on."""

    fd: int
    shape: SharedBars


def available() -> bool:
    return hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS")


def _memfd() -> int:
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        return os.memfd_create("bars", flags | _MFD_NOEXEC_SEAL)
    except OSError:  # a kernel before 6.3
        return os.memfd_create("bars", flags)


def seal(arrays: BarArrays, min_bytes: int | None = None) -> BarArrays:
    """`arrays` in a sealed memfd: the returned BarArrays' columns are read-only views of it.

    Bars smaller than `min_bytes` (default `MIN_BYTES`), a system without memfd sealing, or a
    node out of descriptors or memory for one: the bars come back unchanged (they then travel
    through the socket). Already sealed bars come back as they are.
    """
    count = arrays.count
    min_bytes = MIN_BYTES if min_bytes is None else min_bytes
    if fd_of(arrays) is not None or not available() or 48 * count < max(min_bytes, 1):
        return arrays
    shape = layout(count)
    try:
        fd = _memfd()
    except OSError:  # out of descriptors or memory: the bars still go, through the socket
        return arrays
    try:
        os.ftruncate(fd, shape.size)
        offsets = [0] + [shape.prices + 8 * count * k for k in range(len(COLUMNS))]
        for name, offset in zip(("timestamp", *COLUMNS), offsets):
            _pwrite_all(fd, getattr(arrays, name), offset)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        mapping = _Sealed(fd, shape.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError:  # ENOMEM, EMFILE: as above
        os.close(fd)
        return arrays
    except BaseException:
        os.close(fd)
        raise
    mapping.fd, mapping.shape = fd, shape
    weakref.finalize(mapping, os.close, fd)  # the descriptor lives as long as the mapping
    return _views(mapping, shape)


def build(count: int, fill) -> BarArrays | None:
    """Bars written straight into a new sealed memfd: `fill(columns)` gets a writable int64/float64
    numpy array per column name (timestamp, open, ... volume) and must fill them; then the memfd
    is sealed and the returned BarArrays are read-only views, as from `seal`. None when no memfd
    can be had (the caller assembles the bars as bytes instead). Saves `seal`'s copy of bars
    that were only joined to be copied (a replay from the bar store)."""
    if not available() or count <= 0:
        return None
    shape = layout(count)
    try:
        fd = _memfd()
    except OSError:
        return None
    try:
        os.ftruncate(fd, shape.size)
        with mmap.mmap(fd, shape.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE) as writable:
            whole = memoryview(writable)
            try:
                width = 8 * count
                columns = {"timestamp": np.frombuffer(whole[:width], dtype=np.int64)}
                for k, name in enumerate(COLUMNS):
                    at = shape.prices + width * k
                    columns[name] = np.frombuffer(whole[at:at + width], dtype=np.float64)
                fill(columns)
            finally:
                columns = None  # every export of the writable mapping gone before it closes
                whole.release()
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)  # no writable mapping is left: EBUSY otherwise
        mapping = _Sealed(fd, shape.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    mapping.fd, mapping.shape = fd, shape
    weakref.finalize(mapping, os.close, fd)
    return _views(mapping, shape)


def _pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def _views(mapping: mmap.mmap, shape: SharedBars) -> BarArrays:
    whole = memoryview(mapping)
    width = 8 * shape.count
    columns = {"timestamp": whole[:width]}
    for k, name in enumerate(COLUMNS):
        columns[name] = whole[shape.prices + width * k: shape.prices + width * (k + 1)]
    return BarArrays(**columns)


def fd_of(arrays: BarArrays | None) -> tuple[int, SharedBars] | None:
    """The sealed memfd behind `arrays` (made by `seal`), or None for ordinary bytes."""
    column = None if arrays is None else arrays.timestamp
    owner = column.obj if isinstance(column, memoryview) else None
    if isinstance(owner, _Sealed) and not owner.closed:
        return owner.fd, owner.shape
    return None


def payload(job, encode) -> tuple[bytes, list[int]]:
    """(frame body, descriptors to pass with it) for `job`: sealed bars go as their memfd."""
    sealed = fd_of(job.bars)
    if sealed is None:
        return encode(job), []
    fd, shape = sealed
    return encode(msgspec.structs.replace(job, bars=None, shared_bars=shape)), [fd]


def send_fds(sock: socket.socket, first: bytes, fds: list[int]) -> int:
    """Send the first bytes of a frame with `fds` attached (SCM_RIGHTS); returns bytes sent.

    The channel is fresh and empty when a job goes out, so the few bytes fit its buffer."""
    return sock.sendmsg([first], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])


# -- child side --------------------------------------------------------------------------------
def recv_with_fds(fd: int, size: int) -> tuple[bytes, list[int], bool]:
    """Up to `size` bytes from the channel `fd` and any descriptors attached to them:
    (data, fds, truncated). `truncated` means the kernel dropped descriptors (no room)."""
    sock = socket.socket(fileno=fd)
    try:
        data, ancillary, flags, _addr = sock.recvmsg(size, socket.CMSG_SPACE(4 * 4))
    finally:
        sock.detach()
    fds = array.array("i")
    for level, kind, item in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(item[: len(item) - len(item) % fds.itemsize])
    return data, list(fds), bool(flags & socket.MSG_CTRUNC)


class Received:
    """A child's two mappings of the bars memfd it was handed (see the module doc)."""

    def __init__(self, fd: int, shape: SharedBars) -> None:
        try:
            if shape.count <= 0 or shape.prices != layout(shape.count).prices:
                raise SharedBarsError("the shared bars' layout is not the one this sandbox reads")
            if os.fstat(fd).st_size != shape.size:
                raise SharedBarsError("the shared bars are not the size the job says")
            if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & _REQUIRED_SEALS != _REQUIRED_SEALS:
                raise SharedBarsError("the shared bars are not sealed")
            self.shared = mmap.mmap(fd, shape.size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self.private = mmap.mmap(fd, shape.size - shape.prices, flags=mmap.MAP_PRIVATE,
                                     prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=shape.prices)
        finally:
            os.close(fd)  # mapped (or refused): the descriptor itself is not needed any more
        self.shape = shape
        self.bars = _views(self.shared, shape)
        self._block = np.frombuffer(memoryview(self.private), dtype=np.float64).reshape(len(COLUMNS), shape.count)

    def frame_block(self) -> np.ndarray:
        """The (5, n) price block for a new frame: writable, private, and pristine again."""
        self.private.madvise(mmap.MADV_DONTNEED)  # whatever an earlier run wrote is gone
        return self._block


_received: Received | None = None


def receive(job, fds: list[int]):
    """The job with its shared bars mapped (`Job.bars` read-only views); closes every
    descriptor in `fds`. Raises SharedBarsError when the job names shared bars that did not
    arrive whole."""
    global _received
    shape = job.shared_bars
    if shape is None:
        for fd in fds:
            os.close(fd)
        return job
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise SharedBarsError("the shared bars did not arrive with the job")
    _received = Received(fds[0], shape)
    _reuse_freed_arrays()
    return msgspec.structs.replace(job, bars=_received.bars, shared_bars=None)


_LIBC = ctypes.CDLL(None)  # loaded in the zygote: a locked-down child opens no file
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _reuse_freed_arrays() -> None:
    """A one-shot child about to work on large bars: let malloc serve arrays of up to 32 MB from
    its heap and keep up to 128 MB of freed heap, instead of mapping fresh zeroed pages for every
    temporary and unmapping them again (each first touch a page fault). The memory limit is
    unchanged (RLIMIT_AS counts the heap too); the child exits after its job."""
    _LIBC.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    _LIBC.mallopt(_M_TRIM_THRESHOLD, 128 << 20)


def frame_block(bars: BarArrays) -> np.ndarray | None:
    """A fresh private price block for a frame of `bars` when they are this child's shared
    bars (see `Received.frame_block`); None for bars that came as bytes."""
    got = _received
    if got is None or bars.timestamp is not got.bars.timestamp:
        return None
    return got.frame_block()
