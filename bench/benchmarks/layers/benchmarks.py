"""Full transformer layers of the model preset: prefill (n_new after n_ctx cached) and decode (batch x ctx).

Times ``layers`` stacked layers (1, 2, 4 ...) with random weights and a real KV cache, reports the per-layer
time and scales it to the whole model by the preset's layer count; the 2- and 4-layer points check that scaling
against the 1-layer time of the same run (``scaling_error``). Outputs the costs the throughput model fits:
``prefill_s_per_token`` and ``model_prefill_s`` (prefill), ``model_decode_step_s`` (decode). Numerics are
checked once per configuration against a float64 copy of the layer on small shapes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.harness import roofline
from bench.core.checks import check, positive_ints
from bench.core.errors import Skip
from bench.llm.layer import Layer
from bench.llm import attention as A
from bench.benchmarks.layers import cost as C
from bench.benchmarks.layers.sizes import CALIBRATION, CANDIDATES
from bench.core.registry import benchmark
from bench.harness import need
from bench.llm.shapes import ModelShape, causal_pairs, layer_param_bytes, representative_index  # noqa: F401
from bench.core.checks import validator
from bench.core.config import check_dtypes


def layer_dtype(state) -> torch.dtype:
    return roofline.compute_dtype(state, "layers")


CHECK_EXPERTS = 16  # experts kept in the numerics-check layer of an MoE model (DeepSeek-V3 has 256)


def check_shape(shape: ModelShape) -> ModelShape:
    """The shape the float64 numerics check runs on: the model's own, with an MoE layer slimmed to at most
    CHECK_EXPERTS experts (the check's 16-32 tokens route to at most that many anyway; the same router, top-k,
    expert loop and shared experts run). A full DeepSeek-V3 MoE layer is 22.9 GB in bf16, ~92 GB in float64."""
    if shape.experts > CHECK_EXPERTS:
        return dataclasses.replace(shape, experts=max(CHECK_EXPERTS, shape.experts_active))
    return shape


def check_bytes(shape: ModelShape, idx: int, dtype) -> int:
    """Memory the numerics check holds at once: its layer in ``dtype`` plus the float64 copy."""
    elt = torch.finfo(dtype).bits // 8
    return layer_param_bytes(check_shape(shape), idx, dtype) * (elt + 8) // elt


LAYER_KERNELS = ("best",) + A.KERNELS


def calibration_bytes(shape: ModelShape, dtype, cuda: bool) -> int:
    """Device bytes the kernel choice holds at once (its largest Q, K, V, O, K/V expanded to the query heads)."""
    elt = torch.finfo(dtype).bits // 8
    cal = CALIBRATION["cuda" if cuda else "cpu"]
    n, c = cal["prefill"]
    hq, hkv, qk, vd = shape.attn_dims(False)
    pre = (2 * n * hq * (qk + vd) + (n + c) * hq * (qk + vd)) * elt * 2
    b, ctx = cal["decode"]
    hq, hkv, qk, vd = shape.attn_dims(True)
    dec = (b * ctx * hq * (qk + vd) + 2 * b * hq * (qk + vd)) * elt * 2
    return max(pre, dec)


def layer_attention(state, shape: ModelShape, dtype) -> "A.LayerAttention":
    """The attention kernels every layer of this run runs (layers.attention): ``best`` times each candidate
    kernel that passes the float64 check on the model's attention geometry (prefill: without and after cached
    context, the same kernel; decode) at a calibration shape, once per run, and takes the fastest of each;
    a kernel name forces it for both. Noted on every point that runs layers (``attention_kernel``)."""
    want = str(state.cfg.layers.attention)

    def choose():
        if want != "best":
            return A.LayerAttention(want, want), {"how": f"layers.attention={want}"}
        dev = "cuda" if state.device.is_cuda else "cpu"
        picked, facts = {}, {"how": "fastest of the candidates that pass the float64 check, timed at "
                                    f"{CALIBRATION[dev]} (prefill new/cached, decode batch/context)"}
        for phase in ("prefill", "decode"):
            times, why = _calibrate(state, shape, dtype, phase, CANDIDATES[dev][phase], CALIBRATION[dev][phase])
            if not times:
                raise Skip(f"no attention kernel ran the layer's {phase} here: "
                           + "; ".join(f"{k}: {w}" for k, w in why.items()))
            picked[phase] = min(times, key=times.get)
            facts[phase] = {"candidates_s": times, **({"rejected": why} if why else {})}
        return A.LayerAttention(picked["prefill"], picked["decode"]), facts

    la, facts = state.run_resource(("layer_attention", shape.name, str(dtype), want), choose)
    return la, facts


def _calibrate(state, shape: ModelShape, dtype, phase: str, kernels, dims) -> tuple[dict, dict]:
    """({kernel: median seconds} of the kernels that ran ``phase`` correctly at ``dims``, {kernel: why not})."""
    from bench.benchmarks.attention.benchmarks import make_qkv

    decode = phase == "decode"
    hq, hkv, qk, vd = shape.attn_dims(decode)
    dev = state.device.torch
    tol = roofline.tolerance(dtype)
    times, why = {}, {}
    for kern in kernels:
        try:
            errs = []
            for n_ctx in ((0,) if decode else (0, 24)):  # a prefill kernel must be right without and after context
                b, n_q, n_k = (2, 1, 48) if decode else (1, 16, 16 + n_ctx)
                q, k, v = make_qkv(b, hq, hkv, n_q, n_k, qk, vd, dtype, dev, 3, shared_v=decode and shape.is_mla)
                fn, _ = (A.decode(kern, q, k, v) if decode else A.prefill(kern, q, k, v, n_ctx))
                errs.append(roofline.rel_error(fn(), A.reference(q, k, v, n_ctx, not decode)))
            if not max(errs) < tol:
                why[kern] = f"relative error {max(errs):.2e} against float64 exceeds {tol:g}"
                continue
            if decode:
                b, ctx = dims
                q, k, v = make_qkv(b, hq, hkv, 1, ctx, qk, vd, dtype, dev, 4, shared_v=shape.is_mla)
                fn, _ = A.decode(kern, q, k, v)
            else:
                n, ctx = dims
                q, k, v = make_qkv(1, hq, hkv, n, n + ctx, qk, vd, dtype, dev, 4)
                fn, _ = A.prefill(kern, q, k, v, ctx)
            fn()
            st = state.reference(("layer_attention_time", phase, kern, shape.name, str(dtype)) + tuple(dims), fn,
                                 work="device", flush_l2=decode)
            times[kern] = st.median_s
        except Skip as e:
            why[kern] = str(e)
        except Exception as e:  # a kernel that cannot run these inputs is not a candidate
            why[kern] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    return times, why


def check_layer_numerics(state, shape: ModelShape, idx: int, dtype, decode: bool,
                         attention: Optional["A.LayerAttention"] = None) -> None:
    """Small shapes: the layer in ``dtype`` against the same weights in float64 (MoE routing taken from the
    float64 run, so a near-tie flipping an expert is not reported as an error; MoE layers slimmed by
    :func:`check_shape`)."""
    key = ("layer_check", shape.name, decode, str(dtype), None if attention is None else str(attention.as_dict()))
    cshape = check_shape(shape)
    if cshape.experts != shape.experts:
        state.note(numerics_check=f"MoE layer slimmed to {cshape.experts} of {shape.experts} experts")

    def run():
        layer = Layer(cshape, idx, dtype, state.device.torch, seed=11)
        if attention is not None:
            layer.attention = attention
        ref = layer.to(torch.float64)
        b, n, ctx = (2, 1, 32) if decode else (1, 16, 16)
        x = torch.randn(b, n, cshape.hidden, device=state.device.torch, generator=torch.Generator(
            device=state.device.torch).manual_seed(5), dtype=torch.float32)
        cache = layer.new_cache(b, ctx + n, 9)
        cache64 = tuple(c.to(torch.float64) for c in cache)
        y_ref, ids = ref.forward(x.double(), cache64, ctx, decode)
        y, _ = layer.forward(x.to(dtype), cache, ctx, decode, forced_topk=ids)
        return roofline.rel_error(y, y_ref)

    err = state.run_resource(key, run)
    tol = 2 * roofline.tolerance(dtype)  # a whole layer: two matmul chains and a softmax
    state.set_metric("check_rel_error", err)
    state.verify(err < tol, f"layer output relative error {err:.2e} against float64 exceeds {tol:g}")


@dataclass
class Stack:
    """``k`` stacked layers of the preset with their KV caches and one input; ``run(count)`` runs the first
    ``count``. flops / nbytes are one layer's work (linear + attention; weights + KV read)."""

    shape: ModelShape
    dtype: torch.dtype
    k: int
    layers: list
    caches: list
    run: Callable
    flops: float
    nbytes: int
    tokens: int
    x: Optional[torch.Tensor] = None  # the input of the first layer
    ctx: int = 0
    decode: bool = False
    _ops: Optional[int] = None
    _graphs: Optional[tuple] = None

    def ops(self) -> int:
        """Aten ops (~kernel launches) of one run of all ``k`` layers (counted once, untimed)."""
        if self._ops is None:
            self._ops = dispatched_ops(self.run)
        return self._ops


def build(state, decode: bool) -> "Stack":
    """The point's layer stack: prefill (n_new after n_ctx) or decode (batch x ctx) through `layers` layers."""
    return build_stack(state, decode, *_point_dims(state, decode))


def stack_bytes(state, decode: bool, k: int, b: int, n: int, ctx: int, extra_bytes: int = 0) -> int:
    """Device bytes ``k`` stacked layers hold at once (weights, KV cache, activations, a materialized mask) with
    ``extra_bytes`` the caller allocates after them, or the numerics check before them when that is larger (it
    runs and frees its layers before anything else is allocated)."""
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = layer_dtype(state)
    idx = representative_index(shape)
    elt = torch.finfo(dtype).bits // 8
    cache_bytes = b * (ctx + n) * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes
    act_bytes = b * n * max(shape.hidden, shape.ffn, shape.moe_ffn * max(1, shape.experts_active)) * elt * 8
    if shape.is_mla and not decode:  # decompressed per-head K and V of every position
        act_bytes += 2 * b * (ctx + n) * shape.heads * shape.head_dim * elt
    mask_bytes = n * (ctx + n) * (elt + 1) if (not decode and ctx) else 0  # a materialized lower-right mask
    return max(k * (layer_param_bytes(shape, idx, dtype) + cache_bytes) + act_bytes + mask_bytes + extra_bytes,
               check_bytes(shape, idx, dtype), calibration_bytes(shape, dtype, state.device.is_cuda))


def stack_need(state, decode: bool, k: int, b: int, n: int, ctx: int, extra_bytes: int = 0, host_bytes: int = 0,
               extra_what: str = ""):
    """The needs of a point that builds ``k`` stacked layers (:func:`stack_bytes`) and allocates ``extra_bytes`` on
    the device and ``host_bytes`` of host memory after them (``extra_what``)."""
    what = f"{k} layer(s) of weights, KV cache and activations (or the numerics check before them)"
    return need(stack_bytes(state, decode, k, b, n, ctx, int(extra_bytes)),
                what + (f", {extra_what}" if extra_what else ""), host_bytes=int(host_bytes))


def _point_dims(state, decode: bool) -> tuple[int, int, int, int]:
    p = state.params
    b, n, ctx = (int(p["batch"]), 1, int(p["ctx"])) if decode else (1, int(p["n_new"]), int(p["n_ctx"]))
    return int(p["layers"]), b, n, ctx


def layers_need(decode: bool):
    def needs(state):
        return stack_need(state, decode, *_point_dims(state, decode))
    return needs


def build_stack(state, decode: bool, k: int, b: int, n: int, ctx: int, token_major: bool = False) -> Stack:
    """``k`` layers for a prefill of ``n`` new tokens after ``ctx`` cached (decode: ``b`` sequences, one token
    each), numerics checked first; ``token_major`` caches keep each layer's cached positions contiguous (what a
    KV load writes into). Its memory is the caller's needs (:func:`stack_need`)."""
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = layer_dtype(state)
    idx = representative_index(shape)
    elt = torch.finfo(dtype).bits // 8
    attention, choice = layer_attention(state, shape, dtype)
    check_layer_numerics(state, shape, idx, dtype, decode, attention)
    layers = [Layer(shape, idx, dtype, state.device.torch, seed=100 + i) for i in range(k)]
    for layer in layers:  # one set of kernels (and one lower-right mask per shape) for the whole stack
        layer.attention = attention
    caches = [l.new_cache(b, ctx + n, 200 + i, token_major=token_major) for i, l in enumerate(layers)]
    x = torch.randn(b, n, shape.hidden, device=state.device.torch, dtype=torch.float32).to(dtype)

    def run(count=k, before_layer=None):
        y = x
        for i, (layer, cache) in enumerate(zip(layers[:count], caches[:count])):
            if before_layer is not None:
                before_layer(i)
            y, _ = layer.forward(y, cache, ctx, decode)
        return y

    # work of one layer: linear + attention FLOPs; bytes: weights read (MoE: experts touched) + KV read
    tokens = b * n
    lin = 2.0 * (shape.attn_params() + shape.mlp_params_active(idx)) * tokens
    pairs = b * (ctx + 1) if decode else causal_pairs(n, ctx)
    flops = lin + shape.attn_score_flops(pairs, decode, layers=1) + \
        (0.0 if decode else b * shape.mla_decompress_flops(ctx, layers=1))
    weights = (shape.attn_params() + (0 if layers[0].moe else shape.mlp_params_total(idx))) * elt + \
        layers[0].touched_expert_bytes(tokens)
    kv_read = b * (ctx + n) * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes
    state.note(attention_kernel=attention.decode_kernel if decode else attention.prefill_kernel,
               attention_kernels=attention.as_dict(), attention_choice=choice)
    state.note(dtype=str(dtype).replace("torch.", ""), layer_index=idx, moe=layers[0].moe,
               moe_impl="loop over routed experts" if layers[0].moe else None,
               attention="mla" if shape.is_mla else "gqa", model_layers=shape.layers)
    return Stack(shape, dtype, k, layers, caches, run, flops, weights + kv_read, tokens, x, ctx, decode)


DEVICE_MAX_OPS = 500  # a stream queue holds ~1000 launches and an aten op may launch more than one kernel


def dispatched_ops(fn) -> int:
    """Non-view aten ops one call of ``fn`` dispatches: about the kernels it launches on a GPU (views launch
    nothing). Counted on a call after a first one, so one-time setup (masks) is not counted."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                self.n += 1
            return func(*args, **(kwargs or {}))

    fn()
    with _Count() as c:
        fn()
    return c.n


def layer_work(state, stack: "Stack", calls: int = 1) -> str:
    """The kind of work ``calls`` back-to-back runs of a layer stack are: host-issued (host clock + final
    synchronize) when the MoE loop reads expert token counts on the host (a sync inside the call: a stream-hold
    spin ahead of it would only be waited for) or when the runs launch more kernels than a stream queue holds
    (the host blocks while queuing, so no spin can hide the issue: a 32-layer prefill is ~2,000 launches);
    otherwise device work."""
    if state.notes.get("moe"):
        return "host_issued"
    try:
        ops = stack.ops()
    except Exception as e:  # counting is a dispatch-mode trace; without it, host-issued timing is never wrong
        state.note(ops_per_run=f"not counted ({type(e).__name__}): timed as host-issued work")
        return "host_issued"
    state.note(ops_per_run=ops)
    return "host_issued" if ops * calls > DEVICE_MAX_OPS else "device"


def capture_graphs(stack: "Stack") -> tuple:
    """One CUDA graph per layer of ``stack`` (GPU only), captured after eager runs (masks built, kernels and
    workspaces chosen) into one shared memory pool, replayed in capture order: layer i's graph reads layer i-1's
    output where that graph left it. Returns (graphs, output of the last layer). Raises whatever capture raises
    (an MoE layer reads expert counts on the host, which a graph cannot hold)."""
    if stack._graphs is None:
        cuda = torch.cuda
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graph's documentation asks
            for _ in range(2):
                stack.run()
        cuda.current_stream().wait_stream(side)
        cuda.synchronize()
        graphs, pool, y = [], None, stack.x
        for layer, cache in zip(stack.layers, stack.caches):
            g = cuda.CUDAGraph()
            with cuda.graph(g, pool=pool):
                y, _ = layer.forward(y, cache, stack.ctx, stack.decode)
            pool = g.pool()
            graphs.append(g)
        cuda.synchronize()
        stack._graphs = (graphs, y)
    return stack._graphs


def compute_lane(state, stack: "Stack", repeats: int = 1):
    """The compute lane beside a copy: ``(fn, work)``, where ``fn(before_layer=None)`` runs the stack ``repeats``
    times and returns the last layer's output. On a GPU every layer is a CUDA graph replay (as serving engines run
    their layers): the lane is device work of k x repeats launches (plus one event wait per layer when
    ``before_layer`` waits), so its time is the GPU's, not the rate at which Python issues ~65 aten ops per layer
    (an eager 32-layer stack is host-bound: its 'overlap' would measure the issue loop). A stack that cannot be
    captured (MoE: expert counts read on the host) skips the point with the reason. On the CPU, the eager stack."""
    if not state.device.is_cuda:
        def eager(before_layer=None):
            y = None
            for _ in range(repeats):
                y = stack.run(before_layer=before_layer)
            return y
        return eager, layer_work(state, stack, calls=repeats)
    if state.notes.get("moe"):
        state.skip("the compute lane must be device work and an MoE layer reads its expert token counts on the host "
                   "(no CUDA graph can hold that): a host-issued layer loop would time Python's issue rate, not the "
                   "GPU, so overlap with a copy cannot be measured for this model")
    try:
        graphs, out = capture_graphs(stack)
    except Exception as e:
        torch.cuda.synchronize()
        state.skip(f"the compute lane must be device work and CUDA graph capture of the layer failed "
                   f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}): a host-issued layer "
                   "loop would time Python's issue rate, not the GPU")
    state.note(compute_lane=f"CUDA graph per layer ({len(graphs)} layers x {repeats} repeat(s))")

    def replay(before_layer=None):
        for _ in range(repeats):
            for i, g in enumerate(graphs):
                if before_layer is not None:
                    before_layer(i)
                g.replay()
        return out

    launches = len(graphs) * repeats * 2  # graph launches and at most as many event waits
    return replay, ("device" if launches <= DEVICE_MAX_OPS else "host_issued")


def finish(state, st: "Stack", work: str) -> float:
    """Per-layer time, the scaling check against one layer (same clock: the same kind of work), roofline;
    returns the whole model's time (per layer x model layers)."""
    per_layer = state.stats.median_s / st.k
    state.set_metric("per_layer_s", per_layer)
    if st.k > 1:  # scaling check against the 1-layer time of the same configuration, same run
        key = ("layer1",) + tuple(sorted((a, v) for a, v in state.params.items() if a != "layers")) + \
            (st.shape.name, work)
        one = state.reference(key, lambda: st.run(1), work=work).median_s
        state.set_metric("one_layer_s", one)
        state.set_metric("scaling_error", per_layer / one - 1)
    state.add_flops(st.flops * st.k)
    roofline.report(state, st.flops * st.k, st.nbytes * st.k, st.dtype)
    return per_layer * st.shape.layers


@benchmark("layer_prefill", family="layers", cost=C.layers,
           axes=lambda c: {"n_new": list(c.layers.prefill_new), "n_ctx": list(c.layers.prefill_ctx),
                           "layers": list(c.layers.layer_counts)}, needs=layers_need(False))
def layer_prefill(state):
    """Prefill through `layers` stacked transformer layers (n_new tokens after n_ctx cached; weights, norms,
    RoPE, attention, MLP/MoE); per_layer_s, model_prefill_s = per layer x model layers, prefill_s_per_token."""
    st = build(state, decode=False)
    st.run()
    state.add_items("tokens", st.tokens)
    work = layer_work(state, st)
    state.exec(st.run, work=work)
    model_s = finish(state, st, work)
    state.set_metric("model_prefill_s", model_s)
    state.set_metric("prefill_s_per_token", model_s / st.tokens)


@benchmark("layer_decode", family="layers", cost=C.layers,
           axes=lambda c: {"batch": list(c.layers.decode_batch), "ctx": list(c.layers.decode_ctx),
                           "layers": list(c.layers.layer_counts)}, needs=layers_need(True))
def layer_decode(state):
    """One decode step through `layers` stacked layers for `batch` sequences at `ctx` cached tokens;
    per_layer_s, model_decode_step_s = per layer x model layers, decode_tokens_per_s for the whole model."""
    st = build(state, decode=True)
    st.run()
    state.add_items("tokens", st.tokens)
    work = layer_work(state, st)
    state.exec(st.run, work=work, flush_l2=True)
    model_s = finish(state, st, work)
    state.set_metric("model_decode_step_s", model_s)
    state.set_metric("decode_tokens_per_s", st.tokens / model_s)


@validator("layers")
def _layers(cfg) -> None:
    check_dtypes(cfg, "layers.cpu_dtype")
    c = cfg.layers
    for key in ("prefill_new", "decode_batch", "decode_ctx", "layer_counts"):
        positive_ints(f"layers.{key}", c[key])
    for v in c.prefill_ctx:
        check(isinstance(v, int) and v >= 0, "layers.prefill_ctx", v, "integers >= 0")
    check(c.attention in LAYER_KERNELS, "layers.attention", c.attention, f"one of {', '.join(LAYER_KERNELS)}")
    check(1 in c.layer_counts, "layers.layer_counts", list(c.layer_counts),
          "must include 1 (the scaling check compares with one layer)")
