"""Host buffers for transfers: pinned (page-locked, on the GPU's NUMA node where known) or pageable."""
from __future__ import annotations

import mmap
import os
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def node_cpus(node: int) -> Optional[set[int]]:
    """CPUs of a NUMA node from sysfs (``0-15,32-47`` lists), or None."""
    try:
        text = Path(f"/sys/devices/system/node/node{node}/cpulist").read_text().strip()
    except OSError:
        return None
    cpus: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus or None


@contextmanager
def on_numa_node(node: Optional[int]):
    """Run the body on the CPUs of ``node`` so first-touch places its pages there (Linux default local policy).

    Yields the node used, or a string saying why placement was skipped: the node's CPUs may lie outside this
    process's allowed set (a container cpuset or a SLURM CPU binding); binding there is refused by the kernel
    (EINVAL) and would be wrong anyway, so the process is never bound outside its allowed CPUs."""
    if node is None or node < 0 or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    cpus = node_cpus(node)
    if not cpus:
        yield f"skipped: CPUs of NUMA node {node} unknown (no sysfs node list)"
        return
    old = os.sched_getaffinity(0)
    allowed = cpus & old
    if not allowed:
        yield (f"skipped: NUMA node {node}'s CPUs are outside this process's allowed CPUs "
               f"({len(old)} allowed by cpuset/SLURM binding)")
        return
    try:
        os.sched_setaffinity(0, allowed)
    except OSError as e:
        yield f"skipped: binding to NUMA node {node} failed ({e.strerror})"
        return
    try:
        yield node
    finally:
        os.sched_setaffinity(0, old)


PAGE = mmap.PAGESIZE
REGISTER_FLAGS = 0x1 | 0x2  # cudaHostRegisterPortable | cudaHostRegisterMapped (device access by the host pointer)


def pinned_empty(nbytes: int) -> torch.Tensor:
    """Exactly ``nbytes`` (page-rounded) of page-locked host memory: an anonymous mapping registered with
    cudaHostRegister, unregistered and unmapped when the last tensor viewing it is freed.

    torch's pinned allocator (``pin_memory=True``) rounds every request up to a power of two and keeps the blocks
    cached for the life of the process (``torch.cuda.empty_cache`` does not return them): a sweep of large host
    buffers would end holding tens of GiB of pinned memory. Pages are touched here, so call it inside
    :func:`on_numa_node` to place them."""
    size = max(PAGE, -(-int(nbytes) // PAGE) * PAGE)
    mm = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(mm, dtype=np.uint8)
    arr[::PAGE] = 0  # first touch: the pages land on the NUMA node of the CPU running this
    cudart = torch.cuda.cudart()
    ptr = arr.ctypes.data
    err = int(cudart.cudaHostRegister(ptr, size, REGISTER_FLAGS))
    if err != 0:
        clear_cuda_error()  # else the next, unrelated kernel launch check would raise it
        raise RuntimeError(f"cudaHostRegister of {size} bytes failed (cudaError {err}): not enough lockable memory?")
    fin = weakref.finalize(arr, _unregister, cudart, ptr)  # runs before numpy releases the mapping
    fin.atexit = False  # at exit the driver releases it with the process; no calls into a CUDA context going away
    return torch.from_numpy(arr)[:nbytes]


def _unregister(cudart, ptr: int) -> None:
    """Unpin a buffer whose last view is gone: after the device is idle (an async copy from or into it may still
    be in flight when a point fails mid-queue), then unregister; never raises (it runs inside garbage
    collection)."""
    try:
        torch.cuda.synchronize()
    except Exception:  # a failed context: unregister anyway
        pass
    try:
        if int(cudart.cudaHostUnregister(ptr)) != 0:
            clear_cuda_error()
    except Exception:  # interpreter shutdown: the driver releases it with the process
        pass


def clear_cuda_error() -> None:
    """Reset the CUDA runtime's last-error state after a failed call whose error we handled (torch's cudart
    bindings return it without clearing it): cudaGetLastError of the libcudart this process loaded."""
    import ctypes
    import re

    try:
        with open("/proc/self/maps") as f:
            libs = sorted({line.split()[-1] for line in f if re.search(r"/libcudart\.so(\.\d+)*$", line.rstrip())})
        if libs:
            ctypes.CDLL(libs[0]).cudaGetLastError()
    except OSError:
        pass


def host_buffer(nbytes: int, pinned: bool, device, numa_node: Optional[int] = None,
                align: int = 4096) -> tuple[torch.Tensor, dict]:
    """A uint8 host buffer of ``nbytes`` starting on an ``align``-byte boundary (O_DIRECT and 16-byte kernel
    accesses need it), its pages placed on ``numa_node`` (pinned and pageable alike: a pageable copy is staged by
    the driver from these pages), and facts about it (pinned or not, NUMA node used or why placement was skipped).

    Pinned memory needs CUDA: exactly sized and freed with the buffer (:func:`pinned_empty`). On the CPU the
    buffer is ordinary memory and the facts say so."""
    want_pin = pinned and device.is_cuda
    with on_numa_node(numa_node) as used:  # pinned or pageable: first touch places the pages on the node
        if want_pin:
            buf = pinned_empty(nbytes)  # page aligned
        else:
            raw = torch.empty(nbytes + align, dtype=torch.uint8)
            raw.fill_(0)
            off = (-raw.data_ptr()) % align
            buf = raw[off:off + nbytes]
    facts = {"pinned": bool(buf.is_pinned()) if want_pin else False,
             "pinned_alloc": "cudaHostRegister, exact size" if want_pin else None}
    if isinstance(used, str):
        facts["host_numa_node"], facts["numa_placement"] = None, used
    else:
        facts["host_numa_node"] = used
    return buf, facts


def pattern(nbytes: int, seed: int, device) -> torch.Tensor:
    """Seeded random bytes on ``device`` (never zeros: they hide unwritten outputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device, generator=g)


FILL_CHUNK = 64 << 20


def fill_pattern(buf: torch.Tensor, seed: int, device) -> torch.Tensor:
    """Fill host ``buf`` (uint8) with seeded random bytes. With a GPU they are generated there, 64 MiB at a time,
    and copied over (~50 GB/s pinned, ~10 pageable, against ~0.15 GB/s for torch's CPU generator: a 1 GiB source
    took ~7 s to fill on the host); the temporary device chunk is at most FILL_CHUNK bytes."""
    n = buf.numel()
    if not getattr(device, "is_cuda", False):
        return buf.copy_(pattern(n, seed, "cpu"))
    for i, start in enumerate(range(0, n, FILL_CHUNK)):
        end = min(n, start + FILL_CHUNK)
        buf[start:end].copy_(pattern(end - start, seed * 1_000_003 + i, device.torch))
    return buf


POISON = 0xA5


def first_mismatch(got: torch.Tensor, want: torch.Tensor, unit: int) -> Optional[int]:
    """Index of the first ``unit``-byte unit where ``got`` differs from ``want``, or None (compares on got's device)."""
    if got.numel() != want.numel():
        return 0
    diff = (got.reshape(-1, unit) != want.to(got.device).reshape(-1, unit)).any(dim=1)
    bad = torch.nonzero(diff)
    return int(bad[0, 0]) if bad.numel() else None
