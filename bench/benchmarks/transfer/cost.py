"""Cost models of the transfer family (bench.harness.cost): contiguous copies (pinned, pageable, both ways,
several streams) and paged KV moves per method."""
from __future__ import annotations

from bench.harness.cost import (CUPY_COMPILE_S, LAUNCH_US, MEMCPY_ISSUE_SHARE, SYNC_US, Cost, Ctx, Timed, Work,
                                l2_flush_s)


def _contiguous(c: Ctx, direction: str, pinned: bool) -> Work:
    n = int(c.p["size_bytes"])
    if direction == "d2d":
        call = c.hbm(2 * n) + c.ops(1)
        flush = c.cuda and 2 * n <= c.t.l2_bytes
        timed = [Timed(call, "device", l2_flush_s(c) if flush else 0.0)]
        setup = c.dev_fill(n) + 2 * (call + c.compare(n, False))
    else:
        rate = c.t.link_gbps if pinned else (c.t.pageable_h2d_gbps if direction == "h2d" else c.t.pageable_d2h_gbps)
        call = n / (rate * 1e9) + (LAUNCH_US * 1e-6 if c.cuda else 0.0)
        timed = [Timed(call, "device" if pinned else "host_issued")]
        host_alloc = c.pin(n) if pinned else n / (c.t.host_fill_gbps * 1e9 if not c.cuda else c.t.hbm_gbps * 1e8)
        fill = c.host_fill(n) if direction == "h2d" else c.dev_fill(n)
        setup = host_alloc + fill + 2 * (call + c.compare(n, on_host=direction == "d2h"))
    if n <= int(c.cfg.transfer.latency_max_bytes):
        timed.append(Timed(timed[0].call_s + SYNC_US * 1e-6, "host_issued", inner=1,
                           key=("latency", direction, pinned, n)))
    return Work(timed, setup_s=setup)


def contiguous(direction: str, pinned: bool) -> Cost:
    """The cost model of a contiguous copy in ``direction`` (h2d, d2h, d2d), pinned or pageable."""
    return lambda c: _contiguous(c, direction, pinned)


def bidir(c: Ctx) -> Work:
    n = int(c.p["size_bytes"])
    call = c.link(n)
    return Work([Timed(call, "device")],
                setup_s=2 * c.pin(n) + c.host_fill(n) + c.dev_fill(n) + call + c.compare(n, True) + c.compare(n, False))


def streams(c: Ctx) -> Work:
    k, n = int(c.p["streams"]), int(c.cfg.transfer.stream_bytes)
    call = c.link(k * n)
    return Work([Timed(call, "device")], setup_s=c.pin(k * n) + c.host_fill(k * n) + call + c.compare(k * n, True))


def paged_call(c: Ctx, method: str, layout: str, block_tokens: int, packed: int) -> tuple[float, str]:
    """Seconds of one paged move of ``packed`` KV bytes and its clock."""
    s = c.shape
    n = max(1, packed // s.kv_block_bytes(block_tokens))
    n_src = s.layers * s.kv_components if layout == "layer_major" else 1
    if method == "memcpy_per_block":  # cudaMemcpyAsync per block, issued by the host
        return max(n * n_src * MEMCPY_ISSUE_SHARE * c.t.issue_us * 1e-6, c.link(packed)), "host_issued"
    if method == "staged":
        return c.link(packed) + c.hbm(2 * packed) + c.ops(n_src + 1), "device"
    return c.link(packed) + c.ops(1), "device"


def paged(c: Ctx) -> Work:
    t = c.cfg.transfer
    bt = int(c.p["block_tokens"])
    block = c.shape.kv_block_bytes(bt)
    n = max(1, int(t.paged_bytes) // block)
    packed = n * block
    pool = n * int(t.pool_factor) * block
    call, clock = paged_call(c, c.p["method"], c.p["layout"], bt, packed)
    n_src = c.shape.layers * c.shape.kv_components if c.p["layout"] == "layer_major" else 1
    check = call + c.compare(packed, False) + c.ops(3 * n_src) + (c.t.issue_us * 1e-6 * 3 * n_src)
    offload = c.benchmark == "paged_offload"
    setup = c.dev_fill(pool) + c.pin(packed) + (0 if offload else c.host_fill(packed) + c.hbm(packed)) + 2 * check
    if c.p["method"] == "uva_kernel" and c.cuda:
        setup += 0.05
    contiguous = Timed(c.link(packed), "device", key=("contiguous_pinned", offload, packed))
    return Work([Timed(call, clock), contiguous], setup_s=setup, once={("cupy_compile",): CUPY_COMPILE_S}
                if (c.p["method"] == "uva_kernel" and c.cuda) else {})
