"""Where benchmarks run: device choice, synchronisation, memory release and the L2 flush buffer."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Optional

import torch

from bench.errors import UserError

DEVICE_CHOICES = ("auto", "cuda", "cpu")


@dataclass
class Device:
    """The device a run measures. ``kind`` is "cuda" or "cpu"; records carry it as ``device``."""

    kind: str
    index: int = 0

    @property
    def torch(self) -> torch.device:
        return torch.device(self.kind, self.index) if self.kind == "cuda" else torch.device("cpu")

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.index)

    def clock(self, hold_stream: bool = True):
        """The timer for this device; ``hold_stream=False`` for host-synchronous calls (pageable copies)."""
        from bench.timing import CpuClock, CudaClock

        return CudaClock(hold_stream) if self.is_cuda else CpuClock()

    def lanes(self, lanes, hold_stream: bool = True):
        """The timer for concurrent lanes: CUDA streams (one per lane) or host threads."""
        from bench.timing import CpuLanes, CudaLanes

        return CudaLanes(lanes, self.index, hold_stream) if self.is_cuda else CpuLanes(lanes)

    def release(self) -> None:
        """Free what a finished or failed point left behind (used after OOM and between points)."""
        gc.collect()
        if self.is_cuda:
            torch.cuda.synchronize(self.index)
            torch.cuda.empty_cache()

    def l2_bytes(self) -> Optional[int]:
        if not self.is_cuda:
            return None
        return int(getattr(torch.cuda.get_device_properties(self.index), "L2_cache_size", 0)) or None


def select_device(choice: str = "auto", index: int = 0) -> Device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is a user error."""
    if choice not in DEVICE_CHOICES:
        raise UserError(f"harness.device={choice!r} is not allowed; use one of: {', '.join(DEVICE_CHOICES)}")
    has_cuda = torch.cuda.is_available()
    if choice == "cuda" and not has_cuda:
        raise UserError("harness.device=cuda but no CUDA device is visible; use harness.device=auto or cpu")
    if choice == "cuda" or (choice == "auto" and has_cuda):
        if index >= torch.cuda.device_count():
            raise UserError(f"harness.device_index={index} but only {torch.cuda.device_count()} CUDA device(s) exist")
        torch.cuda.set_device(index)
        return Device("cuda", index)
    return Device("cpu")


class L2Flusher:
    """Evicts the GPU L2 by writing a buffer of twice its size (FlashInfer/nvbench practice).

    Called outside the timed region; a no-op on the CPU, where the point records l2_flush=False.
    """

    def __init__(self, device: Device):
        self.device = device
        n = device.l2_bytes()
        self.buf = torch.empty(2 * n, dtype=torch.uint8, device=device.torch) if n else None

    @property
    def active(self) -> bool:
        return self.buf is not None

    def __call__(self) -> None:
        if self.buf is not None:
            self.buf.fill_(0x5A)
