"""Ceilings measured in the same run, and where a compute point sits against them (roofline).

The ceilings are timed once per run and cached in the run context: a dense GEMM (TFLOP/s) in the compute dtype
and a device-memory copy (GB/s, bytes read + written). Attainable = min(peak TFLOP/s, intensity x bandwidth).
"""
from __future__ import annotations

import torch

from bench.llm import numerics
from bench.llm.numerics import rel_error, tolerance  # noqa: F401  (re-exported: the numerics checks)

GEMM_N = {"cuda": 8192, "cpu": 1024}
COPY_BYTES = {"cuda": 1 << 30, "cpu": 32 << 20}


def compute_dtype(state, section: str, key: str = "dtype", cpu_key: str = "cpu_dtype") -> torch.dtype:
    """The point's compute dtype: the one rule of bench.llm.numerics for this family's config ``section``."""
    return numerics.compute_dtype(state.cfg, section, state.device.is_cuda, key, cpu_key)


def gemm_ceiling_tflops(state, dtype: torch.dtype) -> float:
    n = GEMM_N[state.device.kind]
    dev = state.device.torch

    def make():
        return (torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype),
                torch.empty(n, n, device=dev, dtype=dtype))

    a, b, c = state.run_resource(("ceiling_gemm_buffers", dtype), make)
    st = state.reference(("ceiling_gemm", dtype), lambda: torch.matmul(a, b, out=c), work="device")
    return 2.0 * n ** 3 / st.median_s / 1e12


def copy_ceiling_gbps(state) -> float:
    n = COPY_BYTES[state.device.kind]
    dev = state.device.torch
    src, dst = state.run_resource("ceiling_copy_buffers", lambda: (
        torch.randint(0, 256, (n,), dtype=torch.uint8, device=dev), torch.empty(n, dtype=torch.uint8, device=dev)))
    st = state.reference("ceiling_copy", lambda: dst.copy_(src), work="device")
    return 2.0 * n / st.median_s / 1e9


def report(state, flops: float, bytes_moved: float, dtype: torch.dtype) -> None:
    """Add ceilings, arithmetic intensity, attainable TFLOP/s and the fraction reached to this point's metrics."""
    peak_tflops = gemm_ceiling_tflops(state, dtype)
    bw_gbps = copy_ceiling_gbps(state)
    t = state.stats.median_s
    intensity = flops / bytes_moved if bytes_moved else float("inf")
    attainable = min(peak_tflops, intensity * bw_gbps / 1e3)
    achieved = flops / t / 1e12
    state.set_metric("ceiling_tflops", peak_tflops)
    state.set_metric("ceiling_gbps", bw_gbps)
    state.set_metric("intensity_flop_per_byte", intensity)
    state.set_metric("attainable_tflops", attainable)
    state.set_metric("fraction_of_roofline", achieved / attainable)
    state.set_metric("bound", "compute" if intensity * bw_gbps / 1e3 >= peak_tflops else "memory")
    state.set_metric("fraction_of_ceiling_tflops", achieved / peak_tflops)
    state.set_metric("fraction_of_ceiling_gbps", bytes_moved / t / 1e9 / bw_gbps)
