"""Attention kernels at the model preset's shapes: causal prefill (with cached prefix, only the causal pairs)
and decode over a KV cache, per kernel (auto, forced SDPA backends, FlashInfer, best)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, family


@dataclass
class ComputeSweep:
    """Prefill (n_new x n_ctx) and decode (batch x ctx) axes shared by the attention and layers families."""

    budget_s: Optional[float] = None
    dtype: str = "model"  # model = the preset's dtype
    cpu_dtype: str = "float32"
    prefill_new: list = MISSING
    prefill_ctx: list = MISSING
    decode_batch: list = MISSING
    decode_ctx: list = MISSING
    cpu: dict = field(default_factory=dict)  # replaces the sweep on a CPU-only run


@dataclass
class AttentionConfig(ComputeSweep):
    backends: list = MISSING
    # the kernels backend=best chooses among (each timed once per shape and run, with its own row's timing)
    best_of: list = field(default_factory=lambda: ["auto", "flash", "cudnn", "efficient", "flashinfer"])
    page_tokens: int = 16
    check_tokens: int = 64


FAMILY = family(Family(
    "attention", order=10, config=AttentionConfig, package=__name__, modules=('benchmarks',),
    plots=(),
    unplotted={}))  # both drawn by the layers family's roofline (prefill vs decode)
