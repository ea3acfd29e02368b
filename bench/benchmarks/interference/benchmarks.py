"""KV transfers under load: what a copy costs while the GPU computes, and what compute costs while it copies.

copy_under_compute       a paged KV onload/offload (each transfer method) on its own stream beside a prefill or
                         decode layer loop: copy GB/s under load, compute slowdown, overlap (together vs sum/max)
layerwise_load           layer l's KV loads on a copy stream while layer l-1 computes (the reuse-from-host pattern):
                         exposed load time per layer by hit tokens and tier bandwidth (slower tiers emulated by
                         pacing the host link)
host_traffic_concurrent  H2D and D2H at once on N streams each: each direction's GB/s vs alone
all_gpus_host            every GPU of the node to/from host at once: aggregate and per GPU, with NUMA nodes

Each activity is timed alone and together in the same run (references), with the same work; lanes run on one
CUDA stream each (host threads on the CPU). Every moved byte is verified before and after timing.
"""
from __future__ import annotations

import math
import time

import torch

from bench.harness import roofline
from bench.llm import overlap
from bench.benchmarks.layers.benchmarks import build_stack, compute_lane, layer_dtype, stack_need
from bench.benchmarks.transfer.contiguous import check_copy, numa_node, pcie_peak, set_link_peak
from bench.benchmarks.transfer.paged import PagedMove, paged_need
from bench.core.checks import check, positive_ints
from bench.hw.hostmem import POISON, fill_pattern, host_buffer, pattern
from bench.llm.kvlayout import LAYOUTS, METHODS
from bench.llm.layer import cached_region
from bench.benchmarks.interference import cost as C
from bench.benchmarks.interference.sizes import layerwise_depth
from bench.core.registry import benchmark
from bench.harness import need
from bench.llm.shapes import ModelShape
from bench.harness.timing import Handoff, Lane, lanes_for
from bench.core.checks import validator
from bench.core.units import bytes_binary

DIRECTIONS = ("onload", "offload")
COMPUTES = ("prefill", "decode")


def _set_peaks(state, peak, *metrics) -> None:
    for m in metrics:
        state.set_peak(m, peak)


# -- copy under compute ----------------------------------------------------------------------------------------------
def _compute_dims(state, kind: str) -> tuple[bool, int, int, int, int]:
    """(decode, layers, batch, new tokens, cached tokens) of the compute lane: a prefill (prefill_new after
    prefill_ctx) or one decode step (decode_batch x decode_ctx) through interference.compute_layers layers."""
    ic = state.cfg.interference
    if kind == "prefill":
        return False, int(ic.compute_layers), 1, int(ic.prefill_new), int(ic.prefill_ctx)
    return True, int(ic.compute_layers), int(ic.decode_batch), 1, int(ic.decode_ctx)


def compute_stack(state, kind: str):
    """The compute lane's layers of the preset (:func:`_compute_dims`)."""
    return build_stack(state, *_compute_dims(state, kind))


def _copy_under_need(state):
    """The compute lane's stack and the copy lane's pool, staging and host buffers, held at once."""
    ic = state.cfg.interference
    _, move_dev, move_host = paged_need(state, int(ic.block_tokens), state.params["direction"] == "offload",
                                        int(ic.copy_bytes), int(ic.pool_factor))
    return stack_need(state, *_compute_dims(state, state.params["compute"]), extra_bytes=move_dev,
                      host_bytes=move_host, extra_what="the copy's pool, staging and host buffers")


@benchmark("copy_under_compute", family="interference", cost=C.copy_under_compute,
           axes=lambda c: {"method": list(c.interference.methods), "direction": list(c.interference.directions),
                           "compute": list(c.interference.computes)}, needs=_copy_under_need)
def copy_under_compute(state):
    """A paged KV onload/offload (method) on its own stream while a prefill or decode layer loop runs on another:
    copy_gbps under load vs alone, compute_slowdown, overlap_ratio, together_vs_sum / together_vs_max, and whether
    the compute hides the copy (load_hidden). Alone and together timed in the same run; copies verified."""
    ic, p = state.cfg.interference, state.params
    offload = p["direction"] == "offload"
    stack = compute_stack(state, p["compute"])
    mv = PagedMove(state, p["method"], str(ic.layout), int(ic.block_tokens), offload, int(ic.copy_bytes),
                   int(ic.pool_factor), int(ic.seed))
    copy_key = ("copy_alone", p["method"], p["direction"], mv.packed_bytes)
    compute_key = ("compute_alone", p["compute"], stack.shape.name, stack.k)
    copy_alone = state.reference_lanes(copy_key, [Lane("copy", mv.run, mv.work)])
    once_fn, once_work = compute_lane(state, stack)
    once = state.reference_lanes(compute_key + (1, once_work), [Lane("compute", once_fn, once_work)])
    repeats = 1
    if ic.match_durations:
        ratio = copy_alone.total.median_s / once.total.median_s
        repeats = int(min(int(ic.max_repeats), max(1, round(ratio))))
    compute, cwork = (once_fn, once_work) if repeats == 1 else compute_lane(state, stack, repeats)
    compute_alone = once if repeats == 1 else \
        state.reference_lanes(compute_key + (repeats, cwork), [Lane("compute", compute, cwork)])
    # on a GPU, device-work lanes are queued first and host-issued lanes issued each from its own thread: a copy
    # issued call by call never holds back the queuing of the compute it runs beside
    lanes = [Lane("copy", mv.run, mv.work), Lane("compute", compute, cwork)]
    together_once = lanes_for(lanes, state.device)
    mv.checked_run("under compute, before timing", run=together_once.sample_lanes)
    res = state.exec_lanes(lanes)
    mv.checked_run("under compute, after timing", run=together_once.sample_lanes)

    c_alone, k_alone = copy_alone.total.median_s, compute_alone.total.median_s
    c_under, k_under = res.lanes["copy"].median_s, res.lanes["compute"].median_s
    noise = overlap.noise_band(compute_alone.total.noise, res.lanes["compute"].noise)
    m = overlap.pair_overlap(c_alone, k_alone, c_under, k_under, res.total.median_s, noise)
    for key, val in m.items():
        state.set_metric(key, val)
    state.set_metric("together_s", res.total.median_s)
    state.set_metric("copy_alone_s", c_alone)
    state.set_metric("copy_under_s", c_under)
    state.set_metric("compute_alone_s", k_alone)
    state.set_metric("compute_under_s", k_under)
    state.set_metric("copy_gbps", mv.packed_bytes / c_under / 1e9)
    state.set_metric("copy_gbps_alone", mv.packed_bytes / c_alone / 1e9)
    state.set_metric("copy_bw_retained", c_alone / c_under)
    state.set_metric("compute_repeats", repeats)
    state.set_metric("copy_bytes", mv.packed_bytes)
    if state.device.is_cuda:
        _set_peaks(state, pcie_peak(state), "copy_gbps", "copy_gbps_alone")
    state.note(compute_shape=_compute_desc(state, p["compute"]), copy_method=p["method"],
               lanes="CUDA streams" if state.device.is_cuda else "host threads")


def _compute_desc(state, kind: str) -> str:
    ic = state.cfg.interference
    if kind == "prefill":
        return f"prefill {ic.prefill_new} new after {ic.prefill_ctx} cached, {ic.compute_layers} layers"
    return f"decode step batch {ic.decode_batch} at ctx {ic.decode_ctx}, {ic.compute_layers} layers"


# -- layer-wise load/compute overlap ---------------------------------------------------------------------------------
def _tier_axis(c) -> list:
    return [v if v == "link" else float(v) for v in c.interference.tier_gbps]


class Pacer:
    """Holds a load lane so that layer i's KV is released no sooner than a tier of the target bandwidth would
    deliver it, without using the link. On a GPU a hold kernel of (per-layer target - per-layer link time) on the
    lane's stream, timed by the GPU's %globaltimer (kernels/pace.cu): wall-clock time, so it keeps its length when
    the SM clock drops under the compute beside it. Without CuPy it falls back to torch.cuda._sleep with cycles
    calibrated once at idle (recorded as such: it runs long if the SM clock drops). On the CPU a sleep of the
    lane's thread until (i + 1) x per-layer target after the lane started (deadlines, so sleep overshoot does not
    accumulate)."""

    def __init__(self, state, per_layer_s: float, gap_s: float):
        self.per_layer_s, self.gap_s, self.cuda = per_layer_s, gap_s, state.device.is_cuda
        self.t0 = 0.0
        if self.cuda:
            try:
                from bench.hw.cuda_kernels import hold_launcher

                self.hold = state.run_resource(("pace_hold", state.device.index),
                                               lambda: hold_launcher(state.device.index))
                state.note(pacing="hold kernel on %globaltimer (wall clock)")
            except Exception as e:  # no CuPy: SM-cycle spin calibrated at idle
                rate = state.run_resource(("spin_cycles_per_s", state.device.index), _spin_rate)
                self.hold = lambda s: torch.cuda._sleep(int(s * rate))
                state.note(pacing=f"torch.cuda._sleep at {rate:.4g} cycles/s calibrated at idle ({type(e).__name__}: "
                                  f"{str(e)[:120]}); runs long if the SM clock drops under compute")

    def begin(self) -> None:
        self.t0 = time.perf_counter()

    def after_layer(self, i: int) -> None:
        if self.cuda:
            self.hold(self.gap_s)
        else:
            left = self.t0 + (i + 1) * self.per_layer_s - time.perf_counter()
            if left > 0:
                time.sleep(left)


def _spin_rate() -> float:
    """Cycles per second of torch.cuda._sleep on this GPU at idle, timed with events."""
    cycles = 20_000_000
    torch.cuda._sleep(1000)
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    torch.cuda._sleep(cycles)
    b.record()
    b.synchronize()
    return cycles / (a.elapsed_time(b) * 1e-3)


def _layerwise_dims(state) -> tuple[int, int, int, int]:
    """(n_new, hit_tokens, layers run, bytes of one layer's cached K and V (MLA: latent)) of a layer-wise load."""
    p = state.params
    n_new, hit = int(p["n_new"]), int(p["hit_tokens"])
    shape = ModelShape.from_cfg(state.cfg.model)
    layer_bytes = hit * shape.kv_bytes_per_token_per_layer * (torch.finfo(layer_dtype(state)).bits // 8) // \
        shape.elt_bytes
    return n_new, hit, layerwise_depth(state, n_new, hit), layer_bytes


def _layerwise_need(state):
    n_new, hit, L, layer_bytes = _layerwise_dims(state)
    return stack_need(state, False, L, 1, n_new, hit, host_bytes=L * layer_bytes,
                      extra_what="pinned host copies of the cached KV")


@benchmark("layerwise_load", family="interference", cost=C.layerwise_load,
           axes=lambda c: {"n_new": list(c.interference.layerwise_new), "hit_tokens": list(c.interference.hit_tokens),
                           "tier_gbps": _tier_axis(c)}, needs=_layerwise_need)
def layerwise_load(state):
    """A prefill of n_new tokens after hit_tokens cached whose KV comes from host memory layer by layer: layer l
    waits only for its own KV, loaded on a copy stream while earlier layers compute. exposed_s (load time not
    hidden), exposed_per_layer_s, exposed_fraction of the load alone, and the ideal pipeline's exposure for
    comparison. tier_gbps=link uses the host link as is; a number paces each layer's load to that bandwidth."""
    tier = state.params["tier_gbps"]
    n_new, hit, L, layer_bytes = _layerwise_dims(state)
    stack = build_stack(state, False, L, 1, n_new, hit, token_major=True)
    regions = [[cached_region(t, hit) for t in cache] for cache in stack.caches]
    assert layer_bytes == sum(r.numel() * r.element_size() for r in regions[0]), "cached KV bytes per layer"
    host = []
    for layer in regions:
        bufs = []
        for r in layer:
            nbytes = r.numel() * r.element_size()
            buf, facts = host_buffer(nbytes, True, state.device, numa_node(state))
            hb = buf.view(r.dtype)
            hb.copy_(r)  # the host holds what the cache held: loading it back must give the same output
            bufs.append(hb)
        host.append(bufs)
    state.note(**facts)
    handoff = Handoff(L, state.device.is_cuda)
    run, cwork = compute_lane(state, stack)  # GPU: a CUDA graph per layer, so the lane is the GPU's time

    def copy_layer(i):
        for r, hb in zip(regions[i], host[i]):
            r.copy_(hb, non_blocking=True)

    def link_load():
        for i in range(L):
            copy_layer(i)
            handoff.post(i)

    link = state.reference_lanes(("layerwise_link", n_new, hit, L), [Lane("load", link_load, "device")])
    link_gbps = L * layer_bytes / link.total.median_s / 1e9
    if tier == "link":
        load, gap = link_load, 0.0
    else:
        target = layer_bytes / (float(tier) * 1e9)  # seconds per layer a tier of this bandwidth needs
        gap = target - link.total.median_s / L
        if gap <= 0:
            state.skip(f"tier_gbps={tier} is not slower than the host link measured here ({link_gbps:.3g} GB/s): "
                       "only slower tiers can be emulated by pacing")

        pacer = Pacer(state, target, gap)

        def load():
            pacer.begin()
            for i in range(L):
                copy_layer(i)
                pacer.after_layer(i)
                handoff.post(i)

    compute_alone = state.reference_lanes(("layerwise_compute", n_new, hit, L), [Lane("compute", run, cwork)])
    load_alone = link if tier == "link" else \
        state.reference_lanes(("layerwise_tier", n_new, hit, L, tier), [Lane("load", load, "device")])
    want = stack.run().float()  # KV resident: the output the pipelined prefill must reproduce
    # the load lane (producer) is queued before the compute lane (consumer): layer l's wait needs its event posted
    lanes = [Lane("load", load, "device"), Lane("compute", lambda: run(before_layer=handoff.wait), cwork)]
    _verify_pipeline(state, lanes, regions, host, handoff, want, stack.dtype, "before timing")
    res = state.exec_lanes(lanes, prepare=handoff.reset)
    _verify_pipeline(state, lanes, regions, host, handoff, want, stack.dtype, "after timing")

    load_s, comp_s, together = load_alone.total.median_s, compute_alone.total.median_s, res.total.median_s
    exposed = max(0.0, together - comp_s)
    ideal = float(overlap.ideal_exposed_s(load_s, comp_s, L))
    m = overlap.pair_overlap(load_s, comp_s, res.lanes["load"].median_s, res.lanes["compute"].median_s, together,
                             overlap.noise_band(compute_alone.total.noise, res.total.noise))
    for key in ("overlap_ratio", "together_vs_sum", "together_vs_max", "load_hidden"):
        state.set_metric(key, m[key])
    state.set_metric("load_slowdown", m["copy_slowdown"])
    for key, val in {"load_s_alone": load_s, "compute_s_alone": comp_s, "together_s": together,
                     "exposed_s": exposed, "exposed_per_layer_s": exposed / L, "exposed_fraction": exposed / load_s,
                     "ideal_exposed_s": ideal, "excess_exposed_s": exposed - ideal,
                     "load_over_compute": load_s / comp_s, "layers_run": L, "model_layers": stack.shape.layers,
                     "load_bytes": L * layer_bytes, "load_gbps_alone": L * layer_bytes / load_s / 1e9,
                     "link_gbps": link_gbps, "tier_emulated": tier != "link"}.items():
        state.set_metric(key, val)
    if state.device.is_cuda:
        _set_peaks(state, pcie_peak(state), "link_gbps", "load_gbps_alone")
    state.note(tier=("host link" if tier == "link" else
                     f"emulated {tier} GB/s: each layer's KV copied over the host link, then held for "
                     f"{gap * 1e6:.1f} us on the copy stream (CPU: its thread) so it arrives no sooner than that tier "
                     "would deliver it"),
               dtype=str(stack.dtype).replace("torch.", ""))


def _verify_pipeline(state, lanes, regions, host, handoff, want, dtype, when: str) -> None:
    """Poison the cached KV (NaN), run load + compute once together, then: the KV must equal the host copy and
    the output must equal the KV-resident output (a layer that ran before its KV arrived reads NaN)."""
    for layer in regions:
        for r in layer:
            r.fill_(float("nan"))
    handoff.reset()
    out = {}
    probe = [lanes[0], Lane(lanes[1].name, lambda: out.setdefault("y", lanes[1].fn()), lanes[1].work)]
    lanes_for(probe, state.device).sample_lanes()
    state.device.synchronize()
    bad = [(i, j) for i, layer in enumerate(regions) for j, r in enumerate(layer)
           if not torch.equal(r.view(torch.uint8), host[i][j].to(r.device).view(torch.uint8))]
    state.verify(not bad, f"{when}: layer {bad[0][0] if bad else -1} KV differs from its host copy after the load")
    y = out["y"].float()
    err = roofline.rel_error(y, want)
    tol = roofline.tolerance(dtype)
    state.verify(bool(torch.isfinite(y).all()) and err <= tol,
                 f"{when}: pipelined prefill output differs from the KV-resident one (rel. error {err:.2e}): a layer "
                 "ran before its KV arrived")


# -- concurrent host traffic ----------------------------------------------------------------------------------------
def _copy_lanes(state, prefix: str, direction: str, k: int, n: int, seed: int, numa, device_index=None):
    """``k`` lanes each copying ``n`` bytes in ``direction`` ('h2d' / 'd2h') between device ``device_index``
    (None: the run's) and pinned host buffers on NUMA node ``numa`` (None: wherever), seeded sources; returns
    (lanes, pairs)."""
    dev = state.device.torch if device_index is None else torch.device("cuda", device_index)
    pairs = []
    for i in range(k):
        hb, facts = host_buffer(n, True, state.device, numa)
        state.note(**{f"{prefix}_{key}": v for key, v in facts.items()})
        if direction == "h2d":
            fill_pattern(hb, seed + i, state.device)
            pairs.append((torch.full((n,), POISON, dtype=torch.uint8, device=dev), hb))
        else:
            hb.fill_(POISON)
            pairs.append((hb, pattern(n, seed + i, dev)))
    lanes = [Lane(f"{prefix}{i}", (lambda d=d, s=s: d.copy_(s, non_blocking=True)), "device", device_index)
             for i, (d, s) in enumerate(pairs)]
    return lanes, pairs


def _verified_once(state, lanes, pairs, when: str) -> None:
    for dst, _src in pairs:
        dst.fill_(POISON)
    lanes_for(lanes, state.device).sample_lanes()
    for d in {lane.device for lane in lanes if lane.device is not None}:
        torch.cuda.synchronize(d)
    state.device.synchronize()
    for i, (dst, src) in enumerate(pairs):
        check_copy(state, dst, src, f"{when}, lane {lanes[i].name}")


def _interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i:i + 1] + b[i:i + 1]
    return out


def _host_traffic_need(state):
    k, n = int(state.params["streams"]), int(state.cfg.interference.host_bytes)
    return need(2 * k * n, f"{2 * k} source + destination buffers", host_bytes=2 * k * n)


@benchmark("host_traffic_concurrent", family="interference", cost=C.host_traffic_concurrent,
           axes=lambda c: {"streams": list(c.interference.host_streams)}, needs=_host_traffic_need)
def host_traffic_concurrent(state):
    """H2D and D2H at once, `streams` pinned copies of interference.host_bytes each way: h2d_gbps and d2h_gbps
    under bidirectional load vs each direction alone (same streams, same run), h2d_retained / d2h_retained, and
    the total GB/s (both directions)."""
    ic = state.cfg.interference
    k, n = int(state.params["streams"]), int(ic.host_bytes)
    seed = int(ic.seed)
    up, up_pairs = _copy_lanes(state, "h2d", "h2d", k, n, seed, numa_node(state))
    down, down_pairs = _copy_lanes(state, "d2h", "d2h", k, n, seed + 100, numa_node(state))
    both = _interleave(up, down)
    pairs = _interleave(up_pairs, down_pairs)
    _verified_once(state, both, pairs, "before timing")
    alone_up = state.reference_lanes(("host_alone", "h2d", k, n), up)
    alone_down = state.reference_lanes(("host_alone", "d2h", k, n), down)
    state.add_bytes(2 * k * n)
    res = state.exec_lanes(both)
    _verified_once(state, both, pairs, "after timing")
    up_s = max(res.lanes[lane.name].median_s for lane in up)
    down_s = max(res.lanes[lane.name].median_s for lane in down)
    vals = {"h2d_gbps": k * n / up_s / 1e9, "d2h_gbps": k * n / down_s / 1e9,
            "h2d_alone_gbps": k * n / alone_up.total.median_s / 1e9,
            "d2h_alone_gbps": k * n / alone_down.total.median_s / 1e9}
    vals["h2d_retained"] = vals["h2d_gbps"] / vals["h2d_alone_gbps"]
    vals["d2h_retained"] = vals["d2h_gbps"] / vals["d2h_alone_gbps"]
    vals["bidir_gain"] = (2 * k * n / res.total.median_s / 1e9) / max(vals["h2d_alone_gbps"], vals["d2h_alone_gbps"])
    for key, v in vals.items():
        state.set_metric(key, v)
    set_link_peak(state, "h2d", streams_both_ways=True)  # the total, both directions
    if state.device.is_cuda:
        _set_peaks(state, pcie_peak(state), "h2d_gbps", "d2h_gbps", "h2d_alone_gbps", "d2h_alone_gbps")


def _multi_gpu(device):
    if not device.is_cuda:
        return "needs CUDA GPUs (CPU-only run)"
    target = getattr(device, "target", None)  # planning: the GPUs the target shows, not this machine's
    count = target.gpus if target is not None else torch.cuda.device_count()
    if count < 2:
        return f"{count} GPU visible: all-GPUs host traffic needs at least 2"
    return None


def gpu_numa_node(index: int):
    """NUMA node of CUDA device ``index`` (by its PCI address), or None."""
    from bench.hw.fingerprint import pci_numa_node

    props = torch.cuda.get_device_properties(index)
    try:
        node = pci_numa_node(f"{getattr(props, 'pci_domain_id', 0):04x}:{props.pci_bus_id:02x}:"
                             f"{props.pci_device_id:02x}.0")
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def _all_gpus_need(state):
    n = int(state.cfg.interference.host_bytes)
    dirs = 2 if state.params["direction"] == "bidir" else 1
    return need(2 * n * dirs, "each GPU's buffers (checked on every GPU below) and the pinned host buffers of every "
                "GPU", host_bytes=n * dirs * torch.cuda.device_count())


@benchmark("all_gpus_host", family="interference", cost=C.all_gpus_host,
           axes=lambda c: {"direction": ["h2d", "d2h", "bidir"]},
           supports=_multi_gpu, needs=_all_gpus_need)
def all_gpus_host(state):
    """Every GPU of the node copying to/from host at once (pinned buffers on each GPU's NUMA node): aggregate GB/s,
    each GPU's GB/s under load vs alone, and each GPU's NUMA node (shared root ports and sockets show here)."""
    ic = state.cfg.interference
    n, seed = int(ic.host_bytes), int(ic.seed)
    direction = state.params["direction"]
    dirs = ["h2d", "d2h"] if direction == "bidir" else [direction]
    gpus = list(range(torch.cuda.device_count()))
    lanes, pairs, per_gpu = [], [], {}
    for g in gpus:
        free, _ = torch.cuda.mem_get_info(g)
        held = 2 * n * len(dirs)
        if held > free * float(state.cfg.harness.gpu_mem_fraction):
            state.skip(f"GPU {g}: {bytes_binary(held)} of buffers exceed its free memory budget")
        numa = gpu_numa_node(g) if state.cfg.transfer.numa_pin else None
        mine = []
        for d in dirs:
            ls, ps = _copy_lanes(state, f"gpu{g}_{d}", d, 1, n, seed + 10 * g, numa, device_index=g)
            mine += ls
            pairs += ps
        lanes += mine
        per_gpu[g] = (mine, numa)
    _verified_once(state, lanes, pairs, "before timing")
    state.add_bytes(n * len(lanes))
    res = state.exec_lanes(lanes)
    _verified_once(state, lanes, pairs, "after timing")
    peak = pcie_peak(state)
    total_alone = 0.0
    for g, (mine, numa) in per_gpu.items():
        alone = state.reference_lanes(("gpu_alone", g, direction, n), mine)
        under_s = max(res.lanes[lane.name].median_s for lane in mine)
        gbps, gbps_alone = n * len(mine) / under_s / 1e9, n * len(mine) / alone.total.median_s / 1e9
        total_alone += gbps_alone
        state.set_metric(f"gpu{g}_gbps", gbps)
        state.set_metric(f"gpu{g}_alone_gbps", gbps_alone)
        state.set_metric(f"gpu{g}_retained", gbps / gbps_alone)
        state.set_metric(f"gpu{g}_numa_node", numa)
        if peak:
            _set_peaks(state, peak * len(mine), f"gpu{g}_gbps", f"gpu{g}_alone_gbps")
    state.set_metric("gpus", len(gpus))
    state.set_metric("aggregate_gbps", n * len(lanes) / res.total.median_s / 1e9)
    state.set_metric("sum_alone_gbps", total_alone)
    state.set_metric("aggregate_vs_sum_alone", (n * len(lanes) / res.total.median_s / 1e9) / total_alone)


@validator("interference")
def _interference(cfg) -> None:
    ic = cfg.interference
    for v in ic.methods:
        check(v in METHODS, "interference.methods", v, f"each one of {', '.join(METHODS)}")
    for v in ic.directions:
        check(v in DIRECTIONS, "interference.directions", v, f"each one of {', '.join(DIRECTIONS)}")
    for v in ic.computes:
        check(v in COMPUTES, "interference.computes", v, f"each one of {', '.join(COMPUTES)}")
    check(ic.layout in LAYOUTS, "interference.layout", ic.layout, f"one of {', '.join(LAYOUTS)}")
    for key in ("copy_bytes", "block_tokens", "pool_factor", "compute_layers", "prefill_new", "decode_batch",
                "decode_ctx", "max_repeats", "host_bytes"):
        positive_ints(f"interference.{key}", [ic[key]])
    check(isinstance(ic.prefill_ctx, int) and ic.prefill_ctx >= 0, "interference.prefill_ctx", ic.prefill_ctx,
          "an integer >= 0")
    for key in ("layerwise_new", "hit_tokens", "host_streams"):
        positive_ints(f"interference.{key}", ic[key])
    if ic.layerwise_layers is not None:
        positive_ints("interference.layerwise_layers", [ic.layerwise_layers])
        check(ic.layerwise_layers >= 2, "interference.layerwise_layers", ic.layerwise_layers,
              "at least 2 (one layer has nothing to overlap with) or null")
    check(len(ic.tier_gbps) > 0, "interference.tier_gbps", list(ic.tier_gbps), "give at least one value")
    for v in ic.tier_gbps:
        ok = v == "link" or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0)
        check(ok, "interference.tier_gbps", v, "'link' or a bandwidth in GB/s > 0")
