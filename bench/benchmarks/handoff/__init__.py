"""Disaggregated handoff: one request's KV moved from its prefill instance to its decode instance through NIXL, between
two real processes (a peer started on this node, or a second SLURM task on another node), in the paged layout of the
model preset. Sizes in tokens and bytes.

The run's own process is always the side that initiates and times: decode pulling (`op=read`: NIXL READ from the
peer's prefill pool) or prefill pushing (`op=write`: NIXL WRITE into the peer's decode pool). Both sides hold a paged
pool (`handoff.pool_factor` x the request's blocks, one buffer per layer, K and V apart: vLLM's layout) in `dram` or,
where there is a GPU, `vram` (two processes on two GPUs when the node has them, else on one); the request's blocks sit
at random slots on each side and one descriptor is one (layer, K|V, block) chunk. Agent metadata and control travel
over a TCP side channel, as serving stacks exchange them. `handoff_request`: the request in one descriptor list
(made from lists prepared once, posted, completed, released: what a connector does per request), with a notification
to the peer; `gbps` (KV bytes moved / median request time), `descriptors_per_s`, `latency_ms_p50` / `latency_ms_p99`
(single requests). `handoff_layerwise`: each layer's list posted when that layer's prefill would end
(`handoff.layer_compute_s` per layer, or one layer's prefill FLOPs of the context at the GEMM ceiling measured in the
run: the shortest layer, so the least that can hide); `exposed_ms` is the request's time after the last layer's
compute (median, p50, p99), `hidden_fraction` the share of the whole request's time hidden behind compute.
`handoff_fit`: t = t0 + n_desc x c + bytes / BW fitted over the run's `handoff_request` points of each op, memory and
backend (`t0_us`, `us_per_descriptor`, `fit_gbps`, the residual). The destination is poisoned before, and checked byte
for byte after, a request outside timing (the request's chunks against the source's seeded pattern, every other
chunk still poisoned), before and after timing, and the peer must have received every notification. Without NIXL
the points are skipped with how to install it (`pip install -e ".[nixl-cu13]"`).

    python -m bench run benchmark=handoff model=llama3_70b handoff.block_tokens=[16,64,256]
    srun --nodes=2 --ntasks=2 --ntasks-per-node=1 scripts/handoff_srun.sh model=llama3_70b   # across two nodes
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class HandoffConfig:
    """Disaggregated handoff (benchmark=handoff): one request's KV from prefill to decode through NIXL between two
    processes. Sizes in tokens; times in seconds."""

    budget_s: Optional[float] = None  # family time budget (s; null: none)
    ops: list = MISSING  # read (decode pulls) | write (prefill pushes) (an axis)
    memory: list = MISSING  # dram | vram: where both sides' pools live (an axis; vram needs a GPU)
    backends: list = MISSING  # NIXL backends (an axis): UCX; another where its plugin runs here
    context_tokens: list = MISSING  # the request's tokens (an axis)
    block_tokens: list = MISSING  # tokens per KV block (an axis; serving stacks use 16 .. 512)
    layerwise_context_tokens: list = MISSING  # handoff_layerwise: the request's tokens ([]: no layer-wise points)
    layerwise_block_tokens: list = MISSING  # handoff_layerwise: tokens per KV block
    # per-layer prefill time pacing handoff_layerwise (s; null: one layer's prefill FLOPs of the context at the GEMM
    # ceiling measured in the run)
    layer_compute_s: Optional[float] = None
    pool_factor: int = 2  # each side's pool holds this many times the request's blocks (random slots)
    latency_samples: int = 200  # single requests timed for the p50/p99 latency (within harness.time_budget_s)
    # null: the run starts its peer on this node; a file path: the peer is a process started elsewhere (a second
    # SLURM task: scripts/handoff_srun.sh) that finds this run's address there
    peer_rendezvous: Optional[str] = None
    # vram: the peer's GPU (null: the next GPU when the node has two or more, else the same one; a rendezvous peer:
    # its own first GPU)
    peer_gpu: Optional[int] = None
    peer_wait_s: float = 300.0  # how long a run waits for its peer to connect (s)
    seed: int = 4242  # seed of the source's pattern and of the blocks' slots
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "handoff", order=90, config=HandoffConfig, package=__name__, modules=("benchmarks",),
    plots=(Plot("handoff_bandwidth", "Disaggregated handoff: GB/s vs block size, with the per-descriptor cost",
                "plots:handoff_bandwidth", ("handoff_request", "handoff_fit")),
           Plot("handoff_layerwise", "Disaggregated handoff layer by layer: the time exposed after the last layer",
                "plots:handoff_layerwise", ("handoff_layerwise",)))))
