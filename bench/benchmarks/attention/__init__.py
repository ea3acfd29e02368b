"""Attention kernels at the model preset's shapes: causal prefill (with cached prefix, only the causal pairs) and
decode over a KV cache, per kernel (auto, forced SDPA backends, FlashInfer, best).

`attn_prefill` (causal, `n_new` tokens after `n_ctx` cached ones: the chunked/prefix prefill that KV reuse produces)
and `attn_decode` (batch x context), at the preset's head shapes (GQA; DeepSeek MLA: decompressed for prefill,
absorbed MQA over its 576-wide latent cache for decode). Backends: `auto` is SDPA unforced, what a serving stack
built on torch gets (`info.dispatched` names the kernel torch picked: cuDNN on an H100/H200 with torch >= 2.9);
`best` times, per shape, every kernel of `attention.best_of` that runs here and passes the numerics check, and is
the fastest one's row (`info.best_backend`, every candidate's time in `info.candidates_s`; each kernel is timed once
per shape and run, its own row and `best` share the timing); `flash`, `cudnn`, `efficient`, `math` force one SDPA
kernel (diagnostics; the forced one is the one that ran, or the point is skipped with the reason); `flashinfer`
paged decode when installed. After cached context only the causal pairs are computed: FlashAttention and the
memory-efficient kernel have a native lower-right mask; cuDNN has none in torch, so its prefill after context is
split as cascade kernels do it (the new queries over the cached keys, unmasked, and over their own keys, causal,
merged by their log-sum-exps); a materialized mask (math) computes the full rectangle and the record says so. K/V
are expanded to the query heads only for a kernel without native GQA (`info.gqa`), and only then is that memory
counted. TFLOP/s counts the causal pairs; decode GB/s counts the model's KV bytes once (never expanded bytes: those
are `kernel_kv_bytes`); the fraction of the run's own ceilings (bf16 GEMM, device copy) on a roofline.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, family


@dataclass
class ComputeSweep:
    """Prefill (n_new x n_ctx) and decode (batch x ctx) axes shared by the attention and layers families."""

    # family time budget (s; null: none): a point that would overrun it is skipped with why
    budget_s: Optional[float] = None
    dtype: str = "model"  # model = the preset's dtype
    cpu_dtype: str = "float32"  # compute dtype on a CPU-only run
    prefill_new: list = MISSING  # new tokens of a prefill (an axis)
    prefill_ctx: list = MISSING  # cached tokens before them (an axis)
    decode_batch: list = MISSING  # sequences of a decode step (an axis)
    decode_ctx: list = MISSING  # cached tokens each reads (an axis)
    cpu: dict = field(default_factory=dict)  # replaces the sweep on a CPU-only run


@dataclass
class AttentionConfig(ComputeSweep):
    backends: list = MISSING  # kernels timed: auto, best, flash, cudnn, efficient, math, flashinfer (an axis)
    # the kernels backend=best chooses among (each timed once per shape and run, with its own row's timing)
    best_of: list = field(default_factory=lambda: ["auto", "flash", "cudnn", "efficient", "flashinfer"])
    page_tokens: int = 16  # FlashInfer's page size (tokens)
    check_tokens: int = 64  # tokens of the float64 numerics check


FAMILY = family(Family(
    "attention", order=10, config=AttentionConfig, package=__name__, modules=('benchmarks',),
    plots=(),
    unplotted={}))  # both drawn by the layers family's roofline (prefill vs decode)
