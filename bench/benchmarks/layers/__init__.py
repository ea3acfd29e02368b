"""Whole transformer layers of the model preset with random weights and a real KV cache: the prefill and decode costs
the throughput model fits.

`layer_prefill` / `layer_decode` time whole transformer layers with random weights of the preset's shapes (norms,
QKV/O, RoPE, attention with a real KV cache, SwiGLU MLP or MoE) for 1, 2 and 4 stacked layers; per-layer time x the
model's layer count gives `model_prefill_s`, `prefill_s_per_token` and `model_decode_step_s`, and the 2/4-layer
points report `scaling_error` against one layer. Each configuration is first checked against a float64 copy
(`check_rel_error`; an MoE layer slimmed to 16 experts for the check, so DeepSeek-V3's fits); a fast wrong kernel is
a `status: error`, never a number. MLA prefill FLOPs include decompressing the cached latent of every cached
position. Attention runs one kernel family per run (`layers.attention=best`): each candidate (GPU: cuDNN,
FlashAttention, memory-efficient for prefill, plus auto for decode; CPU: flash, math) that passes the float64 check
is timed once at a calibration shape and the fastest is used by every layer point, prefill without and after cached
context alike (so the prefill costs never mix a ~350 and a ~640 TFLOP/s kernel); `info.attention_kernel` names it,
`attention_choice` has the timings; a kernel name forces it. The throughput model fits one kernel's records and
refuses a run whose layer records ran several (`attention_kernel=NAME` picks one); its verdict says which kernels it
priced.
"""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from bench.core.family import Family, Plot, family
from bench.benchmarks.attention import ComputeSweep


@dataclass
class LayersConfig(ComputeSweep):
    layer_counts: list = MISSING  # layers stacked per point (an axis; must include 1)
    # the attention kernels of every layer: best (the fastest that passes the float64 check, one prefill kernel for
    # every cached-context length, timed once per run), or auto / flash / cudnn / efficient / math for all
    attention: str = "best"


FAMILY = family(Family(
    "layers", order=40, config=LayersConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("roofline", "Prefill vs decode on the roofline", "plots:roofline",
                 ("layer_prefill", "layer_decode", "attn_prefill", "attn_decode")),),
    unplotted={}))
