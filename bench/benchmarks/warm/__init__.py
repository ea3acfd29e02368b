"""The warm tier read on demand: token rows fetched per decode step from pinned host memory at fine granularity, keys
scored where they lie, a neighbour GPU's HBM, and large cold-tier flows from NVMe while decode runs. Sizes in bytes.

"Fetch on demand and search in place". `warm_fetch`: each decode step, `warm.rows` token rows of `warm.row_bytes`
(64 B .. 64 KiB and `model`, the preset's per-token per-layer KV row) chosen from a pinned host pool of
`warm.pool_bytes` (8 GiB by default: past L2 and the GPU's TLB reach, on the GPU's NUMA node) land in HBM.
Localities (`warm.locality`, `bench/llm/selection.py`): `uniform` (top-k scatters), `runs_R` (chunks of R
consecutive tokens, as Quest and ShadowKV select) and `repeat_F` (a fraction F of a step's rows were selected by the
previous step and stay in HBM; only the rest crosses the link). Methods: `uva_kernel` (`kernels/warm.cu`
`row_gather` through CuPy: the GPU loads the rows from host memory through UVA with 16-byte accesses, no staging),
`cpu_gather` (the step's row ids come to the host, the CPU gathers into pinned staging, one copy) and `copy_per_run`
(one cudaMemcpyAsync per contiguous run; skipped with why past `warm.max_copy_calls`). GB/s of the bytes that
crossed the link (against the PCIe peak), `useful_gbps` of all k rows, `step_us` (steps back to back) and
`step_us_p50` / `step_us_p99` (single steps, issue to rows in HBM, host round trip included: `warm.latency_samples`
of them), `fraction_of_contiguous` against one contiguous pinned copy of the same bytes in the same run. Every step
of the cycle (`warm.steps` distinct selections) is checked before and after timing: destination poisoned, each row
compared with the pool; a wrong row fails the point. `warm_search`: one decode query scored against
`warm.search_tokens` keys that stay in host memory (the preset's key width: head_dim, or MLA's 576-wide latent),
then top-k: `uva_kernel` (a warp per key reads it through UVA), `cpu` (the CPU scores where the keys lie) or
`copy_first` (keys to HBM, then score); `keys_per_s`, `topk_us_p50` / `topk_us_p99`, the top-k checked against a
float32 reference. `warm_peer`: the same row gathers from a neighbour GPU's HBM (`peer_kernel` over peer access,
`peer_copy` per run); skipped with the reason on one GPU. `cold_read_under_decode`: large sequential reads (64 and
256 MiB requests, queue depth 8 and 32, the storage family's AIO engine, page cache dropped before each pass) from
`storage.path` while decode steps run, each alone and together: `read_gbps` under decode vs `read_gbps_alone`,
`read_bw_retained`, `decode_slowdown`, `overlap_ratio`. On a CPU-only machine the GPU paths run as stand-ins on host
memory, labelled `info.stand_in` in each record (their numbers are the CPU's, never shown as a GPU's); `warm_peer`
and the `uva_kernel` search are skipped.

    python -m bench run benchmark=warm model=llama3_70b warm.locality=[uniform,runs_16,repeat_0.6]
    python -m bench run benchmark=warm warm.rows=[256,2048,16384] warm.row_bytes=[64,576,4096,model]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class WarmConfig:
    """The warm tier read on demand (benchmark=warm): token rows fetched per decode step from pinned host memory,
    keys scored in place, a neighbour GPU's HBM, and cold-tier elephant flows beside decode. Sizes in bytes."""

    budget_s: Optional[float] = None  # family time budget (s; null: none)
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
    search_top_k: int = 2048  # keys kept by a search step's top-k
    # warm_peer: rows and KV blocks gathered from another GPU's HBM (skipped with why on one GPU or a CPU)
    peer_row_bytes: list = MISSING  # row sizes (bytes, or model; an axis)
    peer_rows: int = 2048  # rows a warm_peer step gathers
    peer_methods: list = MISSING  # peer_kernel (loads from the peer's HBM) | peer_copy (cudaMemcpyPeer per run)
    # cold_read_under_decode: large sequential reads from storage (aio engine) while decode runs
    cold_request_bytes: list = MISSING  # >= 64 MiB each
    cold_queue_depths: list = MISSING  # requests in flight
    cold_file_bytes: int = MISSING  # the file the cold flows read (bytes)
    cold_decode_batch: int = 64  # decode batch beside the cold flow
    cold_decode_ctx: int = 8192  # decode context beside the cold flow (tokens)
    cold_layers: int = 4  # decode layers beside the cold flow
    seed: int = 2718  # seed of the pool's pattern and selections
    cpu: dict = field(default_factory=dict)


FAMILY = family(Family(
    "warm", order=80, config=WarmConfig, package=__name__, modules=('benchmarks',),
    plots=(Plot("warm_bandwidth", "Warm tier: bandwidth vs row size (fetch on demand)", "plots:warm_bandwidth",
                 ("warm_fetch", "warm_peer")),
            Plot("warm_step_latency", "Warm tier: step latency vs rows per step", "plots:warm_step_latency",
                 ("warm_fetch",))),
    unplotted={"warm_search": "keys scored per second: bench model's sparse decode and the report's tables",
                "cold_read_under_decode": "decode slowdown beside a cold flow: the report's tables and bench compare"}))
