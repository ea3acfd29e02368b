"""KV transfers under load: copies beside prefill/decode compute, layer-wise load/compute overlap, concurrent host
traffic (both directions, all GPUs of the node).

KV transfers while the GPU computes, each activity timed alone and together in the same run (one CUDA stream per
activity, all starting from one event; device-work lanes queued first, behind one spin kernel; host-issued ones,
such as one copy call per block, issued after them with no spin, each from its own host thread when there are
several; host threads on the CPU). On a GPU the compute lane is a CUDA graph per layer (captured once per point, as
serving engines run their layers), so it is device work whose time is the GPU's: an eager 32-layer loop is ~2,000
Python-issued ops, host-bound on an H200, and its "overlap" measured the issue loop (a layer-wise load looked
exposed for 4.7x its own length). A layer that cannot be captured (MoE: expert counts read on the host) skips these
points with the reason. `copy_under_compute`: a paged onload/offload (each transfer method) beside a prefill or
decode layer loop of the preset (repeated to last about as long as the copy): `copy_gbps` under load vs
`copy_gbps_alone`, `compute_slowdown` (with its noise band), `overlap_ratio` (share of the shorter activity hidden,
in [0, 1]), `together_vs_sum`, `together_vs_max`, `load_hidden`. `layerwise_load`: a prefill whose cached KV arrives
from pinned host memory layer by layer on a copy stream, layer l waiting only for its own KV: `exposed_s` /
`exposed_per_layer_s` / `exposed_fraction` (load time not hidden) by `hit_tokens` and `tier_gbps`, next to the ideal
pipeline's `ideal_exposed_s`; `tier_gbps=link` is the host link itself, a number emulates a slower tier by holding
each layer's KV on the copy stream until that tier would have delivered it. The pipelined output must equal the
KV-resident one (the KV is NaN-poisoned first, so a layer that runs early fails the point).
`host_traffic_concurrent`: H2D and D2H at once on N streams each, each direction's GB/s vs alone. `all_gpus_host`:
every GPU of the node to/from host at once, aggregate and per GPU with its NUMA node (skipped with one GPU).

    python -m bench run benchmark=interference model=llama3_8b interference.tier_gbps=[link,25,10,5]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class InterferenceConfig:
    """KV transfers under load (benchmark=interference). Sizes in bytes, tokens, GB/s = 1e9 B/s."""

    budget_s: Optional[float] = None  # family time budget (s; null: none)
    # copy_under_compute: a paged KV move beside a prefill or decode layer loop
    methods: list = MISSING  # its transfer methods: staged, uva_kernel, memcpy_per_block (an axis)
    directions: list = MISSING  # onload (host -> pool) | offload (pool -> host)
    computes: list = MISSING  # prefill | decode
    copy_bytes: int = MISSING
    block_tokens: int = 16  # KV block size of the copies (tokens)
    layout: str = "layer_major"  # pool layout of the copies
    pool_factor: int = 2  # the GPU pool holds this many times the blocks moved
    compute_layers: int = 4
    prefill_new: int = MISSING
    prefill_ctx: int = MISSING  # cached tokens of the compute lane's prefill
    decode_batch: int = MISSING
    decode_ctx: int = MISSING  # context of the compute lane's decode
    match_durations: bool = True  # repeat the compute so that alone it lasts about as long as the copy
    max_repeats: int = 64  # most repetitions of the compute to match the copy's duration
    # layerwise_load: layer l+1's KV loads while layer l computes
    layerwise_layers: Optional[int] = None  # null = every layer of the model that fits the memory budget
    layerwise_new: list = MISSING
    hit_tokens: list = MISSING
    tier_gbps: list = MISSING  # "link" (the host link itself) or a slower tier's GB/s, emulated by pacing
    # host_traffic_concurrent / all_gpus_host
    host_streams: list = MISSING
    host_bytes: int = MISSING
    seed: int = 4321  # seed of the buffers' patterns
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "interference", order=50, config=InterferenceConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("interference", "KV transfers under load", "plots:interference",
                 ("copy_under_compute", "layerwise_load")),),
    unplotted={"host_traffic_concurrent": "both directions at once: the report's tables and bench compare",
                "all_gpus_host": "every GPU of the node at once: the report's tables and bench compare"}))
