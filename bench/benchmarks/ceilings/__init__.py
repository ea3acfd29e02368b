"""Ceilings measured in the same run as everything else: device-memory copy bandwidth and dense GEMM throughput (host
memcpy and fp32 GEMM on the CPU); other benchmarks report their fraction of these (roofline).

`d2d_copy` (HBM copy bandwidth, bytes read + written), `gemm` (dense bf16 TFLOP/s). Other benchmarks report their
fraction of these.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, family


@dataclass
class CeilingsConfig:
    budget_s: Optional[float] = None  # family time budget (null: none); points that would overrun it are skipped
    copy_bytes: list = MISSING
    gemm_n: list = MISSING
    gemm_dtype: str = "bfloat16"  # GEMM dtype on a GPU
    cpu_gemm_dtype: str = "float32"


FAMILY = family(Family(
    "ceilings", order=30, config=CeilingsConfig, package=__name__, modules=('benchmarks',),
    plots=(),
    unplotted={"d2d_copy": "the roofline's copy ceiling: every compute point carries it (metric.ceiling_gbps)",
                "gemm": "the roofline's compute ceiling: every compute point carries it (metric.ceiling_tflops)"}))
