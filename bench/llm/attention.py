"""Attention as a serving stack runs it: causal prefill of new tokens after cached ones (lower-right aligned, only
the causal pairs computed) and decode over a KV cache, per kernel, with the kernel torch actually dispatches named.

Kernels (``KERNELS``):
  auto       F.scaled_dot_product_attention unforced: what a serving stack built on torch gets. After cached context
             the lower-right causal mask goes through torch's own CausalBias dispatch (FlashAttention-2, then the
             memory-efficient kernel, else a materialized mask).
  flash      SDPA forced to FlashAttention (FA2 in torch; FA3/FA4 where torch has them activated); lower-right
             natively.
  efficient  SDPA forced to the memory-efficient kernel; lower-right natively (its custom mask type).
  cudnn      SDPA forced to cuDNN. cuDNN has no lower-right kernel in torch, so after cached context the prefill is
             split the way cascade kernels do it: the new queries over the cached keys (no mask: every pair is
             needed) and over their own keys (causal square), merged by their log-sum-exps: exactly the causal pairs,
             never the full rectangle a materialized mask would compute.
  math       SDPA forced to the math backend (a diagnostic; after cached context a materialized mask, full rectangle).
On the CPU torch's CPU flash kernel (``flash``) gives the log-sum-exp too, so the same split runs there (``auto`` on the
CPU is torch's dispatch: a materialized mask).

Every builder returns ``(fn, facts)``: ``fn()`` runs the attention (build it outside timed regions: masks, splits and
expansions are prepared here) and ``facts`` says what ran (``kernel`` asked, ``dispatched`` kernel, how causality was
applied, whether the pairs computed are exactly the causal ones, how GQA ran). Units: tensors [B, H, T, D].
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

KERNELS = ("auto", "flash", "cudnn", "efficient", "math")
SDPA_NAMES = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION",
              "math": "MATH"}


def sdpa_backend(kernel: str):
    from torch.nn.attention import SDPBackend

    return getattr(SDPBackend, SDPA_NAMES[kernel])


def _forced(kernel: str):
    """The context that forces ``kernel`` (nothing for auto)."""
    from contextlib import nullcontext

    from torch.nn.attention import sdpa_kernel

    return nullcontext() if kernel == "auto" else sdpa_kernel([sdpa_backend(kernel)])


def backend_of(choice) -> str:
    """The kernel name of an SDPBackend value (as torch._fused_sdp_choice returns it)."""
    from torch.nn.attention import SDPBackend

    for name, member in SDPA_NAMES.items():
        if hasattr(SDPBackend, member) and int(getattr(SDPBackend, member)) == int(choice):
            return name
    return f"backend {int(choice)}"


def dispatched(q, k, v, kernel: str = "auto", **kw) -> str:
    """The kernel SDPA runs for these inputs: the forced one, or what torch's dispatcher picks unforced
    (``torch._fused_sdp_choice``: a private call, so a failure is named, never guessed)."""
    if kernel != "auto":
        return kernel
    try:
        return backend_of(torch._fused_sdp_choice(q, k, v, **kw))
    except Exception as e:  # private API: it may move between releases
        return f"unknown ({type(e).__name__})"


def native_gqa(kernel: str, q, k, v) -> bool:
    """Whether ``kernel`` takes fewer K/V heads than query heads without expanding them (enable_gqa). Flash and
    math take GQA on every torch this suite supports; efficient/cudnn: torch's own dispatch checks are asked; auto:
    whatever it dispatches."""
    if q.shape[1] == k.shape[1] or q.device.type != "cuda":
        return True
    if kernel == "auto":
        kernel = dispatched(q, k, v, "auto", is_causal=False, enable_gqa=True)
    if kernel in ("flash", "math"):
        return True
    from torch.backends import cuda as bc

    check = {"efficient": bc.can_use_efficient_attention,
             "cudnn": getattr(bc, "can_use_cudnn_attention", None)}.get(kernel)
    with _forced(kernel):
        return bool(check and check(bc.SDPAParams(q, k, v, None, 0.0, False, True)))


def expand_gqa(k, v, q_heads: int):
    rep = q_heads // k.shape[1]
    return k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)


# -- the log-sum-exp split used after cached context where a kernel has no lower-right mask ----------------------
def lse_attention(kernel: str, device_type: str) -> Optional[Callable]:
    """``attend(q, k, v, causal, scale) -> (out, lse [B, H, T_q] float32)`` for a kernel whose torch op returns the
    log-sum-exp (cuDNN on a GPU; torch's CPU flash kernel on the CPU), or None."""
    if device_type == "cpu" and kernel == "flash":
        op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu

        def attend(q, k, v, causal, scale):
            out, lse = op(q, k, v, 0.0, causal, scale=scale)
            return out, lse
        return attend
    if device_type == "cuda" and kernel == "cudnn":
        op = torch.ops.aten._scaled_dot_product_cudnn_attention

        def attend(q, k, v, causal, scale):
            res = op(q, k, v, None, True, 0.0, causal, False, scale=scale)
            return res[0], res[1].reshape(q.shape[0], q.shape[1], q.shape[2])
        return attend
    return None


def merge(parts) -> torch.Tensor:
    """Attention over the union of disjoint key sets from each set's (output, log-sum-exp): the softmax-weighted
    combination (FlashInfer's merge_state)."""
    lse = parts[0][1]
    for _, l in parts[1:]:
        lse = torch.logaddexp(lse, l)
    out = None
    for o, l in parts:
        w = torch.exp(l - lse).unsqueeze(-1)
        out = o.float() * w if out is None else out + o.float() * w
    return out.to(parts[0][0].dtype)


def split_prefill(attend: Callable, q, k, v, n_ctx: int, scale: Optional[float]):
    """Causal prefill of q's tokens after ``n_ctx`` cached keys: the cached keys unmasked, the new ones causal."""
    kc, vc, kn, vn = k[:, :, :n_ctx], v[:, :, :n_ctx], k[:, :, n_ctx:], v[:, :, n_ctx:]

    def fn():
        return merge([attend(q, kc, vc, False, scale), attend(q, kn, vn, True, scale)])
    return fn


def split_extra_bytes(b: int, hq: int, n_q: int, vd: int, elt: int) -> int:
    """Bytes the split allocates beyond Q, K, V and O: two partial outputs, their log-sum-exps, the float32 merge."""
    return b * hq * n_q * (2 * vd * elt + 3 * 4 + 2 * vd * 4)


# -- prefill ----------------------------------------------------------------------------------------------------
def prefill_op(kernel: str, q, k, v, n_ctx: int, scale: Optional[float] = None, masks: Optional[dict] = None):
    """Causal attention of q's ``n_q`` tokens after ``n_ctx`` cached ones (k/v hold n_ctx + n_q positions),
    lower-right aligned, decided once for tensors shaped like these: returns (op(q, k, v) -> output, facts).
    A kernel without native GQA here gets K/V expanded inside op (use :func:`prefill` to expand once, outside a
    timed call). Raises ValueError when ``kernel`` cannot run these inputs."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r} not in {KERNELS}")
    gqa = q.shape[1] != k.shape[1]
    facts = {"kernel": kernel, "gqa": "native" if gqa else "none", "pairs": "causal"}
    vd, qk, hq = v.shape[-1], q.shape[-1], q.shape[1]
    pad = qk - vd if (kernel == "flash" and vd < qk) else 0  # FlashAttention-2 takes one head dim: pad V
    if pad:
        facts["v_padded_to"] = qk
    expand = gqa and not native_gqa(kernel, q, k, v)
    if expand:
        facts["gqa"] = "expanded: no native GQA here"

    def prep(k, v):
        if expand:
            k, v = expand_gqa(k, v, hq)
        return k, (F.pad(v, (0, pad)) if pad else v)

    use_gqa = gqa and not expand
    if not n_ctx:
        facts["causal"] = "is_causal (square)"
        facts["dispatched"] = dispatched(q, k, v, kernel, is_causal=True, enable_gqa=gqa)

        def op(q, k, v):
            k, v = prep(k, v)
            with _forced(kernel):
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                      enable_gqa=use_gqa)[..., :vd]
        return op, facts
    lse = lse_attention(kernel, q.device.type)
    if lse is not None:
        facts.update(causal="split: cached keys unmasked + new keys causal, merged by log-sum-exp",
                     dispatched=("flash (cpu)" if q.device.type == "cpu" else kernel))

        def op(q, k, v):
            k, v = prep(k, v)
            return split_prefill(lse, q, k, v, n_ctx, scale)()[..., :vd]
        return op, facts
    mask, how, native = lower_right(kernel, q, k, v, use_gqa, masks)
    facts["causal"] = how
    if not native:
        facts["pairs"] = "full rectangle (materialized mask): more work than the causal pairs counted"
    facts["dispatched"] = native if isinstance(native, str) else \
        dispatched(q, k, v, kernel, attn_mask=mask if isinstance(mask, torch.Tensor) else None, enable_gqa=gqa)

    def op(q, k, v):
        k, v = prep(k, v)
        with _forced(kernel):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=use_gqa)[..., :vd]
    return op, facts


def prefill(kernel: str, q, k, v, n_ctx: int, scale: Optional[float] = None, masks: Optional[dict] = None):
    """:func:`prefill_op` bound to these tensors, with any K/V expansion or V padding done once, here (outside the
    timed call): returns (fn, facts)."""
    op, facts = prefill_op(kernel, q, k, v, n_ctx, scale, masks)
    if facts["gqa"].startswith("expanded"):
        k, v = expand_gqa(k, v, q.shape[1])
        op, facts2 = prefill_op(kernel, q, k, v, n_ctx, scale, masks)
        facts = {**facts2, "gqa": facts["gqa"]}
    if facts.get("v_padded_to"):
        vd = v.shape[-1]
        v = F.pad(v, (0, facts["v_padded_to"] - vd))
        op2, _ = prefill_op(kernel, q, k, v, n_ctx, scale, masks)

        def fn():
            return op2(q, k, v)[..., :vd]
        return fn, facts
    return (lambda: op(q, k, v)), facts


def lower_right(kernel: str, q, k, v, gqa: bool, masks: Optional[dict] = None):
    """(mask, how, native) for the lower-right causal mask after cached context: torch's CausalBias where the kernel
    has a native lower-right kernel for these inputs (native = the kernel's name), else a materialized additive
    mask in the query dtype built once (cached in ``masks`` by shape), native = False."""
    from torch.nn.attention.bias import causal_lower_right

    n_q, n_k = q.shape[-2], k.shape[-2]
    if q.device.type == "cuda" and kernel in ("auto", "flash", "efficient"):
        from torch.backends.cuda import SDPAParams, can_use_efficient_attention, can_use_flash_attention

        params = SDPAParams(q, k, v, None, 0.0, False, gqa)
        with _forced(kernel):
            flash_ok = kernel in ("auto", "flash") and can_use_flash_attention(params)
            eff_ok = kernel in ("auto", "efficient") and not flash_ok and can_use_efficient_attention(params)
        if flash_ok or eff_ok:
            return causal_lower_right(n_q, n_k), "native lower-right causal kernel (CausalBias)", \
                "flash" if flash_ok else "efficient"
        if kernel != "auto":
            raise ValueError(f"SDPA {kernel} has no lower-right causal kernel for these inputs")
    key = (n_q, n_k, q.dtype, q.device)
    mask = None if masks is None else masks.get(key)
    if mask is None:
        allowed = causal_lower_right(n_q, n_k)._materialize(q.device)
        mask = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
        if masks is not None:
            masks[key] = mask
    return mask, "lower-right causal mask materialized once (additive, query dtype), outside the timed call", False


def prefill_extra_bytes(kernel: str, b: int, hq: int, hkv: int, n_q: int, n_k: int, qk: int, vd: int, elt: int,
                        native_gqa_kernels, cpu: bool) -> int:
    """Bytes a kernel allocates beyond Q, K, V and O for a prefill of ``n_q`` queries over ``n_k`` keys: K/V
    expanded to the query heads where it has no native GQA (``native_gqa_kernels``: the kernels that do, on the
    device), a materialized mask (math, or any kernel on the CPU without the split), the split's partials, and the
    math backend's score matrices."""
    extra = 0
    if hq != hkv and kernel not in native_gqa_kernels:
        extra += b * (hq - hkv) * n_k * (qk + vd) * elt
    n_ctx = n_k - n_q
    if n_ctx:
        if (cpu and kernel == "flash") or (not cpu and kernel == "cudnn"):
            extra += split_extra_bytes(b, hq, n_q, vd, elt)
        elif kernel == "math" or cpu:
            extra += n_q * n_k * (elt + 1)  # the additive mask and its boolean source
    if kernel == "math":
        extra += 2 * b * hq * n_q * n_k * 4
    return extra


# -- decode -----------------------------------------------------------------------------------------------------
def decode_op(kernel: str, q, k, v, scale: Optional[float] = None):
    """One query per sequence over every position of k/v (B sequences of equal length), decided once for tensors
    shaped like these: (op(q, k, v) -> output, facts); K/V expanded inside op where the kernel has no native GQA."""
    if kernel not in KERNELS:
        raise ValueError(f"attention kernel {kernel!r} not in {KERNELS}")
    if kernel == "flash" and v.shape[-1] != q.shape[-1]:
        raise ValueError(f"FlashAttention takes one head dim for q, k and v (here {q.shape[-1]}/{v.shape[-1]}, MLA's "
                         "absorbed decode): padding V would read a second, padded copy of the latent cache")
    gqa = q.shape[1] != k.shape[1]
    facts = {"kernel": kernel, "gqa": "native" if gqa else "none"}
    expand = gqa and not native_gqa(kernel, q, k, v)
    if expand:
        facts["gqa"] = "expanded: no native GQA here"
    facts["dispatched"] = dispatched(q, k, v, kernel, enable_gqa=gqa)
    hq = q.shape[1]

    def op(q, k, v, mask=None):
        if expand:
            k, v = expand_gqa(k, v, hq)
        with _forced(kernel):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa and not expand)
    return op, facts


def decode(kernel: str, q, k, v, scale: Optional[float] = None):
    """:func:`decode_op` bound to these tensors, K/V expanded once here where needed: (fn, facts);
    ``fn.kv_expansion`` is how many times the model's K/V the kernel reads."""
    op, facts = decode_op(kernel, q, k, v, scale)
    rep = 1
    if facts["gqa"].startswith("expanded"):
        rep = q.shape[1] // k.shape[1]
        k, v = expand_gqa(k, v, q.shape[1])
        op, _ = decode_op(kernel, q, k, v, scale)

    def fn():
        return op(q, k, v)
    fn.kv_expansion = rep
    return fn, facts


def decode_extra_bytes(kernel: str, b: int, hq: int, hkv: int, n_k: int, qk: int, vd: int, elt: int,
                       native_gqa_kernels) -> int:
    extra = b * (hq - hkv) * n_k * (qk + vd) * elt if (hq != hkv and kernel not in native_gqa_kernels) else 0
    if kernel == "math":
        extra += 2 * b * hq * n_k * 4
    return extra


def reference(q, k, v, n_ctx: int, causal: bool) -> torch.Tensor:
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


def flash_lengths_op(q, k, v, scale: Optional[float]):
    """FlashAttention-2's varlen forward with ``seqused_k`` for one decode query per sequence over a cache of
    capacity T (q [B, H, 1, D]; k, v [B, Hkv, T, D]): sequence b attends its first ``lengths[b]`` slots, a device
    tensor, so a CUDA graph replays the same kernel for any position. The cache is read in place (token rows of
    one sequence: batch 1, or a token-major cache). Returns (op(q, k, v, lengths) -> [B, H, 1, Dv], facts)."""
    b, h, _, d = q.shape
    t = k.shape[2]
    if b != 1 and not k.transpose(1, 2).is_contiguous():
        raise ValueError("the varlen kernel reads [tokens, heads, dim] rows: a batched head-major cache would be copied")
    cu_q = torch.arange(b + 1, dtype=torch.int32, device=q.device)
    cu_k = cu_q * t
    op = torch.ops.aten._flash_attention_forward

    def run(q, k, v, lengths):
        qv = q.transpose(1, 2).reshape(b, h, d)
        kv = k[0].transpose(0, 1) if b == 1 else k.transpose(1, 2).reshape(b * t, k.shape[1], d)
        vv = v[0].transpose(0, 1) if b == 1 else v.transpose(1, 2).reshape(b * t, v.shape[1], v.shape[-1])
        out = op(qv, kv, vv, cu_q, cu_k, 1, t, 0.0, False, False, scale=scale, seqused_k=lengths)[0]
        return out.view(b, 1, h, -1).transpose(1, 2)
    return run, {"kernel": "flash", "dispatched": "flash (varlen, seqused_k)", "gqa": "native"}


# -- the kernels a transformer layer runs ------------------------------------------------------------------------
class LayerAttention:
    """The attention kernels of a run's layers: one ``prefill_kernel`` for every prefill (no cached context and
    after cached context alike: one kernel family in the prefill costs) and one ``decode_kernel``. Each shape's
    decisions (mask, split, expansion) are made once and reused; ``masks`` is shared by every layer."""

    def __init__(self, prefill_kernel: str = "auto", decode_kernel: str = "auto"):
        for k in (prefill_kernel, decode_kernel):
            if k not in KERNELS:
                raise ValueError(f"attention kernel {k!r} not in {KERNELS}")
        self.prefill_kernel, self.decode_kernel = prefill_kernel, decode_kernel
        self.masks: dict = {}
        self._ops: dict = {}
        self.facts: dict = {}
        self.lengths_refused: Optional[str] = None  # why the device-lengths decode was turned off, or None

    def _op(self, key, build):
        op = self._ops.get(key)
        if op is None:
            op, facts = build()
            self._ops[key] = op
            self.facts[key[0]] = facts
        return op

    def prefill(self, q, k, v, n_ctx: int, scale: float):
        key = ("prefill", tuple(q.shape), tuple(k.shape), tuple(v.shape), n_ctx, scale, q.dtype, q.device)
        return self._op(key, lambda: prefill_op(self.prefill_kernel, q, k, v, n_ctx, scale, self.masks))(q, k, v)

    def decode(self, q, k, v, scale: float, mask=None, lengths=None):
        """Decode attention over k/v: every position valid, or a span of slots where the valid ones are given by
        ``lengths`` (a device tensor, read by the kernel: FlashAttention's seqused_k, see
        :meth:`reads_lengths`) or else by ``mask`` (an additive [span] mask: the kernel reads every slot)."""
        if lengths is not None and self.reads_lengths(q):
            key = ("decode_lengths", tuple(q.shape), tuple(k.shape), scale, q.dtype, q.device)
            op = self._op(key, lambda: flash_lengths_op(q, k, v, scale))
            return op(q, k, v, lengths)
        key = ("decode", tuple(q.shape), tuple(k.shape), tuple(v.shape), scale, q.dtype, q.device, mask is None)
        op = self._op(key, lambda: decode_op(self.masked_kernel if mask is not None else self.decode_kernel,
                                             q, k, v, scale))
        return op(q, k, v, None if mask is None else mask.view(1, -1))

    @property
    def masked_kernel(self) -> str:
        """The kernel of a masked decode span: the decode kernel, or torch's pick where it takes no mask (flash)."""
        return "auto" if self.decode_kernel == "flash" else self.decode_kernel

    def reads_lengths(self, q) -> bool:
        """Whether a decode step at a device-held position reads only the valid slots (the decode kernel is
        FlashAttention on a GPU: its varlen kernel takes per-sequence lengths from device memory, so one CUDA graph
        serves every position with exactly the reads of an eager step); else a masked span is read."""
        return self.decode_kernel == "flash" and q.device.type == "cuda" and not self.lengths_refused


    def as_dict(self) -> dict:
        return {"prefill": self.prefill_kernel, "decode": self.decode_kernel}
