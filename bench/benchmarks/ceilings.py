"""Ceilings measured in the same run: device-memory copy bandwidth and dense GEMM throughput.

Other benchmarks report their fraction of these (roofline); on the CPU they measure host memcpy and fp32 GEMM.
"""
from __future__ import annotations

import torch

from bench.benchmarks.transfer_contiguous import d2d_peak
from bench.registry import benchmark


def _dtype(name: str) -> torch.dtype:
    return getattr(torch, name)


@benchmark("d2d_copy", family="ceilings",
           axes=lambda c: {"size_bytes": list(c.ceilings.copy_bytes)})
def d2d_copy(state):
    """Device-to-device copy of one buffer (host memcpy on CPU); GB/s counts bytes read + written.

    Times dst.copy_(src) only; buffers are allocated, filled and checked outside the timed region."""
    n = int(state.params["size_bytes"])
    state.require_bytes(2 * n, "source + destination")
    dev = state.device.torch
    src = torch.randint(0, 256, (n,), dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src).fill_(0xA5)
    state.add_bytes(2 * n)
    flush = d2d_peak(state, n) == "l2"  # HBM reads and writes share the bus; an L2-resident copy is timed L2-cold
    state.exec(lambda: dst.copy_(src), work="device", flush_l2=flush)
    if flush:
        state.set_metric("read_gbps", n / state.stats.median_s / 1e9)
    state.verify(bool(torch.equal(dst, src)), "destination differs from source after copy")


@benchmark("gemm", family="ceilings",
           axes=lambda c: {"n": list(c.ceilings.gemm_n)})
def gemm(state):
    """Square matrix product C = A @ B (M=N=K=n) in the configured dtype; TFLOP/s from 2*n^3.

    Inputs are random (never zeros: zeros run faster than real data); checked once against float64 on a slice."""
    n = int(state.params["n"])
    c = state.cfg.ceilings
    dtype = _dtype(c.gemm_dtype if state.device.is_cuda else c.cpu_gemm_dtype)
    elt = torch.finfo(dtype).bits // 8
    state.require_bytes(3 * n * n * elt, "A, B, C")
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
