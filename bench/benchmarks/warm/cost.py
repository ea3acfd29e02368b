"""Cost models of the warm family (bench.harness.cost): rows fetched per decode step by each method, keys scored in
place, a neighbour's HBM, a cold flow beside decode."""
from __future__ import annotations

from bench.benchmarks.layers.cost import layer_attention_s, layer_check_s, layer_s, stack_setup_s
from bench.benchmarks.storage.cost import drop_s, io_pass_s, pattern_file_once, steady_requests
from bench.harness.cost import CUPY_COMPILE_S, MEMCPY_ISSUE_SHARE, SYNC_US, Ctx, Timed, Work

NVLINK_SHARE_OF_HBM = 0.5  # a neighbour's HBM over NVLink, before anything is measured: half the target's copy rate


ROW_GATHER_EFF = ((64, 0.25), (256, 0.5), (1024, 0.8), (4096, 0.9))  # a UVA gather's share of the link by row size
CPU_ROW_S = 40e-9  # a CPU gather's cost per row beyond its bytes (index, cache miss)


def _row_eff(rb: int) -> float:
    """Share of the link a kernel reading rows of ``rb`` bytes from host memory reaches (small reads carry more
    PCIe overhead per byte); the last entry for larger rows."""
    for size, eff in ROW_GATHER_EFF:
        if rb <= size:
            return eff
    return ROW_GATHER_EFF[-1][1]


def _warm_fetch_rows(c: Ctx) -> tuple[int, int, int]:
    """(k, fetched rows, contiguous runs per step) of a warm_fetch point (bench.llm.selection's localities)."""
    from bench.llm.selection import copy_calls, fetched_rows

    k, loc = int(c.p["rows"]), str(c.p["locality"])
    return k, fetched_rows(k, loc), copy_calls(k, loc)


def warm_step_s(c: Ctx, method: str, rb: int, nf: int, runs: int, nk: int = 0) -> float:
    """Seconds of one warm_fetch step on the target: the fetch of ``nf`` rows by ``method`` and the kept rows'
    copy within HBM."""
    nbytes = nf * rb
    keep = c.hbm(2 * nk * rb) + c.ops(1) if nk else 0.0
    if not c.cuda:
        rate = c.t.hbm_gbps * 1e9
        if method == "copy_per_run":
            return runs * MEMCPY_ISSUE_SHARE * c.t.issue_us * 1e-6 + nbytes / rate + keep
        return nbytes / rate * (2 if method == "cpu_gather" else 1) + nf * CPU_ROW_S + keep
    if method == "uva_kernel":
        return nbytes / (c.t.link_gbps * 1e9 * _row_eff(rb)) + c.ops(1) + keep
    ids = SYNC_US * 1e-6 + c.link(nf * 8)  # the step's row ids to the host, waited for
    if method == "cpu_gather":
        return ids + nbytes / (c.t.host_compare_gbps * 2e9) + nf * CPU_ROW_S + c.link(nbytes) + keep
    return ids + max(runs * MEMCPY_ISSUE_SHARE * c.t.issue_us * 1e-6, c.link(nbytes)) + keep


def warm_fetch(c: Ctx) -> Work:
    w = c.cfg.warm
    method, rb = c.p["method"], int(c.p["row_bytes"])
    k, nf, runs = _warm_fetch_rows(c)
    S = int(w.steps)
    call = warm_step_s(c, method, rb, nf, runs, k - nf)
    clock = "device" if (method == "uva_kernel" and c.cuda) else ("host_issued" if c.cuda else "host")
    latency = Timed(call + (SYNC_US * 1e-6 if c.cuda else 0.0), "host_issued" if c.cuda else "host", inner=1,
                    samples=int(w.latency_samples))
    contiguous = Timed(c.link(nf * rb) if c.cuda else nf * rb / (c.t.hbm_gbps * 1e9), "device" if c.cuda else "host",
                       key=("warm_contiguous", nf * rb))
    # plan + warm-start gather, then the cycle checked twice: each step run, its rows gathered on the host and compared
    check = S * (call + k * rb / (c.t.host_fill_gbps * 1e9) + c.link(k * rb) + c.compare(k * rb, False))
    setup = S * k * 1e-7 + 3 * c.dev_fill(k * rb) + 2 * check + (c.pin(nf * rb) if method == "cpu_gather" else 0.0)
    pool = int(w.pool_bytes)
    once = {("warm_pool", pool): c.pin(pool) + c.host_fill(pool)}
    if method == "uva_kernel" and c.cuda:
        once[("cupy_compile", "warm.cu")] = CUPY_COMPILE_S
    return Work([Timed(call, clock), latency, contiguous], setup_s=setup, once=once)


def warm_search(c: Ctx) -> Work:
    w = c.cfg.warm
    n, method = int(c.p["tokens"]), c.p["method"]
    _, _, d, _ = c.shape.attn_dims(True)
    elt = c.compute_elt("layers") if c.cuda else 4
    nbytes = n * d * elt
    topk = c.hbm(n * 4) * 4 + c.ops(4) if c.cuda else n * 4 / (c.t.hbm_gbps * 1e9) * 8
    if method == "uva_kernel":
        call = nbytes / (c.t.link_gbps * 1e9 * 0.9) + topk
    elif method == "cpu":
        call = (SYNC_US * 1e-6 + nbytes / (c.t.host_compare_gbps * 2e9) + n * 4 / (c.t.host_compare_gbps * 1e9) * 8
                if c.cuda else nbytes / (c.t.hbm_gbps * 1e9) + topk)
    else:
        call = (c.link(nbytes) if c.cuda else nbytes / (c.t.hbm_gbps * 1e9)) + c.hbm(nbytes) + topk
    clock = "host_issued" if (c.cuda and method == "cpu") else ("device" if c.cuda else "host")
    latency = Timed(call + (SYNC_US * 1e-6 if c.cuda else 0.0), "host_issued" if c.cuda else "host", inner=1,
                    samples=int(w.latency_samples))
    make = c.pin(nbytes) + (c.link(nbytes) + c.hbm(nbytes * 2) if c.cuda else nbytes / (c.t.host_fill_gbps * 1e8))
    ref = c.link(nbytes) + c.hbm(nbytes * 2) if c.cuda else nbytes / (c.t.hbm_gbps * 1e9) * 4
    return Work([Timed(call, clock), latency], setup_s=2 * call + c.hbm(n * 8),
                once={("warm_keys", n, d): make, ("warm_ref_scores", n, d): ref,
                      **({("cupy_compile", "warm.cu"): CUPY_COMPILE_S} if (c.cuda and method == "uva_kernel") else {})})


def warm_peer(c: Ctx) -> Work:
    w = c.cfg.warm
    k, rb, S = int(w.peer_rows), int(c.p["row_bytes"]), int(w.steps)
    nvlink = NVLINK_SHARE_OF_HBM * c.t.hbm_gbps
    call = k * rb / (nvlink * 1e9) + c.ops(1) if c.p["method"] == "peer_kernel" else \
        max(k * MEMCPY_ISSUE_SHARE * c.t.issue_us * 1e-6, k * rb / (nvlink * 1e9))
    clock = "device" if c.p["method"] == "peer_kernel" else "host_issued"
    return Work([Timed(call, clock), Timed(call + SYNC_US * 1e-6, "host_issued", inner=1,
                                           samples=int(w.latency_samples)),
                 Timed(k * rb / (nvlink * 1e9), "device", key=("peer_contiguous", k * rb))],
                setup_s=2 * S * (call + c.hbm(2 * k * rb)), once={("warm_peer_pool",): c.dev_fill(int(w.pool_bytes))})


def cold_read_under_decode(c: Ctx) -> Work:
    w = c.cfg.warm
    req, qd = int(c.p["request_bytes"]), int(c.p["queue_depth"])
    fb = int(w.cold_file_bytes)
    count = steady_requests(c, req, "sequential", qd, file_bytes=fb)
    read = io_pass_s(c, req, count, qd, False, "aio")
    elt = c.compute_elt("layers")
    k = int(w.cold_layers)
    one = k * layer_s(c, True, int(w.cold_decode_batch), 1, int(w.cold_decode_ctx), elt)
    repeats = min(64, max(1, round(read / one)))
    together = max(read, one * repeats)
    drop = drop_s(c, fb)
    timed = [Timed(read, "lanes", drop, key=("cold_read_alone", req, qd, count)),
             Timed(one, "lanes", key=("decode_alone", k, 1), io_bytes=0), Timed(together, "lanes", drop)]
    if repeats > 1:
        timed.append(Timed(one * repeats, "lanes", key=("decode_alone", k, repeats), io_bytes=0))
    verify = 2 * (read + count * req / 1e9 + drop)
    once = {**pattern_file_once(c, fb), ("steady_pass", req, qd, "sequential", False, fb): read + drop,
            ("layer_check", True): layer_check_s(c), **layer_attention_s(c)}
    return Work(timed, setup_s=stack_setup_s(c, k, one / k, elt) + verify, once=once,
                io_bytes_per_call=count * req, io_setup_bytes=3 * count * req)
