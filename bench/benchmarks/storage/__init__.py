"""Storage tier: KV blocks and raw requests between host (or GPU) memory and files under storage.path, at
queue depths, with the page cache kept out of every figure (O_DIRECT, or a verified drop)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class StorageConfig:
    budget_s: Optional[float] = None
    budget_bytes: Optional[int] = None  # file bytes read + written by the family (null: no limit)
    path: Optional[str] = None  # directory for storage benchmarks; null = /var/tmp on the root disk
    direct: str = "auto"
    engines: list = field(default_factory=lambda: ["aio", "threads", "fio"])  # host <-> file engines (an axis)
    file_bytes: int = MISSING
    request_bytes: list = MISSING
    kv_block_tokens: list = MISSING
    patterns: list = MISSING
    queue_depths: list = MISSING
    # a timed pass is sized by time, never a bare count, so that it runs at steady state (fio's time_based runs are
    # the reference): about pass_s seconds at the rate an untimed probe pass measured, and at least pass_depths
    # requests per queue slot (the queue's ramp-up and drain under ~3% of the pass); at most pass_max_bytes and the
    # file's distinct slots (sequential/random)
    pass_s: float = 0.1
    pass_depths: int = 32
    pass_max_bytes: int = 1073741824
    cache_check_bytes: int = MISSING
    gpu_request_bytes: list = MISSING
    gpu_queue_depths: list = MISSING
    seed: int = 99


FAMILY = family(Family(
    "storage", order=70, config=StorageConfig, package=__name__, modules=('benchmarks',), budget_bytes=True,
    plots=(Plot("storage_vs_queue_depth", "Storage bandwidth vs queue depth", "plots:storage_vs_queue_depth",
                 ("file_read", "file_write")),),
    unplotted={"file_read_cache_check": "a check (repeat vs distinct blocks), not a rate: cache_suspect in the records",
                "gpu_file_read_kvikio": "GPU <- file GB/s: the model's storage tier and bench compare",
                "gpu_file_write_kvikio": "GPU -> file GB/s: the report's tables and bench compare",
                "gpu_file_read_bounce": "GPU <- file GB/s: the model's storage tier and bench compare",
                "gpu_file_write_bounce": "GPU -> file GB/s: the report's tables and bench compare"}))
