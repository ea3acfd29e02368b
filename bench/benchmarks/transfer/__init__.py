"""KV block transfer HBM <-> host: contiguous copies (pinned, pageable, both ways, several streams) and paged KV
gathers/scatters shaped by the model preset."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class TransferConfig:
    budget_s: Optional[float] = None
    sizes: list = MISSING
    latency_max_bytes: int = MISSING
    streams: list = MISSING
    stream_bytes: int = MISSING
    numa_pin: bool = True
    block_tokens: list = MISSING
    layouts: list = MISSING
    methods: list = MISSING
    paged_bytes: int = MISSING
    pool_factor: int = MISSING
    seed: int = 1234


FAMILY = family(Family(
    "transfer", order=20, config=TransferConfig, package=__name__, modules=('contiguous', 'paged'),
    plots=(Plot("bandwidth_vs_size", "Host <-> device copy bandwidth vs size", "plots:bandwidth_vs_size",
                 ("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable", "bidir_pinned", "d2d")),
            Plot("paged_methods", "Paged KV transfer methods vs block size", "plots:paged_methods",
                 ("paged_offload", "paged_onload"))),
    unplotted={"h2d_pinned_streams": "one GB/s per stream count: the report's tables and bench compare",
                "d2h_pinned_streams": "one GB/s per stream count: the report's tables and bench compare"}))
