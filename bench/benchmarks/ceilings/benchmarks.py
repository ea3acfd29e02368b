"""Ceilings measured in the same run: device-memory copy bandwidth and dense GEMM throughput.

Other benchmarks report their fraction of these (roofline); on the CPU they measure host memcpy and fp32 GEMM.
"""
from __future__ import annotations

import torch

from bench.benchmarks.transfer.contiguous import contiguous_copy, contiguous_need
from bench.core.checks import positive_ints, validator
from bench.core.config import check_dtypes
from bench.benchmarks.ceilings import cost as C
from bench.core.registry import benchmark
from bench.harness import need
from bench.harness import roofline


@benchmark("d2d_copy", family="ceilings", cost=C.d2d_copy, axes=lambda c: {"size_bytes": list(c.ceilings.copy_bytes)},
           needs=contiguous_need("d2d"))
def d2d_copy(state):
    """Device-to-device copy of one buffer (host memcpy on CPU); GB/s counts bytes read + written.

    The one D2D copy measurement (the transfer family's d2d is the same function over its own sizes): times
    dst.copy_(src) only; buffers are allocated, filled and checked outside the timed region."""
    contiguous_copy(state, "d2d", True)


def _gemm_dtype(state) -> torch.dtype:
    return roofline.compute_dtype(state, "ceilings", "gemm_dtype", "cpu_gemm_dtype")


def _gemm_need(state):
    n = int(state.params["n"])
    return need(3 * n * n * (torch.finfo(_gemm_dtype(state)).bits // 8), "A, B, C")


@benchmark("gemm", family="ceilings", cost=C.gemm, axes=lambda c: {"n": list(c.ceilings.gemm_n)}, needs=_gemm_need)
def gemm(state):
    """Square matrix product C = A @ B (M=N=K=n) in the configured dtype; TFLOP/s from 2*n^3.

    Inputs are random (never zeros: zeros run faster than real data); checked once against float64 on a slice."""
    n = int(state.params["n"])
    dtype = _gemm_dtype(state)
    elt = torch.finfo(dtype).bits // 8
    dev = state.device.torch
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    out = torch.empty(n, n, device=dev, dtype=dtype)
    torch.matmul(a, b, out=out)
    rows = min(n, 64)
    ref = a[:rows].double() @ b.double()
    err = float((out[:rows].double() - ref).norm() / ref.norm())
    tol = 1e-2 if elt == 2 else 1e-4
    state.verify(err < tol, f"relative error {err:.2e} above {tol:g}")
    state.note(dtype=str(dtype).replace("torch.", ""), rel_err=err)
    state.add_flops(2.0 * n ** 3)
    state.exec(lambda: torch.matmul(a, b, out=out), work="device", flush_l2=True)


@validator("ceilings")
def _ceilings(cfg) -> None:
    positive_ints("ceilings.copy_bytes", cfg.ceilings.copy_bytes)
    positive_ints("ceilings.gemm_n", cfg.ceilings.gemm_n)
    check_dtypes(cfg, "ceilings.gemm_dtype", "ceilings.cpu_gemm_dtype")
