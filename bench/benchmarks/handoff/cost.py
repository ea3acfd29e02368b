"""Cost models of the handoff family (bench.harness.cost): a request through NIXL between two processes, whole or
layer by layer, and the fit record (nothing timed).

A request costs REQUEST_US + descriptors x DESCRIPTOR_US + bytes / rate. Rates before anything is measured: DRAM to
DRAM between two processes copies host memory once (UCX's CMA: DRAM_SHARE of the host's copy rate, bytes read +
written); VRAM on one GPU is a device copy (half the HBM rate, read + written), on two GPUs NVLink (the warm family's
share of the HBM rate).
"""
from __future__ import annotations

from bench.benchmarks.handoff.sizes import Geometry, fixed_layer_s, geometry, layer_flops
from bench.benchmarks.warm.cost import NVLINK_SHARE_OF_HBM
from bench.harness.cost import Ctx, Timed, Work, ceilings_s

REQUEST_US = 30.0  # one request's list made, posted, completed and released (nixl-cu13 1.5.1, 2-core CI machine)
DESCRIPTOR_US = {"dram": 2.0, "vram": 3.0}  # per descriptor: DRAM UCX shm/CMA on the CI machine (1.8-2.3 us);
# VRAM: nixlbench's ~3 us per block on a DGX-H100 pair
DRAM_SHARE = 0.35  # DRAM to DRAM between processes: this share of the host's copy rate (read + written)
PEER_START_S = 2.0  # the peer process started (Python, the package, NIXL's agent) and connected, once per run
BACKEND_S = 0.3  # a backend (UCX) created on both agents, once per run and backend
PATTERN_GBPS = 1.0  # the seeded pattern generated on the host (numpy)
HOST_SET_GBPS = 5.0  # a host buffer set (POISON), compared or copied


def rate_gbps(c: Ctx, memory: str) -> float:
    """GB/s of one request's bytes on the target before anything is measured."""
    if memory == "vram":
        return c.t.hbm_gbps * (NVLINK_SHARE_OF_HBM if c.t.gpus >= 2 else 0.5)
    host_copy = c.t.hbm_gbps if not c.cuda else 2 * c.t.host_fill_gbps  # CPU target: memcpy read + written
    return host_copy * DRAM_SHARE


def request_s(c: Ctx, geo: Geometry, memory: str, layers: int = 0) -> float:
    """Seconds of one request (``layers``: of one layer's share of it, for the layer-wise pipeline)."""
    share = 1.0 / geo.layers if layers else 1.0
    return REQUEST_US * 1e-6 + geo.descriptors * share * DESCRIPTOR_US[memory] * 1e-6 + \
        geo.request_bytes * share / (rate_gbps(c, memory) * 1e9)


def _setup(c: Ctx, geo: Geometry, memory: str, call_s: float) -> float:
    """Both pools filled (source: the pattern; destination: POISON) and registered; two checked requests (poison,
    the request, the destination compared: the request's chunks against the pattern, every other chunk against
    POISON), on the GPU for VRAM, on the host for DRAM."""
    pool = geo.pool.nbytes
    if memory == "vram":
        fill = 2 * c.hbm(pool)
        check = c.hbm(pool) + call_s + c.hbm(2 * pool) + geo.regions * c.ops(8)
    else:
        fill = pool / (PATTERN_GBPS * 1e9) + pool / (HOST_SET_GBPS * 1e9)
        check = pool / (HOST_SET_GBPS * 1e9) + call_s + geo.request_bytes / (PATTERN_GBPS * 1e9) + \
            pool / (c.t.host_compare_gbps * 1e9)
    return fill + 2 * (check + 0.01) + 0.02


def _once(c: Ctx) -> dict:
    backend = str(c.p["backend"])
    return {("handoff_peer",): PEER_START_S, ("handoff_backend", backend): BACKEND_S}


def _geo(c: Ctx) -> Geometry:
    return geometry(c.cfg, int(c.p["block_tokens"]), int(c.p["context_tokens"]))


def _whole_key(c: Ctx) -> tuple:
    p = c.p
    return ("handoff_whole", p["op"], p["memory"], p["backend"], int(p["context_tokens"]), int(p["block_tokens"]))


def request(c: Ctx) -> Work:
    geo, memory = _geo(c), str(c.p["memory"])
    call = request_s(c, geo, memory)
    samples = int(c.cfg.handoff.latency_samples)
    return Work([Timed(call, "host", key=_whole_key(c)), Timed(call, "host", inner=1, samples=samples)],
                setup_s=_setup(c, geo, memory, call), once=_once(c))


def layer_s(c: Ctx, geo: Geometry) -> float:
    """handoff.layer_compute_s, else one layer's prefill FLOPs at the target's GEMM rate."""
    fixed = fixed_layer_s(c.cfg)
    return fixed if fixed is not None else layer_flops(c.cfg, geo.context_tokens) / (c.t.tflops * 1e12)


def paced_s(c: Ctx, geo: Geometry, memory: str, per_layer_s: float) -> float:
    """A layer-by-layer request: layer l posted at (l + 1) x per_layer_s, the layers' transfers one after another."""
    one = request_s(c, geo, memory, layers=1)
    free = 0.0
    for layer in range(geo.layers):
        free = max((layer + 1) * per_layer_s, free) + one
    return free


def layerwise(c: Ctx) -> Work:
    geo, memory = _geo(c), str(c.p["memory"])
    call = paced_s(c, geo, memory, layer_s(c, geo))
    whole = request_s(c, geo, memory)
    samples = int(c.cfg.handoff.latency_samples)
    once = _once(c)
    if fixed_layer_s(c.cfg) is None:
        once[("ceilings",)] = ceilings_s(c)
    return Work([Timed(whole, "host", key=_whole_key(c)), Timed(call, "host"),
                 Timed(call, "host", inner=1, samples=samples)],
                setup_s=_setup(c, geo, memory, call), once=once)


def fit(c: Ctx) -> Work:
    """The fit record reads the run's records: its point overhead and nothing else."""
    return Work(setup_s=0.01)

