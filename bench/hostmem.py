"""Host buffers for transfers: pinned (page-locked, on the GPU's NUMA node where known) or pageable."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

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
    """Run the body on the CPUs of ``node`` so first-touch places its pages there (Linux default local policy)."""
    if node is None or node < 0 or not hasattr(os, "sched_setaffinity"):
        yield None
        return
    cpus = node_cpus(node)
    if not cpus:
        yield None
        return
    old = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, cpus & old or cpus)
        yield node
    finally:
        os.sched_setaffinity(0, old)


def host_buffer(nbytes: int, pinned: bool, device, numa_node: Optional[int] = None,
                align: int = 4096) -> tuple[torch.Tensor, dict]:
    """A uint8 host buffer of ``nbytes`` starting on an ``align``-byte boundary (O_DIRECT and 16-byte kernel
    accesses need it) and facts about it (pinned or not, NUMA node used).

    Pinned memory needs CUDA; on the CPU the buffer is ordinary memory and the facts say so."""
    want_pin = pinned and device.is_cuda
    with on_numa_node(numa_node if want_pin else None) as used:
        raw = torch.empty(nbytes + align, dtype=torch.uint8, pin_memory=want_pin)
        raw.fill_(0)  # first touch inside the NUMA binding (cudaHostAlloc has already faulted pinned pages)
    off = (-raw.data_ptr()) % align
    buf = raw[off:off + nbytes]
    return buf, {"pinned": bool(raw.is_pinned()) if device.is_cuda else False, "host_numa_node": used}


def pattern(nbytes: int, seed: int, device) -> torch.Tensor:
    """Seeded random bytes on ``device`` (never zeros: they hide unwritten outputs)."""
    g = torch.Generator(device=device).manual_seed(seed)
    return torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device, generator=g)


POISON = 0xA5


def first_mismatch(got: torch.Tensor, want: torch.Tensor, unit: int) -> Optional[int]:
    """Index of the first ``unit``-byte unit where ``got`` differs from ``want``, or None (compares on got's device)."""
    if got.numel() != want.numel():
        return 0
    diff = (got.reshape(-1, unit) != want.to(got.device).reshape(-1, unit)).any(dim=1)
    bad = torch.nonzero(diff)
    return int(bad[0, 0]) if bad.numel() else None
