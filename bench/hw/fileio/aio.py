"""Asynchronous file I/O for the storage tier: Linux native AIO (io_submit / io_getevents) driven by a compiled
loop, so ``queue_depth`` requests stay in flight from one thread with no Python call per request.

Why this engine: the kernel's AIO ABI needs no library (raw syscalls through libc's ``syscall``), is allowed by
the default seccomp profiles of Docker and containerd (which block io_uring), and is asynchronous exactly where
tierbench reads and writes: O_DIRECT files. The Python io_uring bindings on PyPI today are alpha (liburing 2026:
Linux 6.14+, untested calls) or days old; KvikIO's host path needs libcuda, so it cannot run on a CPU node, and
costs a Python call per request. The loop is a numba function calling the syscalls through ctypes; it times every
request from its submission to the io_getevents call that reaped it (fio's total latency, lat: an upper
bound by the batch).
Each freed slot is resubmitted at once, one io_submit per request (fio's default iodepth_batch_submit=1): a batch
io_submit plugs the block queue until the whole batch is in, which cost ~15% at 4 KiB QD 16 on a virtio disk.

Without O_DIRECT the kernel completes AIO inside io_submit (the queue depth silently becomes 1), so the engine
refuses buffered files: such a point is skipped with that reason.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from typing import Optional

import numpy as np

from bench.hw.fileio import PAGE, PATTERN_PERIOD, aligned_buffer, first_bad_page, pattern_slots

# syscall numbers: x86_64 and the generic table (aarch64, riscv64)
_NR = {"x86_64": (206, 207, 208, 209), "aarch64": (0, 1, 4, 2), "arm64": (0, 1, 4, 2), "riscv64": (0, 1, 4, 2)}
IOCB_CMD_PREAD, IOCB_CMD_PWRITE = 0, 1
IOCB_WORDS, EVENT_WORDS = 8, 4  # struct iocb: 64 bytes; struct io_event: 32 bytes
PAGE_BYTES = PAGE  # the pattern's page stamps: one 8-byte word at the start of every page
SLOT, OWN, WINDOW = 0, 1, 2  # where a request's buffer is: its slot's, its own, a stamped window of its slot's
CLOCK_MONOTONIC = 1


def unavailable() -> Optional[str]:
    """Why this engine cannot run here (None when it can)."""
    if platform.system() != "Linux":
        return "Linux native AIO needs Linux"
    if platform.machine() not in _NR:
        return f"no AIO syscall numbers known for {platform.machine()}"
    try:
        _compiled()
    except Exception as e:  # numba missing or failing to compile the loop
        return f"the AIO loop did not compile ({type(e).__name__}: {e})"
    return None


_LOOP = None


def _compiled():
    """The numba loop, compiled once per process (it embeds libc's function addresses: never cached on disk)."""
    global _LOOP
    if _LOOP is not None:
        return _LOOP
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    sysc = libc.syscall
    sysc.restype = ctypes.c_long
    sysc.argtypes = [ctypes.c_long, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64, ctypes.c_uint64,
                     ctypes.c_uint64]
    clock = libc.clock_gettime
    clock.restype = ctypes.c_int
    clock.argtypes = [ctypes.c_int, ctypes.c_uint64]
    nr_setup, nr_destroy, nr_getevents, nr_submit = _NR[platform.machine()]
    now_ns, submit, address = _helpers(sysc, clock, nr_submit)

    def setup(qd):
        ctx = ctypes.c_ulong(0)
        if sysc(nr_setup, qd, ctypes.addressof(ctx), 0, 0, 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"io_setup({qd}): {os.strerror(e)}")
        return ctx.value

    def destroy(ctx):
        sysc(nr_destroy, ctx, 0, 0, 0, 0)

    _LOOP = (_loop(sysc, nr_getevents, now_ns, submit, address), setup, destroy)
    return _LOOP


def _helpers(sysc, clock, nr_submit):
    """(now_ns, submit, address): the loop's jitted helpers, calling libc's ``syscall`` and ``clock_gettime``."""
    from numba import njit

    @njit(cache=False, nogil=True)
    def now_ns(ts, ts_addr):
        clock(CLOCK_MONOTONIC, ts_addr)
        return ts[0] * 1_000_000_000 + ts[1]

    @njit(cache=False, nogil=True)
    def submit(ctx, ptrs, ptrs_addr, first, count):
        """io_submit ``count`` iocbs from ptrs[first:]; retries on EAGAIN/EINTR; returns 0 or -errno."""
        done = 0
        while done < count:
            r = sysc(nr_submit, ctx, count - done, ptrs_addr + 8 * (first + done), 0, 0)
            if r > 0:
                done += r
            elif r == -1:
                return -1  # errno is set: the caller reads it
            # r == 0: nothing taken (queue full): try again
        return 0

    @njit(cache=False, nogil=True)
    def address(i, s, offs, req, bufs_addr, mode, slot_bytes, slot_words, period):
        """Buffer of request i in iocb slot s. SLOT: the slot's (reads); OWN: the request's own (bufs_addr + i
        req); WINDOW: the window of the slot's repeated pattern tile at the request's place in the tile, after
        its page stamps are written (bench.hw.fileio.pattern_slots / stamp_window, here without Python)."""
        if mode == OWN:
            return bufs_addr + i * req
        if mode == SLOT:
            return bufs_addr + s * req
        start = offs[i] % period
        first_page = offs[i] // PAGE_BYTES
        w0 = (s * slot_bytes + start) // 8
        for k in range(req // PAGE_BYTES):
            slot_words[w0 + k * (PAGE_BYTES // 8)] = first_page + k
        return bufs_addr + s * slot_bytes + start

    return now_ns, submit, address


def _loop(sysc, nr_getevents, now_ns, submit, address):
    """The jitted submit-and-reap loop over one pass of requests (its helpers: :func:`_helpers`)."""
    from numba import njit

    @njit(cache=False, nogil=True)
    def loop(ctx, fd, opcode, offs, req, qd, bufs_addr, mode, slot_bytes, slot_words, period, iocbs, iocbs_addr,
             ptrs, ptrs_addr, events, events_addr, lat_ns, ts, ts_addr, bad):
        """Issue every request (offset offs[i], req bytes) keeping ``qd`` in flight, each in the buffer
        :func:`address` gives. Nothing is copied here: the loop stamps at most a word a page, submits and reaps.
        Returns 0, or -1 with bad[0] = request index and bad[1] = the result (short transfer or -errno) of the
        first failure."""
        n = offs.size
        nxt = 0
        m = 0
        done = 0
        while nxt < n and m < qd:  # fill every slot
            s = m
            base = IOCB_WORDS * s
            iocbs[base + 0] = nxt
            iocbs[base + 2] = opcode | (fd << 32)
            iocbs[base + 3] = address(nxt, s, offs, req, bufs_addr, mode, slot_bytes, slot_words, period)
            iocbs[base + 4] = req
            iocbs[base + 5] = offs[nxt]
            ptrs[m] = iocbs_addr + 64 * s
            lat_ns[nxt] = now_ns(ts, ts_addr)
            nxt += 1
            m += 1
        if submit(ctx, ptrs, ptrs_addr, 0, m) != 0:
            return -2
        while done < n:
            got = sysc(nr_getevents, ctx, 1, qd, events_addr, 0)
            if got < 0:
                return -3
            t = now_ns(ts, ts_addr)
            for j in range(got):
                rid = events[EVENT_WORDS * j]
                obj = events[EVENT_WORDS * j + 1]
                res = events[EVENT_WORDS * j + 2]
                lat_ns[rid] = t - lat_ns[rid]
                done += 1
                if res != req:
                    bad[0] = rid
                    bad[1] = res
                    return -1
                if nxt < n:
                    s = (obj - iocbs_addr) // 64
                    base = IOCB_WORDS * s
                    iocbs[base + 0] = nxt
                    iocbs[base + 3] = address(nxt, s, offs, req, bufs_addr, mode, slot_bytes, slot_words, period)
                    iocbs[base + 5] = offs[nxt]
                    ptrs[0] = obj
                    lat_ns[nxt] = t
                    nxt += 1
                    if submit(ctx, ptrs, ptrs_addr, 0, 1) != 0:  # at once, one by one: no plugging of a batch
                        return -2
        return 0

    return loop


class AioPass:
    """One pass of requests over a file at a queue depth, kept in flight by Linux AIO (interface of
    bench.hw.fileio.IOPass: ``run(verify_tile)``, ``latencies_s``, ``bytes``). The file must be open with O_DIRECT;
    buffers are page-aligned. Reads: one buffer per slot (like fio's). Writes write the file's own pattern (the
    file stays verifiable) with nothing copied in the pass: from a window of their slot's buffer, which holds the
    repeated tile, after stamping its pages (a word a page, ~0.2 ms for 64 MiB): the few hot buffers fio writes
    from. (A full copy into the slot at submission cost 42% of 1 MiB writes at QD 1 against fio on a virtio
    disk; a cold buffer per request, 15-25% at QD 1 there, where the host copies each request.) Host memory:
    bench.benchmarks.storage.benchmarks.engine_host_bytes. ``targets``: the caller's buffer of every request back to back."""

    def __init__(self, fd: int, offs: np.ndarray, request: int, queue_depth: int, write: bool, align: int,
                 tile: Optional[np.ndarray] = None, targets=None):
        self.fd, self.offs, self.request, self.queue_depth, self.write = fd, np.asarray(offs, np.int64), \
            int(request), int(queue_depth), bool(write)
        self.align, self.tile = align, tile
        self.loop, setup, self._destroy = _compiled()
        self.qd_eff = max(1, min(self.queue_depth, len(self.offs)))
        self.ctx = setup(self.qd_eff)
        self.targets = targets
        self.mode = OWN if targets is not None else WINDOW if write else SLOT
        self.slot_bytes, self.slot_words = self.request, np.zeros(1, np.int64)
        if targets is not None:
            self.buf = targets
        elif self.mode == WINDOW:
            self.buf, self.slot_bytes = pattern_slots(tile, self.request, self.qd_eff, align)
            self.slot_words = np.frombuffer(self.buf, dtype=np.int64)
        else:
            self.buf = aligned_buffer(self.qd_eff * self.request, max(align, 4096))
        self.bufs_addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        self.iocbs = np.zeros(IOCB_WORDS * self.qd_eff, np.uint64).view(np.int64)
        self.ptrs = np.zeros(self.qd_eff, np.int64)
        self.events = np.zeros(EVENT_WORDS * self.qd_eff, np.int64)
        self.ts = np.zeros(2, np.int64)
        self.bad = np.zeros(2, np.int64)
        self.latencies_s: list[np.ndarray] = []

    def close(self) -> None:
        if self.ctx:
            self._destroy(self.ctx)
            self.ctx = 0

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _issue(self, offs: np.ndarray, bufs_addr: int, mode: int) -> np.ndarray:
        lat = np.zeros(len(offs), np.int64)
        a = lambda x: x.ctypes.data  # noqa: E731
        rc = self.loop(self.ctx, self.fd, IOCB_CMD_PWRITE if self.write else IOCB_CMD_PREAD, offs, self.request,
                       self.qd_eff, bufs_addr, mode, self.slot_bytes, self.slot_words, PATTERN_PERIOD,
                       self.iocbs, a(self.iocbs), self.ptrs, a(self.ptrs),
                       self.events, a(self.events), lat, self.ts, a(self.ts), self.bad)
        if rc == -1:
            res, off = int(self.bad[1]), int(offs[int(self.bad[0])])
            if res < 0 and -res == errno.ENOSPC:
                from bench.hw.fileio import StorageFault

                raise StorageFault("no space left on device during the write pass")
            what = os.strerror(-res) if res < 0 else f"short {'write' if self.write else 'read'}: {res} of " \
                                                        f"{self.request} bytes"
            raise OSError(-res if res < 0 else errno.EIO, f"AIO request at offset {off}: {what}")
        if rc < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"{'io_submit' if rc == -2 else 'io_getevents'}: {os.strerror(e) if e else 'failed'}")
        return lat

    def run(self, verify_tile: Optional[np.ndarray] = None) -> list:
        """Issue every request; returns [(offset, bad page)] mismatches when ``verify_tile`` is given (reads into
        a buffer per request, in chunks of at most 64 MiB, checked after each chunk: untimed use only)."""
        if verify_tile is None:
            lat = self._issue(self.offs, self.bufs_addr, self.mode)
            self.latencies_s.append(lat * 1e-9)
            return []
        bad = []
        per = max(1, min(len(self.offs), (64 << 20) // self.request))
        scratch = aligned_buffer(per * self.request, max(self.align, 4096))
        addr = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
        view = np.frombuffer(scratch, dtype=np.uint8)
        for c0 in range(0, len(self.offs), per):
            chunk = self.offs[c0:c0 + per]
            self._issue(np.ascontiguousarray(chunk), addr, OWN)
            for i, o in enumerate(chunk):
                page = first_bad_page(view[i * self.request:(i + 1) * self.request], verify_tile, int(o))
                if page is not None:
                    bad.append((int(o), page))
        del view
        return bad

    @property
    def bytes(self) -> int:
        return len(self.offs) * self.request
