"""Cost models of the layers family (bench.harness.cost): whole layers of the preset at the target's layer
efficiencies, and the shared pieces other families' models price layer loops with (layer_s, layer_ops, a stack's
setup)."""
from __future__ import annotations

from bench.benchmarks.layers.sizes import CANDIDATES
from bench.harness.cost import OPS_PER_LAYER, Ctx, Timed, Work, ceilings_s, compute_init, l2_flush_s
from bench.llm.shapes import ModelShape, causal_pairs


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


def layer_clock(c: Ctx, k: int) -> str:
    return "host_issued" if (c.shape.experts or k * OPS_PER_LAYER["gqa"] > 500) else "device"


def layer_weights_s(c: Ctx, k: int, elt: int) -> float:
    s = c.shape
    idx = s.dense_layers if s.experts else 0
    return c.dev_fill(k * (s.attn_params() + s.mlp_params_total(idx)) * elt)


def layer_attention_s(c: Ctx) -> dict:
    """The layers' attention kernel choice (layers.attention=best): each candidate checked and timed once per run."""
    if str(c.cfg.layers.get("attention", "best")) != "best":
        return {}
    n = sum(len(v) for v in CANDIDATES["cuda" if c.cuda else "cpu"].values())
    h = c.cfg.harness
    each = 2 * float(h.warmup_s) + c.t.converge_share * 0.05 + (1 - c.t.converge_share) * float(h.time_budget_s) + \
        (0.3 if c.cuda else 0.02)
    return {("layer_attention",): n * each}


def layer_check_s(c: Ctx) -> float:
    s = c.shape
    idx = s.dense_layers if s.experts else 0
    return 0.5 + c.dev_fill((s.attn_params() + s.mlp_params_total(idx)) * 10) if c.cuda else \
        0.1 + (s.attn_params() + s.mlp_params_total(idx)) * 12 / (c.t.hbm_gbps * 1e9)


def layers(c: Ctx) -> Work:
    decode = c.benchmark == "layer_decode"
    k = int(c.p["layers"])
    b, n, ctx = (int(c.p["batch"]), 1, int(c.p["ctx"])) if decode else (1, int(c.p["n_new"]), int(c.p["n_ctx"]))
    elt = c.compute_elt("layers")
    one = layer_s(c, decode, b, n, ctx, elt)
    clock = layer_clock(c, k)
    extra = c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k if clock == "host_issued" else 0.0
    timed = [Timed(k * one + extra, clock, l2_flush_s(c) if decode else 0.0)]
    if k > 1:
        timed.append(Timed(one, layer_clock(c, 1), key=("layer1", decode, b, n, ctx)))
    setup = layer_weights_s(c, k, elt) + 3 * k * one + c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k * 2
    return Work(timed, setup_s=setup, once={("layer_check", decode): layer_check_s(c), ("ceilings",): ceilings_s(c),
                                            **compute_init(c), **layer_attention_s(c)})



def stack_setup_s(c: Ctx, k: int, one: float, elt: int) -> float:
    graphs = (3 * k * one + 0.01 * k) if c.cuda else 0.0  # CUDA graph capture: eager warm-ups, then capture
    return layer_weights_s(c, k, elt) + 2 * k * one + graphs + c.t.issue_us * 1e-6 * OPS_PER_LAYER["gqa"] * k * 2
