"""The warm tier read on demand: token rows fetched per decode step from pinned host memory at fine
granularity, keys scored where they lie, a neighbour GPU's HBM, and large cold-tier flows from NVMe while decode
runs. Sizes in bytes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class WarmConfig:
    """The warm tier read on demand (benchmark=warm): token rows fetched per decode step from pinned host memory,
    keys scored in place, a neighbour GPU's HBM, and cold-tier elephant flows beside decode. Sizes in bytes."""

    budget_s: Optional[float] = None
    # warm_fetch: each step, `rows` token rows chosen from a pinned host pool of pool_bytes land in HBM
    pool_bytes: int = MISSING  # the host pool (GBs on a GPU node: far beyond L2 and TLB reach)
    row_bytes: list = MISSING  # bytes per row (multiples of 16), or "model": the preset's per-token per-layer KV row
    rows: list = MISSING  # rows per step (k)
    locality: list = MISSING  # uniform | runs_<R> (runs of R consecutive rows) | repeat_<F> (F of a step's rows
    # were in the previous step and stay in HBM; only the rest is fetched)
    methods: list = MISSING  # uva_kernel | cpu_gather | copy_per_run
    steps: int = 8  # distinct steps (row selections) cycled through while timing; each one verified
    latency_samples: int = 200  # single steps timed for the per-step latency percentiles (within the time budget)
    max_copy_calls: int = 16384  # copy_per_run: a step needing more copy calls than this is skipped with why
    # warm_search: score a decode step's query against keys that stay in host memory, then top-k
    search_tokens: list = MISSING  # keys scored per step
    search_methods: list = MISSING  # uva_kernel | cpu | copy_first
    search_top_k: int = 2048
    # warm_peer: rows and KV blocks gathered from another GPU's HBM (skipped with why on one GPU or a CPU)
    peer_row_bytes: list = MISSING
    peer_rows: int = 2048
    peer_methods: list = MISSING  # peer_kernel (loads from the peer's HBM) | peer_copy (cudaMemcpyPeer per run)
    # cold_read_under_decode: large sequential reads from storage (aio engine) while decode runs
    cold_request_bytes: list = MISSING  # >= 64 MiB each
    cold_queue_depths: list = MISSING  # requests in flight
    cold_file_bytes: int = MISSING
    cold_decode_batch: int = 64
    cold_decode_ctx: int = 8192
    cold_layers: int = 4
    seed: int = 2718
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "warm", order=80, config=WarmConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("warm_bandwidth", "Warm tier: bandwidth vs row size (fetch on demand)", "plots:warm_bandwidth",
                 ("warm_fetch", "warm_peer")),
            Plot("warm_step_latency", "Warm tier: step latency vs rows per step", "plots:warm_step_latency",
                 ("warm_fetch",))),
    unplotted={"warm_search": "keys scored per second: bench model's sparse decode and the report's tables",
                "cold_read_under_decode": "decode slowdown beside a cold flow: the report's tables and bench compare"}))
