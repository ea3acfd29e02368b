"""Cost models of the attention family (bench.harness.cost): a prefill or decode per kernel timed, each kernel
once per shape and run (a kernel's own row and ``best`` share the timing)."""
from __future__ import annotations

from bench.harness.cost import Ctx, Timed, Work, ceilings_s, compute_init, l2_flush_s, numerics_check_s
from bench.llm.shapes import causal_pairs


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


def attn_prefill(c: Ctx) -> Work:
    n_new, n_ctx = int(c.p["n_new"]), int(c.p["n_ctx"])
    hq, hkv, qk, vd = _attn_dims(c, False)
    flops = 2.0 * hq * (qk + vd) * causal_pairs(n_new, n_ctx)
    elt = c.compute_elt("attention")
    nbytes = (n_new * hq * (qk + vd) + (n_ctx + n_new) * hkv * (qk + vd)) * elt
    timed, once = [], {("ceilings",): ceilings_s(c), **compute_init(c)}
    for k in _attn_kernels(c):  # each kernel timed once per shape and run: a row and best share it
        call = c.flops(flops, c.eff("attention_prefill", k, n_new + n_ctx)) + c.ops(1 if c.cuda else 4)
        timed.append(Timed(call, "device", l2_flush_s(c), key=("attn", "prefill", k, n_new, n_ctx)))
        once[("attn_check", k, False)] = numerics_check_s(c)
    return Work(timed, setup_s=c.dev_fill(nbytes) + 2 * max(t.call_s for t in timed), once=once)


def attn_decode(c: Ctx) -> Work:
    batch, ctx = int(c.p["batch"]), int(c.p["ctx"])
    hq, hkv, qk, vd = _attn_dims(c, True)
    elt = c.compute_elt("attention")
    kv = batch * ctx * c.shape.kv_bytes_per_token_per_layer * elt // c.shape.elt_bytes
    timed, once = [], {("ceilings",): ceilings_s(c), **compute_init(c)}
    for k in _attn_kernels(c):
        # the copy rate counts bytes read + written (d2d): a decode kernel reads its KV at up to that rate x eff
        call = kv / (c.t.hbm_gbps * 1e9 * c.eff("attention_decode", k)) + c.ops(1 if c.cuda else 4) + \
            (0 if c.cuda else c.flops(2.0 * hq * (qk + vd) * batch * ctx, c.eff("attention_prefill", k)))
        timed.append(Timed(call, "device", l2_flush_s(c), key=("attn", "decode", k, batch, ctx)))
        once[("attn_check", k, True)] = numerics_check_s(c)
    return Work(timed, setup_s=c.dev_fill(kv) + 2 * max(t.call_s for t in timed), once=once)
