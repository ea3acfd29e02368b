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

from bench import roofline
from bench.config import check, positive_ints
from bench.layer import Layer
from bench.registry import benchmark
from bench.shapes import ModelShape, causal_pairs
from bench.validators import validator


def representative_index(shape: ModelShape) -> int:
    """The layer kind that dominates: the first MoE layer of an MoE model, else layer 0."""
    return shape.dense_layers if shape.experts else 0


def layer_dtype(state) -> torch.dtype:
    c = state.cfg.layers
    return roofline.compute_dtype(state, state.cfg.model.dtype if c.dtype == "model" else c.dtype, c.cpu_dtype)


def layer_param_bytes(shape: ModelShape, idx: int, dtype) -> int:
    return (shape.attn_params() + shape.mlp_params_total(idx) + 2 * shape.hidden) * (torch.finfo(dtype).bits // 8)


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


def check_layer_numerics(state, shape: ModelShape, idx: int, dtype, decode: bool) -> None:
    """Small shapes: the layer in ``dtype`` against the same weights in float64 (MoE routing taken from the
    float64 run, so a near-tie flipping an expert is not reported as an error; MoE layers slimmed by
    :func:`check_shape`)."""
    key = ("layer_check", shape.name, decode, str(dtype))
    cshape = check_shape(shape)
    if cshape.experts != shape.experts:
        state.note(numerics_check=f"MoE layer slimmed to {cshape.experts} of {shape.experts} experts")

    def run():
        layer = Layer(cshape, idx, dtype, state.device.torch, seed=11)
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
    p = state.params
    b, n, ctx = (int(p["batch"]), 1, int(p["ctx"])) if decode else (1, int(p["n_new"]), int(p["n_ctx"]))
    return build_stack(state, decode, int(p["layers"]), b, n, ctx)


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
               check_bytes(shape, idx, dtype))


def build_stack(state, decode: bool, k: int, b: int, n: int, ctx: int, token_major: bool = False,
                extra_bytes: int = 0, host_bytes: int = 0, extra_what: str = "") -> Stack:
    """``k`` layers for a prefill of ``n`` new tokens after ``ctx`` cached (decode: ``b`` sequences, one token
    each), numerics checked first; ``token_major`` caches keep each layer's cached positions contiguous (what a
    KV load writes into). The point's one :meth:`State.require_bytes` call is made here, with what the caller
    allocates after the stack (``extra_bytes`` on the device, ``host_bytes`` of host memory: ``extra_what``)."""
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = layer_dtype(state)
    idx = representative_index(shape)
    elt = torch.finfo(dtype).bits // 8
    what = f"{k} layer(s) of weights, KV cache and activations (or the numerics check before them)"
    state.require_bytes(stack_bytes(state, decode, k, b, n, ctx, int(extra_bytes)),
                        what + (f", {extra_what}" if extra_what else ""), host_bytes=int(host_bytes))
    check_layer_numerics(state, shape, idx, dtype, decode)
    layers = [Layer(shape, idx, dtype, state.device.torch, seed=100 + i) for i in range(k)]
    masks: dict = {}  # one lower-right causal mask for the whole stack, built in the first (untimed) call
    for layer in layers:
        layer.masks = masks
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


@benchmark("layer_prefill", family="layers",
           axes=lambda c: {"n_new": list(c.layers.prefill_new), "n_ctx": list(c.layers.prefill_ctx),
                           "layers": list(c.layers.layer_counts)})
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


@benchmark("layer_decode", family="layers",
           axes=lambda c: {"batch": list(c.layers.decode_batch), "ctx": list(c.layers.decode_ctx),
                           "layers": list(c.layers.layer_counts)})
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
    c = cfg.layers
    for key in ("prefill_new", "decode_batch", "decode_ctx", "layer_counts"):
        positive_ints(f"layers.{key}", c[key])
    for v in c.prefill_ctx:
        check(isinstance(v, int) and v >= 0, "layers.prefill_ctx", v, "integers >= 0")
    check(1 in c.layer_counts, "layers.layer_counts", list(c.layer_counts),
          "must include 1 (the scaling check compares with one layer)")
