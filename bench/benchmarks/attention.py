"""Attention kernels at real model shapes: causal prefill (optionally after cached context, the prefix-reuse case)
and decode (batch x context, GQA / MLA-absorbed), per backend.

Backends: torch SDPA forced to one implementation (flash, cudnn, efficient, math: the forced one is the one that
ran, or the point is skipped with the reason) and FlashInfer paged decode when installed. Each point is checked
once against a float64 reference on small shapes before it is timed. TFLOP/s counts QK^T and PV (causal: the
pairs actually computed); KV GB/s counts the KV bytes read once.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bench import roofline
from bench.config import check, positive_ints
from bench.layer import lower_right_mask
from bench.registry import benchmark
from bench.shapes import ModelShape, causal_pairs
from bench.validators import validator

SDPA_BACKENDS = ("flash", "cudnn", "efficient", "math")
BACKENDS = SDPA_BACKENDS + ("flashinfer",)


def _sdpa_backend(name: str):
    from torch.nn.attention import SDPBackend

    return {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]


def dtype_of(state) -> torch.dtype:
    a = state.cfg.attention
    return roofline.compute_dtype(state, state.cfg.model.dtype if a.dtype == "model" else a.dtype, a.cpu_dtype)


def reference_attention(q, k, v, n_ctx: int, causal: bool) -> torch.Tensor:
    """float64 attention written out (no SDPA): GQA by head repetition, lower-right causal mask."""
    q, k, v = q.double(), k.double(), v.double()
    rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(rep, dim=1)
    v = v.repeat_interleave(rep, dim=1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if causal:
        n_q, n_k = q.shape[2], k.shape[2]
        allowed = torch.ones(n_q, n_k, dtype=torch.bool, device=q.device).tril(diagonal=n_k - n_q)
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


MAY_EXPAND_GQA = ("efficient", "cudnn")  # backends that may not take fewer K/V heads than Q heads (torch version)


def native_gqa(backend: str, q, k, v) -> bool:
    """Whether forced SDPA ``backend`` runs these GQA inputs natively (enable_gqa). torch 2.11 documents GQA for
    flash and math only; newer releases add efficient/cudnn: ask torch's own dispatch checks."""
    if backend in ("flash", "math") or q.device.type != "cuda":
        return True
    from torch.backends import cuda as bc

    check = {"efficient": bc.can_use_efficient_attention,
             "cudnn": getattr(bc, "can_use_cudnn_attention", None)}.get(backend)
    return bool(check and check(bc.SDPAParams(q, k, v, None, 0.0, False, True)))


def sdpa_extra_bytes(backend: str, b: int, hq: int, hkv: int, n_q: int, n_k: int, qk: int, vd: int, elt: int,
                     lower_right: bool) -> int:
    """Bytes a forced SDPA backend allocates beyond Q, K, V and O: K/V expanded to the query heads (backends without
    GQA), a materialized lower-right mask (additive, in the query dtype), and the math backend's score and
    probability matrices (float32)."""
    extra = 0
    if hq != hkv and backend in MAY_EXPAND_GQA:  # counted whether or not this torch needs the expansion
        extra += b * (hq - hkv) * n_k * (qk + vd) * elt
    if lower_right and backend in ("cudnn", "math"):  # the additive mask (query dtype) and its boolean source
        extra += n_q * n_k * (elt + 1)
    if backend == "math":
        extra += 2 * b * hq * n_q * n_k * 4
    return extra


def sdpa(backend: str, q, k, v, n_ctx: int, causal: bool):
    """A callable running SDPA with exactly ``backend`` (causal aligned lower-right when n_ctx > 0); every
    preparation (K/V expansion for backends without GQA, the causal mask, V padding for flash) happens here,
    outside the timed call. Returns (fn, facts)."""
    from torch.nn.attention import sdpa_kernel

    gqa = q.shape[1] != k.shape[1]
    be = _sdpa_backend(backend)
    facts = {"backend": backend, "gqa": "native" if gqa else "none"}
    expansion = 1
    if gqa:
        with sdpa_kernel([be]):
            native = native_gqa(backend, q, k, v)
        if not native:
            expansion = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(expansion, dim=1), v.repeat_interleave(expansion, dim=1)
            facts["gqa"] = f"expanded x{expansion}: SDPA {backend} has no GQA support here, so the kernel reads " \
                           f"{expansion}x the KV bytes"
            gqa = False
    qk, vd = q.shape[-1], v.shape[-1]
    if backend == "flash" and vd < qk:
        # FlashAttention needs one head dim for q, k and v: pad V (as MLA serving stacks do), slice the output
        v = F.pad(v, (0, qk - vd))
        facts["v_padded_to"] = qk
    kw = {}
    if causal and n_ctx:
        with sdpa_kernel([be]):
            kw["attn_mask"], facts["causal_mask"] = lower_right_mask(q, k, v, gqa)
    elif causal:
        kw["is_causal"] = True

    def fn():
        with sdpa_kernel([be]):
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa, **kw)[..., :vd]

    fn.kv_expansion = expansion
    return fn, facts


def make_qkv(b: int, hq: int, hkv: int, n_q: int, n_k: int, qk: int, vd: int, dtype, dev, seed: int):
    """Random Q, K, V generated directly in ``dtype`` (no float32 intermediate: the peak is what require_bytes
    counts)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=dev, dtype=dtype, generator=g)  # noqa: E731
    return r(b, hq, n_q, qk), r(b, hkv, n_k, qk), r(b, hkv, n_k, vd)


def check_numerics(state, backend: str, shape: ModelShape, decode: bool, dtype, causal: bool) -> None:
    """Once per (backend, model, mode, dtype) and run: small shapes against the float64 reference."""
    key = ("attn_check", backend, shape.name, decode, str(dtype))

    def run_check():
        hq, hkv, qk, vd = shape.attn_dims(decode)
        n = int(state.cfg.attention.check_tokens)
        b, n_q, n_ctx = (2, 1, n) if decode else (1, n, n // 2)
        q, k, v = make_qkv(b, hq, hkv, n_q, n_ctx + (0 if decode else n_q), qk, vd, dtype, state.device.torch, 7)
        out = run_backend(state, backend, q, k, v, 0 if decode else n_ctx, causal)
        return roofline.rel_error(out, reference_attention(q, k, v, n_ctx, causal))

    err = state.run_resource(key, run_check)
    tol = roofline.tolerance(dtype)
    state.set_metric("check_rel_error", err)
    state.verify(err < tol, f"{backend}: relative error {err:.2e} against float64 exceeds {tol:g}")


def run_backend(state, backend, q, k, v, n_ctx, causal):
    if backend == "flashinfer":
        fn, _ = flashinfer_decode(state, q, k, v)
    else:
        fn, _ = sdpa(backend, q, k, v, n_ctx, causal)
    return fn()


def _supports(backend: str, device) -> str | None:
    if backend == "flashinfer":
        if not device.is_cuda:
            return "FlashInfer needs a CUDA device"
        try:
            import flashinfer  # noqa: F401
        except ImportError:
            return "flashinfer not installed"
    if backend in ("cudnn", "efficient") and not device.is_cuda:
        return f"SDPA {backend} backend needs a CUDA device"
    return None


def _prologue(state, decode: bool):
    """Skip what cannot run here; the model's attention geometry, dtype and element size for this point."""
    backend = state.params["backend"]
    if backend == "flashinfer" and not decode:
        state.skip("flashinfer is measured for paged decode only (attn_decode)")
    reason = _supports(backend, state.device)
    if reason:
        state.skip(reason)
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = dtype_of(state)
    return backend, shape, dtype, shape.attn_dims(decode), torch.finfo(dtype).bits // 8


def attn_prefill_point(state):
    n_new, n_ctx = int(state.params["n_new"]), int(state.params["n_ctx"])
    backend, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=False)
    n_k = n_ctx + n_new
    nbytes = (n_new * hq * (qk + vd) + n_k * hkv * (qk + vd)) * elt
    extra = sdpa_extra_bytes(backend, 1, hq, hkv, n_new, n_k, qk, vd, elt, lower_right=n_ctx > 0)
    state.require_bytes(nbytes * 2 + extra, "Q, K, V, O and the backend's mask/expanded K/V")
    check_numerics(state, backend, shape, False, dtype, causal=True)
    q, k, v = make_qkv(1, hq, hkv, n_new, n_k, qk, vd, dtype, state.device.torch, 1)
    fn, facts = sdpa(backend, q, k, v, n_ctx, causal=True)
    fn()
    flops = 2.0 * hq * (qk + vd) * causal_pairs(n_new, n_ctx)
    state.add_flops(flops)
    state.add_items("tokens", n_new)
    state.note(**facts, dtype=str(dtype).replace("torch.", ""), q_heads=hq, kv_heads=hkv, qk_dim=qk, v_dim=vd)
    state.exec(fn, work="device", flush_l2=True)
    roofline.report(state, flops, nbytes, dtype)


def attn_decode_point(state):
    batch, ctx = int(state.params["batch"]), int(state.params["ctx"])
    backend, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=True)
    kv_bytes = batch * ctx * hkv * (qk + vd) * elt
    if backend == "flashinfer":  # the paged copy of the KV (whole pages) and FlashInfer's workspace
        page = int(state.cfg.attention.page_tokens)
        extra = batch * -(-ctx // page) * page * hkv * (qk + vd) * elt + FLASHINFER_WORKSPACE
    else:
        extra = sdpa_extra_bytes(backend, batch, hq, hkv, 1, ctx, qk, vd, elt, lower_right=False)
    state.require_bytes(kv_bytes + 2 * batch * hq * (qk + vd) * elt + extra,
                        "KV cache, queries, outputs and the backend's copies")
    check_numerics(state, backend, shape, True, dtype, causal=False)
    q, k, v = make_qkv(batch, hq, hkv, 1, ctx, qk, vd, dtype, state.device.torch, 2)
    if backend == "flashinfer":
        fn, facts = flashinfer_decode(state, q, k, v)
    else:
        fn, facts = sdpa(backend, q, k, v, 0, causal=False)
    fn()
    flops = 2.0 * hq * (qk + vd) * batch * ctx
    state.add_flops(flops)
    read = kv_bytes * getattr(fn, "kv_expansion", 1)  # what the kernel reads (K/V expanded for some backends)
    state.add_bytes(read)  # gbps = KV GB/s read
    state.set_metric("model_kv_bytes", kv_bytes)
    state.add_items("tokens", batch)
    state.note(**facts, dtype=str(dtype).replace("torch.", ""), q_heads=hq, kv_heads=hkv, qk_dim=qk, v_dim=vd)
    state.set_peak("gbps", state.gpu.get("hbm_peak_gbps"))
    state.exec(fn, work="device", flush_l2=True)
    roofline.report(state, flops, read, dtype)


FLASHINFER_WORKSPACE = 128 << 20


def flashinfer_decode(state, q, k, v):
    """FlashInfer BatchDecodeWithPagedKVCacheWrapper over the same K/V laid out in pages (NHD), written page by
    page into the paged cache (no full-size temporaries)."""
    import flashinfer

    b, hq, _, d = q.shape
    hkv, ctx = k.shape[1], k.shape[2]
    if v.shape[-1] != d:
        state.skip("flashinfer paged decode needs equal qk and v head dims (MLA absorbed decode has 576/512)")
    page = int(state.cfg.attention.page_tokens)
    pages_per_seq = -(-ctx // page)
    full, rem = divmod(ctx, page)
    dev = q.device
    kv = torch.zeros(b * pages_per_seq, 2, page, hkv, d, dtype=q.dtype, device=dev)
    pages = kv.view(b, pages_per_seq, 2, page, hkv, d)
    for c, src in ((0, k.transpose(1, 2)), (1, v.transpose(1, 2))):  # [b, ctx, hkv, d] views
        if full:
            pages[:, :full, c].copy_(src[:, :full * page].unflatten(1, (full, page)))
        if rem:
            pages[:, full, c, :rem].copy_(src[:, full * page:])
    indptr = torch.arange(0, b + 1, dtype=torch.int32, device=dev) * pages_per_seq
    indices = torch.arange(b * pages_per_seq, dtype=torch.int32, device=dev)
    last = torch.full((b,), ctx - (pages_per_seq - 1) * page, dtype=torch.int32, device=dev)
    ws = torch.empty(FLASHINFER_WORKSPACE, dtype=torch.uint8, device=dev)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD")
    wrapper.plan(indptr, indices, last, hq, hkv, d, page, q_data_type=q.dtype)
    q2 = q[:, :, 0].contiguous()

    def fn():
        return wrapper.run(q2, kv).unsqueeze(2)

    fn.keepalive = (kv, ws)
    return fn, {"backend": "flashinfer", "gqa": "native", "page_tokens": page,
                "flashinfer": getattr(flashinfer, "__version__", None)}


@benchmark("attn_prefill", family="attention",
           axes=lambda c: {"backend": list(c.attention.backends), "n_new": list(c.attention.prefill_new),
                           "n_ctx": list(c.attention.prefill_ctx)})
def attn_prefill(state):
    """Causal prefill attention of n_new tokens after n_ctx cached ones (batch 1, model's heads); ms via
    median_s, TFLOP/s, fraction of the run's GEMM ceiling. Times the SDPA call only (L2 flushed before each)."""
    attn_prefill_point(state)


@benchmark("attn_decode", family="attention",
           axes=lambda c: {"backend": list(c.attention.backends), "batch": list(c.attention.decode_batch),
                           "ctx": list(c.attention.decode_ctx)})
def attn_decode(state):
    """Decode attention: one query per sequence over ctx cached tokens, batch sequences (GQA; MLA absorbed);
    KV GB/s read and its fraction of the run's copy ceiling. Times the kernel only (L2 flushed before each)."""
    attn_decode_point(state)


@validator("attention")
def _attention(cfg) -> None:
    a = cfg.attention
    for v in a.backends:
        check(v in BACKENDS, "attention.backends", v, f"each one of {', '.join(BACKENDS)}")
    for key in ("prefill_new", "decode_batch", "decode_ctx"):
        positive_ints(f"attention.{key}", a[key])
    for v in a.prefill_ctx:
        check(isinstance(v, int) and v >= 0, "attention.prefill_ctx", v, "integers >= 0")
    positive_ints("attention.check_tokens", [a.check_tokens])
    positive_ints("attention.page_tokens", [a.page_tokens])
