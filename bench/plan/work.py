"""What each benchmark point does, in time, on a planning target: its timed measurements (the seconds of one call
and the clock that times it), the setup around them (allocating, filling, verifying) and the one-off work a run
does once (numerics checks, ceilings, pattern files).

These are models, not measurements: per-call times come from the target's measured rates (bytes / GB/s, FLOPs /
TFLOP/s, small kernels and Python op issue for layer loops); the harness's stopping rule turns them into seconds
(bench.plan.estimate). Compute efficiencies below are the fractions of the GEMM/HBM rate each kind of kernel
reached on the H100/H200 this suite ran on (attention backends, whole layers).
"""
from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Callable, Optional

from bench.llm.shapes import DTYPE_BYTES, ModelShape, causal_pairs

LAUNCH_US = 10.0  # one copy issued and completed on a GPU: launch + DMA setup
SYNC_US = 15.0  # a host round trip (issue + synchronize)
# a kernel's efficiency where the target does not list it (fractions of its GEMM / copy rate); the measured ones
# are per target: conf/targets/<name>.yaml efficiency (with their source)
DEFAULT_EFF = {"attention_prefill": [0.3, 1700], "attention_decode": 0.3, "layer_flops": 0.65, "layer_bytes": 0.35}
OPS_PER_LAYER = {"gqa": 65, "mla": 85}


@dataclass
class Timed:
    """One measurement a point runs: ``call_s`` per call on ``clock`` (device | host | host_issued | lanes);
    ``prepare_s`` runs untimed before each sample (then each sample is one call); ``key``: a reference timed once
    per run and key; ``samples``: a distribution of single calls (State.distribution: that many, within the time
    budget, no noise stop)."""

    call_s: float
    clock: str
    prepare_s: float = 0.0
    inner: Optional[int] = None
    key: Optional[tuple] = None
    samples: Optional[int] = None
    io_bytes: Optional[int] = None  # file bytes one call reads or writes, where not the Work's io_bytes_per_call


@dataclass
class Work:
    timed: list = field(default_factory=list)
    setup_s: float = 0.0
    once: dict = field(default_factory=dict)  # key -> seconds, paid by the first point of a run that needs it
    io_bytes_per_call: int = 0  # storage: file bytes one timed call reads or writes (the family's bytes budget)
    io_setup_bytes: int = 0


class Ctx:
    """What a model sees: the composed config, the point's params, the target and the point's needs."""

    def __init__(self, cfg, params: dict, target, need):
        self.cfg, self.p, self.t, self.need = cfg, params, target, need
        self.cuda = target.is_cuda
        self.shape = ModelShape.from_cfg(cfg.model)

    def compute_elt(self, section: str, key: str = "dtype", cpu_key: str = "cpu_dtype") -> int:
        """Bytes per element of the family's compute dtype (the one rule: bench.llm.numerics.dtype_name)."""
        from bench.llm.numerics import dtype_name

        return DTYPE_BYTES.get(dtype_name(self.cfg, section, self.cuda, key, cpu_key), 2)

    # -- rates ----------------------------------------------------------------------------------------------
    def hbm(self, nbytes: float) -> float:
        return nbytes / (self.t.hbm_gbps * 1e9)

    def link(self, nbytes: float) -> float:
        return nbytes / (self.t.link_gbps * 1e9) + (LAUNCH_US * 1e-6 if self.cuda else 0.0)

    def flops(self, f: float, eff: float = 1.0) -> float:
        return f / (self.t.tflops * 1e12 * eff)

    def ops(self, n: float) -> float:
        return n * self.t.kernel_us * 1e-6

    def eff(self, kind: str, kernel: str = None, tokens: float = 0.0) -> float:
        """The target's measured efficiency of a kind of work (conf/targets efficiency): attention_prefill per
        kernel saturating with the tokens it runs over (e x L / (L + half)), attention_decode per kernel, layers."""
        table = (self.t.efficiency or {}).get(kind, DEFAULT_EFF[kind])
        if kernel is None:
            return float(table)
        v = table.get(kernel, DEFAULT_EFF[kind]) if isinstance(table, dict) else table
        if isinstance(v, (list, tuple)):
            e, half = float(v[0]), float(v[1])
            return e * tokens / (tokens + half) if half else e
        return float(v)

    def host_fill(self, nbytes: float) -> float:
        """Seeded bytes into a host buffer: generated on the GPU and copied over, or by torch's CPU generator."""
        return self.link(nbytes) if self.cuda else nbytes / (self.t.host_fill_gbps * 1e9)

    def dev_fill(self, nbytes: float) -> float:
        return self.hbm(nbytes) if self.cuda else nbytes / (self.t.host_fill_gbps * 1e9)

    def pin(self, nbytes: float) -> float:
        return nbytes / (self.t.pin_gbps * 1e9) if self.cuda else nbytes / (self.t.hbm_gbps * 1e9)

    def compare(self, nbytes: float, on_host: bool) -> float:
        return nbytes / (self.t.host_compare_gbps * 1e9) if (on_host or not self.cuda) else self.hbm(2 * nbytes)


MODELS: dict[str, Callable[[Ctx], Work]] = {}


def model(*names):
    def wrap(fn):
        for n in names:
            MODELS[n] = fn
        return fn
    return wrap


# -- ceilings ---------------------------------------------------------------------------------------------------
def _l2_flush_s(c: Ctx) -> float:
    return c.hbm(2 * c.t.l2_bytes) + SYNC_US * 1e-6 if (c.cuda and c.cfg.harness.l2_flush) else 0.0


@model("d2d_copy")
def _d2d_copy(c: Ctx) -> Work:
    n = int(c.p["size_bytes"])
    flush = c.cuda and 2 * n <= c.t.l2_bytes
    return Work([Timed(c.hbm(2 * n) + c.ops(1), "device", _l2_flush_s(c) if flush else 0.0)],
                setup_s=c.dev_fill(n) + c.compare(n, False))


@model("gemm")
def _gemm(c: Ctx) -> Work:
    n = int(c.p["n"])
    elt = c.compute_elt("ceilings", "gemm_dtype", "cpu_gemm_dtype")
    return Work([Timed(c.flops(2.0 * n ** 3) + c.ops(1), "device", _l2_flush_s(c))],
                setup_s=c.dev_fill(2 * n * n * elt) + c.flops(2.0 * 64 * n * n) * (20 if c.cuda else 2),
                once=compute_init(c))


# -- transfer ----------------------------------------------------------------------------------------------------
def _contiguous(c: Ctx, direction: str, pinned: bool) -> Work:
    n = int(c.p["size_bytes"])
    if direction == "d2d":
        call = c.hbm(2 * n) + c.ops(1)
        flush = c.cuda and 2 * n <= c.t.l2_bytes
        timed = [Timed(call, "device", _l2_flush_s(c) if flush else 0.0)]
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


for _name, _d, _p in (("h2d_pinned", "h2d", True), ("d2h_pinned", "d2h", True), ("h2d_pageable", "h2d", False),
                      ("d2h_pageable", "d2h", False), ("d2d", "d2d", True)):
    MODELS[_name] = (lambda d, p: (lambda c: _contiguous(c, d, p)))(_d, _p)


@model("bidir_pinned")
def _bidir(c: Ctx) -> Work:
    n = int(c.p["size_bytes"])
    call = c.link(n)
    return Work([Timed(call, "device")],
                setup_s=2 * c.pin(n) + c.host_fill(n) + c.dev_fill(n) + call + c.compare(n, True) + c.compare(n, False))


@model("h2d_pinned_streams", "d2h_pinned_streams")
def _streams(c: Ctx) -> Work:
    k, n = int(c.p["streams"]), int(c.cfg.transfer.stream_bytes)
    call = c.link(k * n)
    return Work([Timed(call, "device")], setup_s=c.pin(k * n) + c.host_fill(k * n) + call + c.compare(k * n, True))


def paged_call(c: Ctx, method: str, layout: str, block_tokens: int, packed: int) -> tuple[float, str]:
    """Seconds of one paged move of ``packed`` KV bytes and its clock."""
    s = c.shape
    n = max(1, packed // s.kv_block_bytes(block_tokens))
    n_src = s.layers * s.kv_components if layout == "layer_major" else 1
    if method == "memcpy_per_block":  # a cudaMemcpyAsync costs the host ~0.7 of an aten op's issue
        return max(n * n_src * 0.7 * c.t.issue_us * 1e-6, c.link(packed)), "host_issued"
    if method == "staged":
        return c.link(packed) + c.hbm(2 * packed) + c.ops(n_src + 1), "device"
    return c.link(packed) + c.ops(1), "device"


@model("paged_offload", "paged_onload")
def _paged(c: Ctx) -> Work:
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
    return Work([Timed(call, clock), contiguous], setup_s=setup, once={("cupy_compile",): 2.0}
                if (c.p["method"] == "uva_kernel" and c.cuda) else {})


# -- attention ---------------------------------------------------------------------------------------------------
def _attn_dims(c: Ctx, decode: bool):
    return c.shape.attn_dims(decode)


def _attn_kernels(c: Ctx) -> list:
    """The kernels a point times: its backend, or for best every kernel of attention.best_of that can run here."""
    backend = c.p["backend"]
    if backend != "best":
        return [backend]
    import importlib.util

    ok = ("auto", "flash", "math") if not c.cuda else ("auto", "flash", "cudnn", "efficient", "math") + \
        (("flashinfer",) if importlib.util.find_spec("flashinfer") else ())  # a package missing here: not timed
    out = [b for b in c.cfg.attention.best_of if b in ok]
    return [b for b in out if b != "flashinfer" or c.benchmark == "attn_decode"]


@model("attn_prefill")
def _attn_prefill(c: Ctx) -> Work:
    n_new, n_ctx = int(c.p["n_new"]), int(c.p["n_ctx"])
    hq, hkv, qk, vd = _attn_dims(c, False)
    flops = 2.0 * hq * (qk + vd) * causal_pairs(n_new, n_ctx)
    elt = c.compute_elt("attention")
    nbytes = (n_new * hq * (qk + vd) + (n_ctx + n_new) * hkv * (qk + vd)) * elt
    timed, once = [], {("ceilings",): _ceilings_s(c), **compute_init(c)}
    for k in _attn_kernels(c):  # each kernel timed once per shape and run: a row and best share it
        call = c.flops(flops, c.eff("attention_prefill", k, n_new + n_ctx)) + c.ops(1 if c.cuda else 4)
        timed.append(Timed(call, "device", _l2_flush_s(c), key=("attn", "prefill", k, n_new, n_ctx)))
        once[("attn_check", k, False)] = 0.3 if c.cuda else 0.05
    return Work(timed, setup_s=c.dev_fill(nbytes) + 2 * max(t.call_s for t in timed), once=once)


@model("attn_decode")
def _attn_decode(c: Ctx) -> Work:
    batch, ctx = int(c.p["batch"]), int(c.p["ctx"])
    hq, hkv, qk, vd = _attn_dims(c, True)
    elt = c.compute_elt("attention")
    kv = batch * ctx * c.shape.kv_bytes_per_token_per_layer * elt // c.shape.elt_bytes
    timed, once = [], {("ceilings",): _ceilings_s(c), **compute_init(c)}
    for k in _attn_kernels(c):
        # the copy rate counts bytes read + written (d2d): a decode kernel reads its KV at up to that rate x eff
        call = kv / (c.t.hbm_gbps * 1e9 * c.eff("attention_decode", k)) + c.ops(1 if c.cuda else 4) + \
            (0 if c.cuda else c.flops(2.0 * hq * (qk + vd) * batch * ctx, c.eff("attention_prefill", k)))
        timed.append(Timed(call, "device", _l2_flush_s(c), key=("attn", "decode", k, batch, ctx)))
        once[("attn_check", k, True)] = 0.3 if c.cuda else 0.05
    return Work(timed, setup_s=c.dev_fill(kv) + 2 * max(t.call_s for t in timed), once=once)


def compute_init(c: Ctx) -> dict:
    """The first compute point of a run loads the kernels' libraries (cuBLAS, cuDNN, SDPA backends): once per run."""
    return {("compute_init",): 4.0 if c.cuda else 1.5}


def _ceilings_s(c: Ctx) -> float:
    """The roofline's GEMM and copy ceilings, timed once per run by the first compute point."""
    if c.cuda:
        return 2 * (c.cfg.harness.warmup_s + 0.05) + c.flops(2.0 * 8192 ** 3) * 10 + c.hbm(2 << 30) * 10 + 0.3
    return 2 * (c.cfg.harness.warmup_s + 0.05) + c.flops(2.0 * 1024 ** 3) * 10 + c.hbm(64 << 20) * 10


# -- layers ------------------------------------------------------------------------------------------------------
def layer_s(c: Ctx, decode: bool, b: int, n: int, ctx: int, elt: int) -> float:
    """Device seconds of one layer of the preset: FLOPs at the layer efficiency, weights + KV read, small kernels."""
    s = c.shape
    idx = s.dense_layers if s.experts else 0
    tokens = b * n
    lin = 2.0 * (s.attn_params() + s.mlp_params_active(idx)) * tokens
    pairs = b * (ctx + 1) if decode else causal_pairs(n, ctx)
    flops = lin + s.attn_score_flops(pairs, decode, layers=1)
    weights = (s.attn_params() + s.mlp_params_active(idx)) * elt
    kv = b * (ctx + n) * s.kv_bytes_per_token_per_layer * elt // s.elt_bytes
    return c.flops(flops, c.eff("layer_flops")) + (weights + kv) / (c.t.hbm_gbps * 1e9 * c.eff("layer_bytes")) + \
        c.ops(layer_ops(s, tokens))


def layer_ops(s: ModelShape, tokens: int) -> int:
    """Kernels one layer of ``s`` launches for ``tokens`` tokens: the attention and MLP ops, and ~5 per expert an
    MoE layer routes tokens to."""
    return OPS_PER_LAYER["mla" if s.is_mla else "gqa"] + (5 * min(s.experts, tokens * s.experts_active)
                                                          if s.experts else 0)


def _layer_clock(c: Ctx, k: int) -> str:
    return "host_issued" if (c.shape.experts or k * OPS_PER_LAYER["gqa"] > 500) else "device"


def _layer_weights_s(c: Ctx, k: int, elt: int) -> float:
    s = c.shape
    idx = s.dense_layers if s.experts else 0
    return c.dev_fill(k * (s.attn_params() + s.mlp_params_total(idx)) * elt)


def _layer_attention_s(c: Ctx) -> dict:
    """The layers' attention kernel choice (layers.attention=best): each candidate checked and timed once per run."""
    if str(c.cfg.layers.get("attention", "best")) != "best":
        return {}
    from bench.benchmarks.layers import CANDIDATES

    n = sum(len(v) for v in CANDIDATES["cuda" if c.cuda else "cpu"].values())
    h = c.cfg.harness
    each = 2 * float(h.warmup_s) + c.t.converge_share * 0.05 + (1 - c.t.converge_share) * float(h.time_budget_s) + \
        (0.3 if c.cuda else 0.02)
    return {("layer_attention",): n * each}


def _check_s(c: Ctx) -> float:
    s = c.shape
    idx = s.dense_layers if s.experts else 0
    return 0.5 + c.dev_fill((s.attn_params() + s.mlp_params_total(idx)) * 10) if c.cuda else \
        0.1 + (s.attn_params() + s.mlp_params_total(idx)) * 12 / (c.t.hbm_gbps * 1e9)


@model("layer_prefill", "layer_decode")
def _layers(c: Ctx) -> Work:
    decode = c.benchmark == "layer_decode"
    k = int(c.p["layers"])
    b, n, ctx = (int(c.p["batch"]), 1, int(c.p["ctx"])) if decode else (1, int(c.p["n_new"]), int(c.p["n_ctx"]))
    elt = c.compute_elt("layers")
    one = layer_s(c, decode, b, n, ctx, elt)
    clock = _layer_clock(c, k)
    extra = c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k if clock == "host_issued" else 0.0
    timed = [Timed(k * one + extra, clock, _l2_flush_s(c) if decode else 0.0)]
    if k > 1:
        timed.append(Timed(one, _layer_clock(c, 1), key=("layer1", decode, b, n, ctx)))
    setup = _layer_weights_s(c, k, elt) + 3 * k * one + c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k * 2
    return Work(timed, setup_s=setup, once={("layer_check", decode): _check_s(c), ("ceilings",): _ceilings_s(c),
                                            **compute_init(c), **_layer_attention_s(c)})


# -- interference ------------------------------------------------------------------------------------------------
def _stack_setup_s(c: Ctx, k: int, one: float, elt: int) -> float:
    graphs = (3 * k * one + 0.01 * k) if c.cuda else 0.0  # CUDA graph capture: eager warm-ups, then capture
    return _layer_weights_s(c, k, elt) + 2 * k * one + graphs + c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k * 2


@model("copy_under_compute")
def _copy_under(c: Ctx) -> Work:
    ic = c.cfg.interference
    elt = c.compute_elt("layers")
    k = int(ic.compute_layers)
    decode = c.p["compute"] == "decode"
    b, n, ctx = (int(ic.decode_batch), 1, int(ic.decode_ctx)) if decode else \
        (1, int(ic.prefill_new), int(ic.prefill_ctx))
    one = layer_s(c, decode, b, n, ctx, elt)
    block = c.shape.kv_block_bytes(int(ic.block_tokens))
    packed = max(1, int(ic.copy_bytes) // block) * block
    copy, _clock = paged_call(c, c.p["method"], str(ic.layout), int(ic.block_tokens), packed)
    compute = k * one
    repeats = min(int(ic.max_repeats), max(1, round(copy / compute))) if ic.match_durations else 1
    together = max(copy, compute * repeats)
    timed = [Timed(copy, "lanes", key=("copy_alone", c.p["method"], c.p["direction"], packed)),
             Timed(compute, "lanes", key=("compute_alone", c.p["compute"], 1)),
             Timed(together, "lanes")]
    if repeats > 1:
        timed.append(Timed(compute * repeats, "lanes", key=("compute_alone", c.p["compute"], repeats)))
    pool = packed * int(ic.pool_factor)
    setup = _stack_setup_s(c, k, one, elt) + c.dev_fill(pool) + c.pin(packed) + c.host_fill(packed) + \
        2 * (together + c.compare(packed, False))
    return Work(timed, setup_s=setup, once={("layer_check", decode): _check_s(c), **_layer_attention_s(c)})


@model("layerwise_load")
def _layerwise(c: Ctx) -> Work:
    elt = c.compute_elt("layers")
    n_new, hit, tier = int(c.p["n_new"]), int(c.p["hit_tokens"]), c.p["tier_gbps"]
    s = c.shape
    L = c.layerwise_layers
    one = layer_s(c, False, 1, n_new, hit, elt)
    layer_bytes = hit * s.kv_bytes_per_token_per_layer * elt // s.elt_bytes
    load_link = L * c.link(layer_bytes)
    load = load_link if tier == "link" else max(load_link, L * layer_bytes / (float(tier) * 1e9))
    compute = L * one
    together = max(load, compute) + min(load, compute) / L
    timed = [Timed(load_link, "lanes", key=("layerwise_link", n_new, hit, L)),
             Timed(compute, "lanes", key=("layerwise_compute", n_new, hit, L)),
             Timed(together, "lanes")]
    if tier != "link":
        timed.append(Timed(load, "lanes", key=("layerwise_tier", n_new, hit, L, tier)))
    verify = 2 * (together + c.compare(L * layer_bytes, False) + c.ops(4 * L))
    setup = _stack_setup_s(c, L, one, elt) + c.pin(L * layer_bytes) + c.hbm(L * layer_bytes) + verify + compute
    return Work(timed, setup_s=setup, once={("layer_check", False): _check_s(c), **_layer_attention_s(c)})


@model("host_traffic_concurrent")
def _host_traffic(c: Ctx) -> Work:
    k, n = int(c.p["streams"]), int(c.cfg.interference.host_bytes)
    one_way = c.link(k * n)
    both = max(one_way, 2 * k * n / (1.75 * c.t.link_gbps * 1e9))
    setup = c.pin(2 * k * n) + c.host_fill(k * n) + c.dev_fill(k * n) + 2 * (both + c.compare(k * n, True) +
                                                                               c.compare(k * n, False))
    return Work([Timed(one_way, "lanes", key=("host_alone", "h2d", k, n)),
                 Timed(one_way, "lanes", key=("host_alone", "d2h", k, n)), Timed(both, "lanes")], setup_s=setup)


@model("all_gpus_host")
def _all_gpus(c: Ctx) -> Work:
    n = int(c.cfg.interference.host_bytes)
    return Work([Timed(c.link(n), "lanes"), Timed(c.link(n), "lanes")], setup_s=c.pin(2 * n) + c.host_fill(n))


# -- storage -----------------------------------------------------------------------------------------------------
def io_pass_s(c: Ctx, req: int, count: int, qd: int, write: bool, engine: str = "threads") -> float:
    """One pass of ``count`` requests of ``req`` bytes at queue depth ``qd``: bandwidth or per-request latency,
    whichever binds (synchronous threads overlap the device but not their own call overhead; aio and fio keep qd
    requests in flight)."""
    rate = (c.t.storage_write_gbps if write else c.t.storage_read_gbps) * 1e9
    per_req = c.t.storage_latency_us * 1e-6
    return max(count * req / rate, count * per_req / (min(qd, 2) if engine == "threads" else qd)) + 1e-4


def _drop_s(c: Ctx, file_bytes: int = 0) -> float:
    """fdatasync + fadvise + mincore over the file (``file_bytes``, default storage.file_bytes)."""
    return 2e-3 + (file_bytes or int(c.cfg.storage.file_bytes)) / (4096 * 2e9)


def _pattern_file_once(c: Ctx, file_bytes: int = 0) -> dict:
    fb = file_bytes or int(c.cfg.storage.file_bytes)
    return {("pattern_file", fb): fb / (c.t.storage_write_gbps * 1e9) + fb / 3e9}  # pattern generation + write


def _requests(c: Ctx, req: int, pattern: str, qd: int = 1, write: bool = False, engine: str = "aio",
              file_bytes: int = 0) -> int:
    """Requests of the point's steady-state pass on the target (bench.benchmarks.storage.steady_offsets: about
    storage.pass_s at the probe's rate, within the pass bounds): the rate is the target's, from io_pass_s.
    ``file_bytes``: the file the pass reads (default storage.file_bytes; the warm family's cold flows read theirs)."""
    from bench.hw.fileio import pass_bounds, pass_requests

    s = c.cfg.storage
    fewest, most = pass_bounds(pattern, req, qd, file_bytes or int(s.file_bytes), int(s.pass_depths),
                               int(s.pass_max_bytes))
    probe = "threads" if engine == "threads" else "aio"
    rate = fewest / io_pass_s(c, req, fewest, qd, write, probe)
    return pass_requests(rate, float(s.pass_s), fewest, most)


def _probe_once(c: Ctx, req: int, pattern: str, qd: int, write: bool) -> dict:
    """The untimed probe pass that sizes a steady-state pass: once per (request, depth, pattern, direction) and run."""
    from bench.hw.fileio import pass_bounds

    s = c.cfg.storage
    fewest, _ = pass_bounds(pattern, req, qd, int(s.file_bytes), int(s.pass_depths), int(s.pass_max_bytes))
    return {("steady_pass", req, qd, pattern, write): io_pass_s(c, req, fewest, qd, write, "aio") +
            (0.0 if write else _drop_s(c))}


@model("file_read", "file_write")
def _file_rw(c: Ctx) -> Work:
    write = c.benchmark == "file_write"
    req, qd, pattern = int(c.p["request_bytes"]), int(c.p["queue_depth"]), c.p["pattern"]
    engine = c.p.get("engine", "threads")
    count = _requests(c, req, pattern, qd, write, engine)
    call = io_pass_s(c, req, count, qd, write, engine)
    once = {**_pattern_file_once(c), **_probe_once(c, req, pattern, qd, write)}
    if engine == "fio":  # one fio process per sample, each repeating the pass for FIO_MIN_RUN_S; one warm-up run
        from bench.benchmarks.storage import FIO_MIN_RUN_S

        loops = max(1, math.ceil(FIO_MIN_RUN_S / call))
        run_s = loops * call + 0.05
        restore = next(iter(_pattern_file_once(c).values())) if write else 0.0  # the pattern rewritten after
        return Work([Timed(run_s, "host", 0.0 if write else _drop_s(c))], setup_s=call + 0.05 + restore,
                    once=once, io_bytes_per_call=loops * count * req,
                    io_setup_bytes=count * req + (int(c.cfg.storage.file_bytes) if write else 0))
    verify = io_pass_s(c, req, count, qd, False) + count * req / 1e9 + _drop_s(c)
    return Work([Timed(call, "host", 0.0 if write else _drop_s(c))], setup_s=verify + (0 if write else _drop_s(c)),
                once=once, io_bytes_per_call=count * req, io_setup_bytes=count * req)


@model("file_read_cache_check")
def _cache_check(c: Ctx) -> Work:
    req = int(c.p["request_bytes"])
    timed, io = [], 0
    for pattern in ("random", "repeat"):
        count = _requests(c, req, pattern, 1, False, "threads")
        timed.append(Timed(io_pass_s(c, req, count, 1, False), "host", _drop_s(c), key=("cache_check", pattern, req)))
        io = max(io, count * req)
    return Work(timed, setup_s=2 * timed[0].call_s, once=_pattern_file_once(c), io_bytes_per_call=io,
                io_setup_bytes=2 * io)


@model("gpu_file_read_kvikio", "gpu_file_write_kvikio", "gpu_file_read_bounce", "gpu_file_write_bounce")
def _gpu_file(c: Ctx) -> Work:
    write = "write" in c.benchmark
    req, qd, pattern = int(c.p["request_bytes"]), int(c.p["queue_depth"]), c.p["pattern"]
    count = _requests(c, req, pattern, qd, write)
    total = count * req
    call = io_pass_s(c, req, count, qd, write) + c.link(total)
    verify = io_pass_s(c, req, count, qd, False) + total / 1e9 + _drop_s(c)
    setup = c.pin(total) + (total / 1e9 if write else call) + verify
    return Work([Timed(call, "host_issued", 0.0 if write else _drop_s(c))], setup_s=setup,
                once={**_pattern_file_once(c), **_probe_once(c, req, pattern, qd, write)},
                io_bytes_per_call=total, io_setup_bytes=2 * total)


# -- validate ----------------------------------------------------------------------------------------------------
@model("e2e_agentic_replay")
def _replay(c: Ctx) -> Work:
    """The replay: a warm-up session and ``repeats`` passes over the sessions, prefill per turn and decode token by
    token through ``k`` layers. A decode step is a CUDA graph on a GPU where one can hold it
    (bench.llm.replay.graph_refusal, the engine's rule), else eager: a layer's ops (layer_ops: ~65, MoE more)
    issued one by one from Python at the target's issue_us each (the H200 replayed llama3_8b's 32 layers eagerly
    at ~49 ms a token: ~23 us an op), the GPU waiting on the host."""
    from bench.llm.workload import Workload
    from bench.llm.replay import decode_spans, graph_refusal, make_sessions

    v = c.cfg.validate
    mode = c.p["mode"]
    elt = c.compute_elt("validate")
    w = Workload.from_cfg(v.workload)
    sessions = make_sessions(w, int(v.sessions), int(v.turns), float(v.scale_tokens), int(v.vocab_rows), int(v.seed))
    k = c.replay_layers
    graphs = c.cuda and graph_refusal(c.shape) is None
    eager_step = 0.0 if graphs else c.t.issue_us * 1e-6 * layer_ops(c.shape, 1)  # a layer's decode ops, issued

    def session_s(s) -> float:
        tot, hist, ctx = 0.0, 0, 0
        for i, turn in enumerate(s.turns):
            n = len(turn.new_ids)
            pre_n, pre_ctx = (hist + n, 0) if mode == "recompute" else (n, ctx)
            issue = c.t.issue_us * 1e-6 * layer_ops(c.shape, pre_n)  # prefill is eager
            tot += k * max(layer_s(c, False, 1, pre_n, pre_ctx, elt), issue)
            if mode in ("reuse_host", "reuse_storage") and i:
                kvb = ctx * k * c.shape.kv_bytes_per_token_per_layer * elt // c.shape.elt_bytes
                tot += c.link(kvb) * 2 + (kvb / (c.t.storage_read_gbps * 1e9) + kvb / (c.t.storage_write_gbps * 1e9)
                                          if mode == "reuse_storage" else 0.0)
            hist += n
            ctx = hist
            for _ in range(len(turn.out_ids)):  # eager: the GPU runs behind the host's op issue
                tot += k * max(layer_s(c, True, 1, 1, ctx, elt), eager_step)
                ctx += 1
            hist = ctx
        return tot

    per_pass = sum(session_s(s) for s in sessions)
    if graphs:  # decode graphs captured once per run (one per attention span), untimed
        c_spans = len(decode_spans(max(s.max_tokens for s in sessions)))
        capture = c_spans * (0.05 + 3 * k * layer_s(c, True, 1, 1, 256, elt))
    else:
        capture = 0.0
    total = session_s(sessions[0]) + int(v.repeats) * per_pass + 0.1 * len(sessions)
    if mode == "recompute":  # the baseline of every mode: replayed once per run, by whichever point comes first
        return Work([], once={("replay_recompute",): total, ("replay_engine",): capture})
    rec_c = Ctx(c.cfg, {**c.p, "mode": "recompute"}, c.t, c.need)
    rec_c.benchmark, rec_c.replay_layers = c.benchmark, k
    return Work([], setup_s=total, once=_replay(rec_c).once)


# -- warm tier ---------------------------------------------------------------------------------------------------
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
            return runs * 0.7 * c.t.issue_us * 1e-6 + nbytes / rate + keep
        return nbytes / rate * (2 if method == "cpu_gather" else 1) + nf * CPU_ROW_S + keep
    if method == "uva_kernel":
        return nbytes / (c.t.link_gbps * 1e9 * _row_eff(rb)) + c.ops(1) + keep
    ids = SYNC_US * 1e-6 + c.link(nf * 8)  # the step's row ids to the host, waited for
    if method == "cpu_gather":
        return ids + nbytes / (c.t.host_compare_gbps * 2e9) + nf * CPU_ROW_S + c.link(nbytes) + keep
    return ids + max(runs * 0.7 * c.t.issue_us * 1e-6, c.link(nbytes)) + keep


@model("warm_fetch")
def _warm_fetch(c: Ctx) -> Work:
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
        once[("cupy_compile", "warm.cu")] = 2.0
    return Work([Timed(call, clock), latency, contiguous], setup_s=setup, once=once)


@model("warm_search")
def _warm_search(c: Ctx) -> Work:
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
                      **({("cupy_compile", "warm.cu"): 2.0} if (c.cuda and method == "uva_kernel") else {})})


@model("warm_peer")
def _warm_peer(c: Ctx) -> Work:
    w = c.cfg.warm
    k, rb, S = int(w.peer_rows), int(c.p["row_bytes"]), int(w.steps)
    nvlink = 0.5 * c.t.hbm_gbps  # a neighbour's HBM over NVLink, before anything is measured
    call = k * rb / (nvlink * 1e9) + c.ops(1) if c.p["method"] == "peer_kernel" else \
        max(k * 0.7 * c.t.issue_us * 1e-6, k * rb / (nvlink * 1e9))
    clock = "device" if c.p["method"] == "peer_kernel" else "host_issued"
    return Work([Timed(call, clock), Timed(call + SYNC_US * 1e-6, "host_issued", inner=1,
                                           samples=int(w.latency_samples)),
                 Timed(k * rb / (nvlink * 1e9), "device", key=("peer_contiguous", k * rb))],
                setup_s=2 * S * (call + c.hbm(2 * k * rb)), once={("warm_peer_pool",): c.dev_fill(int(w.pool_bytes))})


@model("cold_read_under_decode")
def _cold_read(c: Ctx) -> Work:
    w = c.cfg.warm
    req, qd = int(c.p["request_bytes"]), int(c.p["queue_depth"])
    fb = int(w.cold_file_bytes)
    count = _requests(c, req, "sequential", qd, file_bytes=fb)
    read = io_pass_s(c, req, count, qd, False, "aio")
    elt = c.compute_elt("layers")
    k = int(w.cold_layers)
    one = k * layer_s(c, True, int(w.cold_decode_batch), 1, int(w.cold_decode_ctx), elt)
    repeats = min(64, max(1, round(read / one)))
    together = max(read, one * repeats)
    drop = _drop_s(c, fb)
    timed = [Timed(read, "lanes", drop, key=("cold_read_alone", req, qd, count)),
             Timed(one, "lanes", key=("decode_alone", k, 1), io_bytes=0), Timed(together, "lanes", drop)]
    if repeats > 1:
        timed.append(Timed(one * repeats, "lanes", key=("decode_alone", k, repeats), io_bytes=0))
    verify = 2 * (read + count * req / 1e9 + drop)
    once = {**_pattern_file_once(c, fb), ("steady_pass", req, qd, "sequential", False, fb): read + drop,
            ("layer_check", True): _check_s(c), **_layer_attention_s(c)}
    return Work(timed, setup_s=_stack_setup_s(c, k, one / k, elt) + verify, once=once,
                io_bytes_per_call=count * req, io_setup_bytes=3 * count * req)
