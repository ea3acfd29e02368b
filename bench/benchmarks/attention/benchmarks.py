"""Attention kernels at real model shapes: causal prefill (optionally after cached context, the prefix-reuse case)
and decode (batch x context, GQA / MLA-absorbed), per backend.

Backends: ``auto`` (SDPA unforced: what a serving stack built on torch gets; the kernel torch dispatched is in
``info.dispatched``), SDPA forced to one kernel (flash, cudnn, efficient, math: diagnostics; the forced one is the
one that ran, or the point is skipped with the reason), FlashInfer paged decode when installed, and ``best``: per
shape, every kernel of ``attention.best_of`` that runs here and passes the numerics check, timed (the same timings
as their own rows, measured once per run), and the fastest one's row (``info.best_backend``, every candidate's time
in ``info.candidates_s``). Bookkeeping (bench.llm.attention): after cached context only the causal pairs are
computed (native lower-right kernels, or cuDNN's log-sum-exp split); TFLOP/s counts QK^T and PV over the causal
pairs; decode GB/s counts the model's KV bytes once (MLA: the 576-wide latent), never K/V a backend expanded.
Each backend is checked once against a float64 reference on small shapes before it is timed.
"""
from __future__ import annotations

import torch

from bench.harness import roofline
from bench.core.checks import check, positive_ints
from bench.core.errors import Skip
from bench.llm import attention as A
from bench.benchmarks.attention import cost as C
from bench.core.registry import benchmark
from bench.harness import need
from bench.llm.shapes import ModelShape, causal_pairs
from bench.core.checks import validator
from bench.core.config import check_dtypes

SDPA_BACKENDS = ("flash", "cudnn", "efficient", "math")
BACKENDS = ("auto", "best") + SDPA_BACKENDS + ("flashinfer",)
BEST_OF = ("auto",) + SDPA_BACKENDS + ("flashinfer",)  # what `best` may choose from (attention.best_of)
reference_attention = A.reference


def dtype_of(state) -> torch.dtype:
    return roofline.compute_dtype(state, "attention")


def sdpa_facts(state, dims, dtype) -> dict:
    """{"native_gqa": kernels that take these GQA heads without anyone expanding K/V (math never: SDPA repeats
    them inside it), "auto": the kernel SDPA dispatches unforced}. On a GPU torch is asked with tiny tensors of the point's head geometry (once per run); while
    planning, the target says what it measured (conf/targets: sdpa_native_gqa, sdpa_auto); on the CPU every
    kernel takes GQA natively and auto is the CPU flash kernel."""
    if not state.device.is_cuda:  # torch's CPU flash kernel takes GQA; math repeats K/V inside SDPA
        return {"native_gqa": frozenset({"flash", "auto"}), "auto": "flash"}
    if state.planning:
        gpu = state.gpu or {}
        return {"native_gqa": frozenset(gpu.get("sdpa_native_gqa") or ("flash",)),
                "auto": gpu.get("sdpa_auto") or "flash"}
    hq, hkv, qk, vd = dims

    def probe():
        q, k, v = make_qkv(1, hq, hkv, 1, 8, qk, vd, dtype, state.device.torch, 0)
        native = {kern for kern in A.KERNELS if A.native_gqa(kern, q, k, v)} - {"math"}  # math repeats K/V inside
        return {"native_gqa": frozenset(native), "auto": A.dispatched(q, k, v, "auto", enable_gqa=hq != hkv)}

    return state.run_resource(("sdpa_facts", dims, str(dtype)), probe)


def make_qkv(b: int, hq: int, hkv: int, n_q: int, n_k: int, qk: int, vd: int, dtype, dev, seed: int,
             shared_v: bool = False):
    """Random Q, K, V generated directly in ``dtype`` (no float32 intermediate: the peak is what the point's needs
    count). ``shared_v``: V is the first ``vd`` dims of K (MLA absorbed decode reads one latent cache)."""
    g = torch.Generator(device=dev).manual_seed(seed)
    r = lambda *s: torch.randn(*s, device=dev, dtype=dtype, generator=g)  # noqa: E731
    q, k = r(b, hq, n_q, qk), r(b, hkv, n_k, qk)
    return q, k, (k[..., :vd] if shared_v else r(b, hkv, n_k, vd))


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


def build(state, backend: str, q, k, v, n_ctx: int, decode: bool):
    """(fn, facts) of ``backend`` on these inputs (everything prepared here, outside the timed call)."""
    if backend == "flashinfer":
        return flashinfer_decode(state, q, k, v)
    if decode:
        return A.decode(backend, q, k, v)
    return A.prefill(backend, q, k, v, n_ctx)


def numerics_error(state, backend: str, shape: ModelShape, decode: bool, dtype) -> float:
    """Once per (backend, model, mode, dtype) and run: small shapes against the float64 reference."""
    key = ("attn_check", backend, shape.name, decode, str(dtype))

    def run_check():
        hq, hkv, qk, vd = shape.attn_dims(decode)
        n = int(state.cfg.attention.check_tokens)
        b, n_q, n_ctx = (2, 1, n) if decode else (1, n, n // 2)
        q, k, v = make_qkv(b, hq, hkv, n_q, n_ctx + (0 if decode else n_q), qk, vd, dtype, state.device.torch, 7,
                           shared_v=decode and shape.is_mla)
        fn, _ = build(state, backend, q, k, v, 0 if decode else n_ctx, decode)
        return roofline.rel_error(fn(), reference_attention(q, k, v, 0 if decode else n_ctx, not decode))

    return state.run_resource(key, run_check)


def check_numerics(state, backend: str, shape: ModelShape, decode: bool, dtype) -> None:
    err = numerics_error(state, backend, shape, decode, dtype)
    tol = roofline.tolerance(dtype)
    state.set_metric("check_rel_error", err)
    state.verify(err < tol, f"{backend}: relative error {err:.2e} against float64 exceeds {tol:g}")


def _prologue(state, decode: bool):
    """Skip what cannot run here; the point's backend and the backends it times (``best``: those it chooses
    among), the model's attention geometry, dtype and element size."""
    backend = state.params["backend"]
    if backend == "flashinfer" and not decode:
        state.skip("flashinfer is measured for paged decode only (attn_decode)")
    reason = _supports(backend, state.device)
    if reason:
        state.skip(reason)
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = dtype_of(state)
    backends = best_of(state, decode) if backend == "best" else [backend]
    return backend, backends, shape, dtype, shape.attn_dims(decode), torch.finfo(dtype).bits // 8


def _prefill_bytes(n_new: int, n_k: int, hq: int, hkv: int, qk: int, vd: int, elt: int) -> int:
    """The prefill's Q and O (the new tokens, every query head) and K and V (the whole context, the KV heads)."""
    return (n_new * hq * (qk + vd) + n_k * hkv * (qk + vd)) * elt


def best_of(state, decode: bool) -> list[str]:
    """The backends ``best`` chooses among on this device (attention.best_of, in order)."""
    out = []
    for b in state.cfg.attention.best_of:
        if b == "flashinfer" and not decode:
            continue
        if _supports(b, state.device) is None:
            out.append(str(b))
    return out


def timing_key(kind: str, backend: str, shape: ModelShape, dtype, *dims) -> tuple:
    """One timing per (kind, backend, shape, dims, dtype) and run: a backend's own row and ``best`` share it."""
    return ("attn", kind, backend, shape.name, str(dtype)) + tuple(int(d) for d in dims)


def time_backends(state, backends: list[str], shape, dtype, make, n_ctx: int, decode: bool, key_dims) -> dict:
    """Check and time each backend on the inputs ``make()`` gives ({backend: (Stats, facts, rel error)} for those
    that ran, {backend: reason} for those that could not). The fastest is the point's own timing when several
    ran; each timing is shared with that backend's own row (measured once per run)."""
    tol = roofline.tolerance(dtype)
    ran, why = {}, {}
    q, k, v = make()
    kind = "decode" if decode else "prefill"
    for b in backends:
        try:
            err = numerics_error(state, b, shape, decode, dtype)
            if not err < tol:
                why[b] = f"relative error {err:.2e} against float64 exceeds {tol:g}"
                continue
            fn, facts = build(state, b, q, k, v, n_ctx, decode)
            fn()
            st = state.time_shared(timing_key(kind, b, shape, dtype, *key_dims), fn, work="device", flush_l2=True)
            ran[b] = (st, facts, err)
        except Skip as e:
            why[b] = str(e)
        except Exception as e:  # a backend that cannot run these inputs is a candidate that did not run
            why[b] = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:160]}"
    return {"ran": ran, "why": why}


def _one_or_best(state, backend, backends, shape, dtype, make, n_ctx, decode, key_dims) -> dict:
    """Time ``backend`` (or, for best, every backend of ``backends``) and make the fastest the point's timing;
    returns the facts of the one used."""
    res = time_backends(state, backends, shape, dtype, make, n_ctx, decode, key_dims)
    if not res["ran"]:
        first = next(iter(res["why"].values()), "no backend to choose from")
        if backend != "best":
            raise Skip(first)
        state.skip("no backend of attention.best_of ran here: " + "; ".join(f"{b}: {w}" for b, w in res["why"].items()))
    chosen = min(res["ran"], key=lambda b: res["ran"][b][0].median_s)
    st, facts, err = res["ran"][chosen]
    state.adopt(st)
    state.set_metric("check_rel_error", err)
    state.verify(True)
    if backend == "best":
        state.note(best_backend=chosen, candidates_s={b: r[0].median_s for b, r in res["ran"].items()},
                   candidates_skipped=res["why"] or None)
    return facts


def _extra(state, backend, facts, decode, b, hq, hkv, n_q, n_k, qk, vd, elt) -> int:
    kern = facts["auto"] if backend == "auto" else backend
    if backend == "flashinfer":  # the paged copy of the KV (whole pages) and FlashInfer's workspace
        page = int(state.cfg.attention.page_tokens)
        return b * -(-n_k // page) * page * hkv * (qk + vd) * elt + FLASHINFER_WORKSPACE
    native = facts["native_gqa"] if backend != "auto" else facts["native_gqa"] | {"auto"}
    if decode:
        return A.decode_extra_bytes(kern, b, hq, hkv, n_k, qk, vd, elt, native)
    return A.prefill_extra_bytes(kern, b, hq, hkv, n_q, n_k, qk, vd, elt, native, not state.device.is_cuda)


def prefill_need(state):
    """Q, K, V, O of the prefill and the most any of its backends allocates beside them."""
    n_new, n_ctx = int(state.params["n_new"]), int(state.params["n_ctx"])
    backend, backends, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=False)
    n_k = n_ctx + n_new
    nbytes = _prefill_bytes(n_new, n_k, hq, hkv, qk, vd, elt)
    facts = sdpa_facts(state, (hq, hkv, qk, vd), dtype)
    extra = max([_extra(state, b, facts, False, 1, hq, hkv, n_new, n_k, qk, vd, elt) for b in backends] or [0])
    return need(nbytes * 2 + extra, "Q, K, V, O and the backend's mask/expanded K/V/partials")


def attn_prefill_point(state):
    n_new, n_ctx = int(state.params["n_new"]), int(state.params["n_ctx"])
    backend, backends, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=False)
    n_k = n_ctx + n_new
    nbytes = _prefill_bytes(n_new, n_k, hq, hkv, qk, vd, elt)
    make = lambda: make_qkv(1, hq, hkv, n_new, n_k, qk, vd, dtype, state.device.torch, 1)  # noqa: E731
    used = _one_or_best(state, backend, backends, shape, dtype, make, n_ctx, False, (n_new, n_ctx))
    flops = 2.0 * hq * (qk + vd) * causal_pairs(n_new, n_ctx)  # the causal pairs, whatever the kernel computed
    state.add_flops(flops)
    state.add_items("tokens", n_new)
    state.note(**used, dtype=str(dtype).replace("torch.", ""), q_heads=hq, kv_heads=hkv, qk_dim=qk, v_dim=vd)
    roofline.report(state, flops, nbytes, dtype)


def _kv_bytes(state, shape, batch: int, ctx: int, elt: int) -> int:
    """The model's KV cache as it is stored (GQA: K and V; MLA: one latent of kv_lora_rank + rope), read once."""
    return batch * ctx * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes


def decode_need(state):
    """The KV cache, queries and outputs of the decode step and the most any of its backends allocates beside them."""
    batch, ctx = int(state.params["batch"]), int(state.params["ctx"])
    backend, backends, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=True)
    facts = sdpa_facts(state, (hq, hkv, qk, vd), dtype)
    extra = max([_extra(state, b, facts, True, batch, hq, hkv, 1, ctx, qk, vd, elt) for b in backends] or [0])
    return need(_kv_bytes(state, shape, batch, ctx, elt) + 2 * batch * hq * (qk + vd) * elt + extra,
                "KV cache, queries, outputs and the backend's copies")


def attn_decode_point(state):
    batch, ctx = int(state.params["batch"]), int(state.params["ctx"])
    backend, backends, shape, dtype, (hq, hkv, qk, vd), elt = _prologue(state, decode=True)
    kv_bytes = _kv_bytes(state, shape, batch, ctx, elt)
    make = lambda: make_qkv(batch, hq, hkv, 1, ctx, qk, vd, dtype, state.device.torch, 2,  # noqa: E731
                            shared_v=shape.is_mla)
    used = _one_or_best(state, backend, backends, shape, dtype, make, 0, True, (batch, ctx))
    flops = 2.0 * hq * (qk + vd) * batch * ctx
    state.add_flops(flops)
    state.add_bytes(kv_bytes)  # gbps = the model's KV bytes read per second
    state.set_metric("model_kv_bytes", kv_bytes)
    if str(used.get("gqa", "")).startswith("expanded"):
        state.set_metric("kernel_kv_bytes", kv_bytes * hq // hkv)  # what the expanded kernel really read
    state.add_items("tokens", batch)
    state.note(**used, dtype=str(dtype).replace("torch.", ""), q_heads=hq, kv_heads=hkv, qk_dim=qk, v_dim=vd)
    state.set_peak("gbps", state.gpu.get("hbm_peak_gbps"))
    roofline.report(state, flops, kv_bytes, dtype)


FLASHINFER_WORKSPACE = 128 << 20


def flashinfer_decode(state, q, k, v):
    """FlashInfer BatchDecodeWithPagedKVCacheWrapper over the same K/V laid out in pages (NHD), written page by
    page into the paged cache (no full-size temporaries)."""
    import flashinfer

    b, hq, _, d = q.shape
    hkv, ctx = k.shape[1], k.shape[2]
    if v.shape[-1] != d:
        raise Skip("flashinfer paged decode needs equal qk and v head dims (MLA absorbed decode has 576/512)")
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
    return fn, {"kernel": "flashinfer", "dispatched": "flashinfer", "gqa": "native", "page_tokens": page,
                "flashinfer": getattr(flashinfer, "__version__", None)}


@benchmark("attn_prefill", family="attention", cost=C.attn_prefill,
           axes=lambda c: {"backend": list(c.attention.backends), "n_new": list(c.attention.prefill_new),
                           "n_ctx": list(c.attention.prefill_ctx)}, needs=prefill_need)
def attn_prefill(state):
    """Causal prefill attention of n_new tokens after n_ctx cached ones (batch 1, model's heads); ms via
    median_s, TFLOP/s over the causal pairs, fraction of the run's GEMM ceiling; backend auto (unforced, the
    dispatched kernel recorded), forced kernels, or best (the fastest that ran). Times the attention call only
    (L2 flushed before each)."""
    attn_prefill_point(state)


@benchmark("attn_decode", family="attention", cost=C.attn_decode,
           axes=lambda c: {"backend": list(c.attention.backends), "batch": list(c.attention.decode_batch),
                           "ctx": list(c.attention.decode_ctx)}, needs=decode_need)
def attn_decode(state):
    """Decode attention: one query per sequence over ctx cached tokens, batch sequences (GQA; MLA absorbed over
    its latent cache); GB/s of the model's KV bytes read and its fraction of the run's copy ceiling; backend auto,
    forced kernels, FlashInfer, or best. Times the kernel only (L2 flushed before each)."""
    attn_decode_point(state)


@validator("attention")
def _attention(cfg) -> None:
    check_dtypes(cfg, "attention.cpu_dtype")
    a = cfg.attention
    for v in a.backends:
        check(v in BACKENDS, "attention.backends", v, f"each one of {', '.join(BACKENDS)}")
    for v in a.best_of:
        check(v in BEST_OF, "attention.best_of", v, f"each one of {', '.join(BEST_OF)}")
    for key in ("prefill_new", "decode_batch", "decode_ctx"):
        positive_ints(f"attention.{key}", a[key])
    for v in a.prefill_ctx:
        check(isinstance(v, int) and v >= 0, "attention.prefill_ctx", v, "integers >= 0")
    positive_ints("attention.check_tokens", [a.check_tokens])
    positive_ints("attention.page_tokens", [a.page_tokens])
