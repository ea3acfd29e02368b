"""Where benchmarks run: device choice, synchronisation, memory release and the L2 flush buffer."""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Optional

import torch

from bench.core.config import DEVICE_CHOICES
from bench.core.errors import UserError


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
            _runtime().cuda.synchronize(self.index)

    def release(self) -> None:
        """Free what a finished or failed point left behind (used after OOM and between points)."""
        gc.collect()
        if self.is_cuda:
            cuda = _runtime().cuda
            cuda.synchronize(self.index)
            cuda.empty_cache()
            host_empty = getattr(torch._C, "_host_emptyCache", None)  # pinned blocks torch's allocator cached
            if host_empty is not None and cuda is torch.cuda:
                host_empty()

    def mem_free(self) -> int:
        """Free device memory in bytes (CUDA only)."""
        free, _total = _runtime().cuda.mem_get_info(self.index)
        return int(free)

    def l2_bytes(self) -> Optional[int]:
        if not self.is_cuda:
            return None
        return int(getattr(torch.cuda.get_device_properties(self.index), "L2_cache_size", 0)) or None


def _runtime():
    """torch.cuda (or a test's simulated timeline) through the seam (bench.hw.runtime)."""
    from bench.hw.runtime import runtime

    return runtime()


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
    """Evicts the GPU L2 by reading a buffer of twice its size (FlashInfer/nvbench size it so).

    A read, not a write: a written flush buffer leaves L2 full of dirty lines, and the next timed kernel (a small
    decode) would pay their write-back to HBM. The reduction reads every byte and writes one. Called outside the
    timed region; a no-op on the CPU, where the point records l2_flush=False.
    """

    def __init__(self, device: Device):
        self.device = device
        n = device.l2_bytes()
        self.buf = torch.full((2 * n,), 1, dtype=torch.uint8, device=device.torch) if n else None
        self.out = torch.empty((), dtype=torch.uint8, device=device.torch) if n else None

    @property
    def active(self) -> bool:
        return self.buf is not None

    def __call__(self) -> None:
        if self.buf is not None:
            torch.amax(self.buf, dim=0, out=self.out)
