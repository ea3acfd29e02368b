"""File I/O for the storage tier: O_DIRECT with aligned buffers, page-cache drop proven by mincore, seeded
page patterns for integrity, and a thread pool issuing requests at a given queue depth (the ``threads`` engine).

The other engines of ``storage.engines`` live beside it: :mod:`bench.hw.fileio.aio` (Linux native AIO, queue depth
in flight from one thread) and :mod:`bench.hw.fileio.fio` (fio itself, on the same requests).

Every byte count is bytes; every time seconds. Nothing here times anything: the harness does.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from bench.core.errors import Skip
from bench.core.units import bytes_binary

PAGE = mmap.PAGESIZE
PATTERN_PERIOD = 1 << 20  # the seeded random tile repeats every 1 MiB; each page is stamped with its index

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


class StorageFault(Skip):
    """A storage problem that makes a point unmeasurable (no space, O_DIRECT refused when required, pages that
    stay cached): the harness records the point as skipped with this reason."""


# -- alignment ---------------------------------------------------------------------------------------------------
def direct_alignment(path: str) -> int:
    """Buffer/offset/size alignment O_DIRECT needs on ``path``: the device's logical block size when sysfs tells
    it, never below the page size (which also satisfies every common filesystem)."""
    lbs = 512
    try:
        st = os.stat(path)
        sysdev = Path(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}").resolve()
        disk = sysdev.parent if (sysdev / "partition").exists() else sysdev
        lbs = int((disk / "queue/logical_block_size").read_text())
    except (OSError, ValueError):
        pass
    return max(lbs, PAGE)


def aligned_buffer(nbytes: int, align: int = PAGE) -> memoryview:
    """An anonymous mmap (page-aligned; ``align`` must divide the page size or be a multiple of it)."""
    size = (nbytes + align - 1) // align * align
    buf = mmap.mmap(-1, size + (align if align > PAGE else 0))
    mv = memoryview(buf)
    if align > PAGE:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        off = (-addr) % align
        mv = mv[off:off + size]
    return mv[:nbytes]


def is_aligned(n: int, align: int) -> bool:
    return n % align == 0


# -- opening -----------------------------------------------------------------------------------------------------
def open_file(path: str, write: bool, direct: str) -> tuple[int, str]:
    """Open with O_DIRECT per ``direct`` (auto | require | off). Returns (fd, io_mode).

    auto falls back to buffered I/O when the filesystem refuses O_DIRECT (tmpfs: EINVAL); reads then rely on a
    per-file page-cache drop that is verified before every timed read."""
    flags = (os.O_RDWR | os.O_CREAT) if write else os.O_RDONLY
    if direct != "off":
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), "o_direct"
        except OSError as e:
            if e.errno != errno.EINVAL or direct == "require":
                if e.errno == errno.EINVAL:
                    raise StorageFault(f"O_DIRECT refused by the filesystem at {path} (storage.direct=require)") from None
                raise
    return os.open(path, flags, 0o644), "buffered+drop"


# -- page cache --------------------------------------------------------------------------------------------------
def resident_pages(fd: int, length: int) -> int:
    """Pages of the file's first ``length`` bytes present in the page cache (mmap + mincore; maps, never faults)."""
    if length <= 0:
        return 0
    addr = _libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap for mincore failed")
    try:
        pages = (length + PAGE - 1) // PAGE
        vec = (ctypes.c_ubyte * pages)()
        if _libc.mincore(ctypes.c_void_p(addr), length, vec) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        return int(np.frombuffer(vec, dtype=np.uint8).__and__(1).sum())
    finally:
        _libc.munmap(ctypes.c_void_p(addr), length)


def drop_cache(fd: int, length: int) -> int:
    """Write back and evict the file's pages (fdatasync + POSIX_FADV_DONTNEED); returns pages still resident."""
    os.fdatasync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    return resident_pages(fd, length)


# -- content -----------------------------------------------------------------------------------------------------
def pattern_tile(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, PATTERN_PERIOD, dtype=np.uint8)


def pattern_slots(tile: np.ndarray, request: int, slots: int, align: int) -> tuple[memoryview, int]:
    """Write buffers that need no copy in a pass: ``slots`` buffers of PATTERN_PERIOD + request bytes (the slot
    stride, returned with the buffer), each the tile repeated. The request at file offset o is written from the
    window at o % PATTERN_PERIOD of a free slot once :func:`stamp_window` has put o's page stamps in it: a word a
    page, the only bytes that differ between requests (fio too writes from a few hot buffers). Host bytes:
    slots x (PATTERN_PERIOD + request)."""
    stride = PATTERN_PERIOD + request
    buf = aligned_buffer(slots * stride, max(align, PAGE))
    one = np.tile(tile, stride // len(tile) + 1)[:stride]
    view = np.frombuffer(buf, dtype=np.uint8)
    for k in range(slots):
        view[k * stride:(k + 1) * stride] = one
    return buf, stride


def stamp_window(words: np.ndarray, stride: int, slot: int, offset: int, request: int) -> int:
    """Stamp the window of ``slot`` for the request at ``offset`` (``words``: the slots' buffer as int64) and
    return the window's first byte in the buffer: the window then holds exactly expected_bytes(offset)."""
    start = slot * stride + offset % PATTERN_PERIOD
    pages = request // PAGE
    words[start // 8:start // 8 + pages * (PAGE // 8):PAGE // 8] = np.arange(offset // PAGE, offset // PAGE + pages)
    return start


def expected_bytes(tile: np.ndarray, offset: int, nbytes: int) -> np.ndarray:
    """File content at [offset, offset+nbytes): the tile, with every page's first 8 bytes = its page index
    (so a read from the wrong offset cannot match). ``offset`` and ``nbytes`` are page multiples."""
    reps = (offset % PATTERN_PERIOD + nbytes + PATTERN_PERIOD - 1) // PATTERN_PERIOD + 1
    start = offset % PATTERN_PERIOD
    out = np.tile(tile, reps)[start:start + nbytes].copy()
    pages = out.reshape(-1, PAGE)
    pages[:, :8] = np.arange(offset // PAGE, (offset + nbytes) // PAGE, dtype="<u8").view(np.uint8).reshape(-1, 8)
    return out


def first_bad_page(got, tile: np.ndarray, offset: int) -> Optional[int]:
    g = np.frombuffer(got, dtype=np.uint8)
    want = expected_bytes(tile, offset, len(g))
    bad = np.flatnonzero((g.reshape(-1, PAGE) != want.reshape(-1, PAGE)).any(axis=1))
    return int(bad[0]) + offset // PAGE if bad.size else None


def free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


FILE_MARGIN = 64 << 20  # free space a pattern file must leave on its filesystem


def create_pattern_file(path: str, nbytes: int, seed: int, direct: str, chunk: int = 16 << 20) -> str:
    """Write the seeded pattern file (untimed). Checks free space first; on ENOSPC removes the partial file."""
    need = nbytes + FILE_MARGIN
    have = free_bytes(os.path.dirname(path) or ".")
    if have < need:
        raise StorageFault(f"not enough free space at {os.path.dirname(path)}: {bytes_binary(have)} free, "
                           f"{bytes_binary(need)} needed (the {bytes_binary(nbytes)} file and a 64 MiB margin); "
                           "lower storage.file_bytes")
    tile = pattern_tile(seed)
    fd, mode = open_file(path, True, direct)
    buf = aligned_buffer(chunk)
    try:
        for off in range(0, nbytes, chunk):
            n = min(chunk, nbytes - off)
            np.frombuffer(buf, dtype=np.uint8)[:n] = expected_bytes(tile, off, n)
            os.pwrite(fd, buf[:n], off)
        os.fsync(fd)
    except OSError as e:
        os.close(fd)
        Path(path).unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise StorageFault(f"no space left on device while writing {path} ({bytes_binary(nbytes)} planned)") from None
        raise
    os.close(fd)
    return mode


# -- request passes ----------------------------------------------------------------------------------------------
def pass_bounds(pattern: str, request: int, queue_depth: int, file_bytes: int, pass_depths: int,
                pass_max_bytes: int) -> tuple[int, int]:
    """(fewest, most) requests of one timed pass: at least ``pass_depths`` per queue slot (so the queue's ramp-up
    and drain are a small part of it), at most ``pass_max_bytes`` and, for sequential/random, the file's slots."""
    most = max(1, int(pass_max_bytes) // int(request))
    if pattern != "repeat":
        most = min(most, max(1, int(file_bytes) // int(request)))
    return min(int(pass_depths) * int(queue_depth), most), most


def pass_requests(rate_per_s: float, pass_s: float, fewest: int, most: int) -> int:
    """Requests of a steady-state pass: about ``pass_s`` seconds at ``rate_per_s`` requests/s, within bounds."""
    want = int(rate_per_s * float(pass_s)) if rate_per_s > 0 else most
    return max(fewest, min(most, want))


def offsets(pattern: str, request: int, nrequests: int, file_bytes: int, seed: int) -> np.ndarray:
    """Request offsets: sequential from 0, random distinct aligned slots, or the same block repeated."""
    slots = file_bytes // request
    if slots < 1:
        raise StorageFault(f"request {request} bytes larger than the file ({file_bytes} bytes)")
    n = min(nrequests, slots) if pattern != "repeat" else nrequests
    if pattern == "sequential":
        return np.arange(n, dtype=np.int64) * request
    if pattern == "random":  # n distinct slots, in random order, in O(n) memory whatever the file's size
        return np.random.default_rng(seed).choice(slots, n, replace=False).astype(np.int64) * request
    if pattern == "repeat":
        return np.zeros(n, dtype=np.int64)
    raise ValueError(pattern)


@dataclass
class IOPass:
    """One pass of requests over a file at a queue depth (= worker threads, each synchronous, like fio psync
    with numjobs=queue_depth). Per-request latencies of every pass are kept in ``latencies_s``."""

    fd: int
    offs: np.ndarray
    request: int
    queue_depth: int
    write: bool
    align: int
    tile: Optional[np.ndarray] = None  # for writes: the file's pattern, written from stamped tile windows
    targets: Optional[list] = None  # one buffer per request (e.g. slices of a pinned buffer) instead of per thread

    def __post_init__(self):
        self.buffers = None if self.targets is not None or self.write else \
            [aligned_buffer(self.request, self.align) for _ in range(self.queue_depth)]
        self.slots = None
        if self.write and self.targets is None:
            # every request writes the file's own pattern for its offset (the file stays verifiable) from a
            # stamped window of its thread's slot: no copy of the request's bytes inside the pass
            self.slots, self.stride = pattern_slots(self.tile, self.request, self.queue_depth, self.align)
            self.words = np.frombuffer(self.slots, dtype=np.int64)
        self.latencies_s: list[np.ndarray] = []
        self.error: Optional[BaseException] = None

    def _worker(self, i: int, lat: np.ndarray, verify: Optional[list]) -> None:
        try:
            for k in range(i, len(self.offs), self.queue_depth):
                off = int(self.offs[k])
                if self.targets is not None:
                    buf = self.targets[k]
                elif self.slots is not None:
                    w = stamp_window(self.words, self.stride, i, off, self.request)
                    buf = self.slots[w:w + self.request]
                else:
                    buf = self.buffers[i]
                t0 = time.perf_counter_ns()
                n = os.pwrite(self.fd, buf, off) if self.write else os.preadv(self.fd, [buf], off)
                lat[k] = (time.perf_counter_ns() - t0) * 1e-9
                if n != self.request:
                    raise OSError(errno.EIO, f"short {'write' if self.write else 'read'}: {n} of {self.request} at {off}")
                if verify is not None:
                    bad = first_bad_page(buf, verify[0], off)
                    if bad is not None:
                        verify[1].append((off, bad))
        except BaseException as e:  # surfaced by run()
            self.error = e

    def run(self, verify_tile: Optional[np.ndarray] = None) -> list:
        """Issue every request; returns [(offset, bad page)] mismatches when ``verify_tile`` is given."""
        lat = np.empty(len(self.offs))
        bad: list = []
        verify = [verify_tile, bad] if verify_tile is not None else None
        threads = [threading.Thread(target=self._worker, args=(i, lat, verify)) for i in range(self.queue_depth)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if self.error is not None:
            err, self.error = self.error, None
            if isinstance(err, OSError) and err.errno == errno.ENOSPC:
                raise StorageFault("no space left on device during the write pass") from None
            raise err
        if verify is None:
            self.latencies_s.append(lat)
        return bad

    @property
    def bytes(self) -> int:
        return len(self.offs) * self.request
