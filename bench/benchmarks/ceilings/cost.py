"""Cost models of the ceilings family (bench.harness.cost): a D2D copy and a GEMM on the target."""
from __future__ import annotations

from bench.harness.cost import Ctx, Timed, Work, compute_init, l2_flush_s


def d2d_copy(c: Ctx) -> Work:
    n = int(c.p["size_bytes"])
    flush = c.cuda and 2 * n <= c.t.l2_bytes
    return Work([Timed(c.hbm(2 * n) + c.ops(1), "device", l2_flush_s(c) if flush else 0.0)],
                setup_s=c.dev_fill(n) + c.compare(n, False))


def gemm(c: Ctx) -> Work:
    n = int(c.p["n"])
    elt = c.compute_elt("ceilings", "gemm_dtype", "cpu_gemm_dtype")
    return Work([Timed(c.flops(2.0 * n ** 3) + c.ops(1), "device", l2_flush_s(c))],
                setup_s=c.dev_fill(2 * n * n * elt) + c.flops(2.0 * 64 * n * n) * (20 if c.cuda else 2),
                once=compute_init(c))
