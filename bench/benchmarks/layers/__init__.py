"""Whole transformer layers of the model preset with random weights and a real KV cache: the prefill and
decode costs the throughput model fits."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from bench.core.family import Family, Plot, family
from bench.benchmarks.attention import ComputeSweep


@dataclass
class LayersConfig(ComputeSweep):
    layer_counts: list = MISSING
    # the attention kernels of every layer: best (the fastest that passes the float64 check, one prefill kernel for
    # every cached-context length, timed once per run), or auto / flash / cudnn / efficient / math for all
    attention: str = "best"


FAMILY = family(Family(
    "layers", order=40, config=LayersConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("roofline", "Prefill vs decode on the roofline", "plots:roofline",
                 ("layer_prefill", "layer_decode", "attn_prefill", "attn_decode")),),
    unplotted={}))
