"""Disaggregated handoff through NIXL between two processes (the family's description: its package docstring).

handoff_request    one request's KV in one descriptor list, this process initiating (op=read: decode pulls from the
                   peer's prefill pool; op=write: prefill pushes into the peer's decode pool); timed: make the request
                   from the prepared lists, post, poll to completion, release (host clock; NIXL reports completion
                   on the host). Excluded: pools, registration, metadata, the lists' preparation, the checks.
handoff_layerwise  the same request layer by layer, each layer's list posted when its prefill would end; timed: the
                   request from its start to the last layer's completion; exposed = that - layers x layer time.
handoff_fit        t = t0 + n_desc x c + bytes / BW over this run's handoff_request points
                   (bench.core.descriptor_fit): a derived record, nothing timed.
"""
from __future__ import annotations

import numpy as np

from bench.benchmarks.handoff import cost as C
from bench.core.descriptor_fit import fit_descriptor_cost
from bench.benchmarks.handoff.pair import Handoff
from bench.benchmarks.handoff.sizes import fixed_layer_s, geometry, host_need_bytes, layer_flops
from bench.benchmarks.handoff.wire import nixl_api
from bench.core.checks import check, positive_ints, validator
from bench.core.registry import benchmark
from bench.harness import need

OPS = ("read", "write")
MEMORY = ("dram", "vram")


def _axes(blocks_key: str, context_key: str):
    def axes(c):
        h = c.handoff
        return {"op": [str(v) for v in h.ops], "memory": [str(v) for v in h.memory],
                "backend": [str(v) for v in h.backends], "context_tokens": [int(v) for v in h[context_key]],
                "block_tokens": [int(v) for v in h[blocks_key]]}
    return axes


def _nixl_supported(device):
    """None where NIXL imports here (or the planner plans another machine, whose packages it cannot see)."""
    if not getattr(device, "packages_known", True):
        return None
    try:
        nixl_api()
    except ImportError as e:
        return str(e)
    return None


def _geometry(state):
    return geometry(state.cfg, int(state.params["block_tokens"]), int(state.params["context_tokens"]))


def _need(state):
    """Both pools (this process's and, spawned on this node, the peer's: on the GPU for vram, conservatively as if
    the peer shared it) and the check's host buffers."""
    p, h = state.params, state.cfg.handoff
    if p["memory"] == "vram" and not state.device.is_cuda:
        state.skip("memory=vram: VRAM to VRAM needs a GPU on both sides and this run has none (the dram points run)")
    geo = _geometry(state)
    if geo.chunk_bytes % 8:
        state.skip(f"a descriptor of {geo.chunk_bytes} bytes: the pattern check needs multiples of 8 bytes")
    pools = geo.pool.nbytes * (1 if h.peer_rendezvous else 2)
    what = "both sides' KV pools on this node and the check's buffers"
    if p["memory"] == "vram":
        return need(pools, what, host_bytes=host_need_bytes(geo) + geo.region_bytes)
    return need(0, what, host_bytes=pools + host_need_bytes(geo))


def whole_key(state) -> tuple:
    """The key of a whole request's timing, shared by handoff_request and handoff_layerwise at the same point."""
    p = state.params
    return ("handoff_whole", p["op"], p["memory"], p["backend"], int(p["context_tokens"]), int(p["block_tokens"]))


def _percentiles_ms(state, name: str, samples_s, minus_s: float = 0.0) -> None:
    """Metrics ``<name>_p50`` and ``<name>_p99`` (milliseconds) of single calls, less ``minus_s``."""
    a = np.asarray(samples_s, dtype=float) - minus_s
    state.set_metric(f"{name}_p50", float(np.percentile(a, 50)) * 1e3)
    state.set_metric(f"{name}_p99", float(np.percentile(a, 99)) * 1e3)


def _geometry_metrics(state, geo) -> None:
    state.set_metric("tokens", geo.context_tokens)
    state.set_metric("blocks", geo.blocks)
    state.set_metric("descriptor_bytes", geo.chunk_bytes)
    state.set_metric("block_bytes", geo.block_bytes)


@benchmark("handoff_request", family="handoff", cost=C.request, axes=_axes("block_tokens", "context_tokens"),
           supports=_nixl_supported, needs=_need)
def handoff_request(state):
    """One request's KV from prefill to decode in one NIXL descriptor list between two processes (op=read: decode
    pulls; op=write: prefill pushes); gbps of KV bytes, descriptors_per_s, latency_ms_p50 / latency_ms_p99 of single
    requests. Times the request (made, posted, completed, released); pools, metadata and checks are outside."""
    geo = _geometry(state)
    hf = Handoff(state, geo)
    try:
        hf.open()
        hf.checked("before timing", hf.request)
        state.add_bytes(geo.request_bytes)
        state.add_items("descriptors", geo.descriptors)
        st = state.adopt(state.time_shared(whole_key(state), hf.request, work="host"))
        lat = state.distribution(hf.request, work="host", samples=int(state.cfg.handoff.latency_samples))
        hf.checked("after timing", hf.request)
    finally:
        hf.close()
    state.set_metric("latency_ms", st.median_s * 1e3)
    _percentiles_ms(state, "latency_ms", lat.samples_s)
    state.set_metric("latency_samples", lat.n)
    _geometry_metrics(state, geo)


def layer_time_s(state, geo) -> tuple[float, str]:
    """(seconds per layer, where it comes from): handoff.layer_compute_s, else one layer's prefill FLOPs of the
    context at the GEMM ceiling this run measures (in the model's dtype on a GPU, float32 on the CPU)."""
    fixed = fixed_layer_s(state.cfg)
    if fixed is not None:
        return fixed, "handoff.layer_compute_s"
    import torch

    from bench.harness.roofline import gemm_ceiling_tflops

    dtype = getattr(torch, str(state.cfg.model.dtype)) if state.device.is_cuda else torch.float32
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        dtype = torch.bfloat16
    tflops = gemm_ceiling_tflops(state, dtype)
    return (layer_flops(state.cfg, geo.context_tokens) / (tflops * 1e12),
            f"one layer's prefill FLOPs of {geo.context_tokens} tokens at the GEMM ceiling measured in this run "
            f"({tflops:.3g} TFLOP/s, {str(dtype).replace('torch.', '')})")


@benchmark("handoff_layerwise", family="handoff", cost=C.layerwise,
           axes=_axes("layerwise_block_tokens", "layerwise_context_tokens"), supports=_nixl_supported, needs=_need)
def handoff_layerwise(state):
    """One request's KV moved layer by layer, each layer's descriptor list posted when its prefill would end;
    exposed_ms (median, p50, p99: the time after the last layer's compute), compute_ms, whole_request_ms (the same
    request in one list, alone) and hidden_fraction. Times the paced request; pools and checks are outside."""
    geo = _geometry(state)
    layer_s, source = layer_time_s(state, geo)
    hf = Handoff(state, geo)
    try:
        hf.open()
        paced = lambda: hf.layerwise(layer_s)  # noqa: E731
        hf.checked("before timing", paced)
        whole = state.time_shared(whole_key(state), hf.request, work="host")
        st = state.exec(paced, work="host")
        lat = state.distribution(paced, work="host", samples=int(state.cfg.handoff.latency_samples))
        hf.checked("after timing", paced)
    finally:
        hf.close()
    compute = geo.layers * layer_s
    exposed = max(0.0, st.median_s - compute)
    state.set_metric("layer_compute_ms", layer_s * 1e3)
    state.set_metric("compute_ms", compute * 1e3)
    state.set_metric("request_ms", st.median_s * 1e3)
    state.set_metric("exposed_ms", exposed * 1e3)
    _percentiles_ms(state, "exposed_ms", lat.samples_s, compute)
    state.set_metric("whole_request_ms", whole.median_s * 1e3)
    state.set_metric("hidden_fraction", float(min(1.0, max(0.0, 1.0 - exposed / whole.median_s))))
    state.set_metric("latency_samples", lat.n)
    state.set_metric("request_bytes", geo.request_bytes)
    state.set_metric("descriptors", geo.descriptors)
    _geometry_metrics(state, geo)
    state.note(layer_compute_source=source, layers=geo.layers)


def _fit_points(state) -> list[dict]:
    """This run's ok handoff_request records at the point's op, memory and backend."""
    from bench.core.store import read_records

    path = state.ctx.records_path
    if path is None:
        state.skip("handoff_fit reads this run's handoff_request records: run it inside a run")
    keys = ("op", "memory", "backend")
    return [r for r in read_records(path) if r.get("benchmark") == "handoff_request" and r.get("status") == "ok"
            and all(r["params"].get(k) == state.params[k] for k in keys)]


@benchmark("handoff_fit", family="handoff", cost=C.fit, axes=lambda c: {
    "op": [str(v) for v in c.handoff.ops], "memory": [str(v) for v in c.handoff.memory],
    "backend": [str(v) for v in c.handoff.backends]})
def handoff_fit(state):
    """The per-descriptor cost: t = t0 + n_desc x c + bytes / BW fitted to this run's handoff_request points of the
    same op, memory and backend (their median request times); t0_us, us_per_descriptor, fit_gbps, rel_rms_residual.
    Derived from the measured points, nothing timed."""
    recs = _fit_points(state)
    m = [r["metrics"] for r in recs]
    try:
        f = fit_descriptor_cost([x["descriptors"] for x in m], [x["bytes"] for x in m], [x["median_s"] for x in m])
    except ValueError as e:
        state.skip(f"no fit from {len(recs)} handoff_request point(s) of this run: {e}")
    for k, v in f.as_metrics().items():
        state.set_metric(k, v)
    state.note(formula="t = t0 + n_desc x c + bytes / BW (least squares on relative residuals, coefficients >= 0)",
               block_tokens=sorted({int(r["params"]["block_tokens"]) for r in recs}),
               context_tokens=sorted({int(r["params"]["context_tokens"]) for r in recs}),
               **({"fit_note": f.note} if f.note else {}))


@validator("handoff")
def _handoff(cfg) -> None:
    h = cfg.handoff
    for key, allowed in (("ops", OPS), ("memory", MEMORY)):
        check(len(h[key]) > 0, f"handoff.{key}", list(h[key]), f"at least one of {', '.join(allowed)}")
        for v in h[key]:
            check(v in allowed, f"handoff.{key}", v, f"each one of {', '.join(allowed)}")
    check(len(h.backends) > 0, "handoff.backends", list(h.backends), "at least one NIXL backend (UCX)")
    for v in h.backends:
        check(isinstance(v, str) and v.isupper() and v.strip() == v, "handoff.backends", v,
              "NIXL backend names as NIXL spells them (UCX, LIBFABRIC, ...)")
    for key in ("context_tokens", "block_tokens"):
        positive_ints(f"handoff.{key}", h[key])
    for key in ("layerwise_context_tokens", "layerwise_block_tokens"):
        positive_ints(f"handoff.{key}", h[key], allow_empty=True)
    positive_ints("handoff.pool_factor", [h.pool_factor])
    positive_ints("handoff.latency_samples", [h.latency_samples])
    check(h.layer_compute_s is None or h.layer_compute_s > 0, "handoff.layer_compute_s", h.layer_compute_s,
          "seconds > 0, or null: one layer's prefill FLOPs at the measured GEMM ceiling")
    check(h.peer_wait_s > 0, "handoff.peer_wait_s", h.peer_wait_s, "seconds > 0")
    check(h.peer_gpu is None or (isinstance(h.peer_gpu, int) and h.peer_gpu >= 0), "handoff.peer_gpu", h.peer_gpu,
          "a CUDA device index >= 0, or null")
    check(h.peer_rendezvous is None or str(h.peer_rendezvous).strip() != "", "handoff.peer_rendezvous",
          h.peer_rendezvous, "a file path both tasks see, or null (the run starts its peer)")
