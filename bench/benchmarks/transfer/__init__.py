"""KV block transfer HBM <-> host: contiguous copies (pinned, pageable, both ways, several streams) and paged KV
gathers/scatters shaped by the model preset.

Contiguous `h2d_pinned`, `d2h_pinned`, `h2d_pageable`, `d2h_pageable`, `d2d` over `transfer.sizes` (4 KiB .. 1 GiB;
up to `transfer.latency_max_bytes`: `latency_us`, one copy issued and completed, host round trip, and
`amortized_us_per_copy`, back-to-back copies behind the spin; `d2d` sizes that fit L2 are timed L2-cold and held to
the HBM peak on the bytes read, `read_gbps`), `bidir_pinned` (both directions at once, total GB/s),
`h2d_pinned_streams` / `d2h_pinned_streams` (N streams). Paged KV: `paged_offload` (gather N random blocks of a
paged GPU pool into pinned host memory) and `paged_onload` (scatter back), with block size from `model=` and
`transfer.block_tokens`, for two pool layouts (`layer_major`: one pool per layer, as vLLM; `block_major`: a block's
layers contiguous, as LMCache chunks) and three methods: `memcpy_per_block` (one cudaMemcpyAsync per chunk),
`staged` (gather into a GPU staging buffer + one bulk copy), `uva_kernel` (`kernels/kv_transfer.cu` via CuPy,
reading/writing pinned host memory through UVA with 16-byte accesses). Each reports GB/s of KV bytes, `us_per_block`
and `fraction_of_contiguous` (against a contiguous pinned copy of the same bytes, measured in the same run). Pinned
buffers are placed on the GPU's NUMA node. Results above the PCIe link's peak (generation x width from the
fingerprint) are flagged.

    python -m bench run benchmark=transfer model=llama3_70b -m transfer.block_tokens=[16],[64],[256]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class TransferConfig:
    budget_s: Optional[float] = None  # family time budget (s; null: none)
    sizes: list = MISSING  # contiguous copy sizes (bytes, an axis)
    latency_max_bytes: int = MISSING
    streams: list = MISSING
    stream_bytes: int = MISSING
    numa_pin: bool = True
    block_tokens: list = MISSING  # paged KV block sizes (tokens, an axis)
    layouts: list = MISSING  # pool layouts: layer_major (a pool per layer), block_major (an axis)
    methods: list = MISSING  # paged move methods: memcpy_per_block, staged, uva_kernel (an axis)
    paged_bytes: int = MISSING
    pool_factor: int = MISSING
    seed: int = 1234  # seed of the buffers' patterns


FAMILY = family(Family(
    "transfer", order=20, config=TransferConfig, package=__name__, modules=('contiguous', 'paged'),
    plots=(Plot("bandwidth_vs_size", "Host <-> device copy bandwidth vs size", "plots:bandwidth_vs_size",
                 ("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable", "bidir_pinned", "d2d")),
            Plot("paged_methods", "Paged KV transfer methods vs block size", "plots:paged_methods",
                 ("paged_offload", "paged_onload"))),
    unplotted={"h2d_pinned_streams": "one GB/s per stream count: the report's tables and bench compare",
                "d2h_pinned_streams": "one GB/s per stream count: the report's tables and bench compare"}))
