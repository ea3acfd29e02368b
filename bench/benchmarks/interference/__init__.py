"""KV transfers under load: copies beside prefill/decode compute, layer-wise load/compute overlap, concurrent
host traffic (both directions, all GPUs of the node)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class InterferenceConfig:
    """KV transfers under load (benchmark=interference). Sizes in bytes, tokens, GB/s = 1e9 B/s."""

    budget_s: Optional[float] = None
    # copy_under_compute: a paged KV move beside a prefill or decode layer loop
    methods: list = MISSING
    directions: list = MISSING  # onload (host -> pool) | offload (pool -> host)
    computes: list = MISSING  # prefill | decode
    copy_bytes: int = MISSING
    block_tokens: int = 16
    layout: str = "layer_major"
    pool_factor: int = 2
    compute_layers: int = 4
    prefill_new: int = MISSING
    prefill_ctx: int = MISSING
    decode_batch: int = MISSING
    decode_ctx: int = MISSING
    match_durations: bool = True  # repeat the compute so that alone it lasts about as long as the copy
    max_repeats: int = 64
    # layerwise_load: layer l+1's KV loads while layer l computes
    layerwise_layers: Optional[int] = None  # null = every layer of the model that fits the memory budget
    layerwise_new: list = MISSING
    hit_tokens: list = MISSING
    tier_gbps: list = MISSING  # "link" (the host link itself) or a slower tier's GB/s, emulated by pacing
    # host_traffic_concurrent / all_gpus_host
    host_streams: list = MISSING
    host_bytes: int = MISSING
    seed: int = 4321
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "interference", order=50, config=InterferenceConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("interference", "KV transfers under load", "plots:interference",
                 ("copy_under_compute", "layerwise_load")),),
    unplotted={"host_traffic_concurrent": "both directions at once: the report's tables and bench compare",
                "all_gpus_host": "every GPU of the node at once: the report's tables and bench compare"}))
