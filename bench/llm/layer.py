"""One transformer layer of a model preset with random weights of the right shapes, for timing.

Prefill: ``n_new`` tokens of one sequence after ``n_ctx`` cached ones (their K/V written into the cache, attention
over all n_ctx + n_new, causal). Decode: ``batch`` sequences, one new token each after ``ctx`` cached ones.
Attention is GQA (Llama, Qwen, Mixtral) or MLA (DeepSeek: decompressed K/V for prefill, absorbed MQA over the
latent cache for decode). The MLP is SwiGLU, or MoE (router top-k, loop over the experts that got tokens,
shared experts dense). Weights are scaled 1/sqrt(fan_in) so activations stay O(1) through stacked layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from bench.llm.attention import LayerAttention
from bench.llm.shapes import ModelShape

EPS = 1e-6


def rms_norm(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)).to(x.dtype) * w


@dataclass
class DecodeAt:
    """Where a decode step's token goes when its position lives on the device (a CUDA graph replays one step for
    every position): ``pos`` [1] int64 = tokens cached before it (its KV is written to that slot); attention runs
    over the first ``span`` slots with ``mask`` (0 up to pos, -inf after; [span] in the query dtype), or, where the
    run's decode kernel reads valid lengths from the device (``lengths``: [1] int32 = pos + 1), over exactly the
    valid slots."""

    pos: torch.Tensor
    span: int
    mask: torch.Tensor
    lengths: Optional[torch.Tensor] = None


def rope(x, pos0):
    """Rotary embedding on the last dim of x [..., n, d] for positions pos0..pos0+n-1 (rotate-half form); ``pos0``
    an int, or a [1] int64 tensor on x's device."""
    n, d = x.shape[-2], x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
    pos = torch.arange(pos0, pos0 + n, device=x.device, dtype=torch.float32) if isinstance(pos0, int) else \
        torch.arange(n, device=x.device, dtype=torch.float32) + pos0.to(torch.float32)
    ang = pos[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def attend(attention: LayerAttention, q, k, v, n_ctx: int, scale: float, at: Optional[DecodeAt] = None):
    """Attention of q's tokens over k/v through the run's kernels (bench.llm.attention.LayerAttention): a prefill of
    several tokens after ``n_ctx`` cached ones (lower-right causal), or one decode token over every position of k/v,
    or, at a device-held position ``at``, over the span's slots with the slots past the position masked."""
    if at is not None:
        return attention.decode(q, k, v, scale, mask=at.mask, lengths=at.lengths)
    if q.shape[-2] > 1:
        return attention.prefill(q, k, v, n_ctx, scale)
    return attention.decode(q, k, v, scale)


class Layer:
    """Weights of one layer (index ``layer_index`` decides dense vs MoE MLP) on ``device`` in ``dtype``."""

    def __init__(self, shape: ModelShape, layer_index: int, dtype, device, seed: int):
        self.s, self.dtype, self.device = shape, dtype, torch.device(device)
        self.moe = bool(shape.experts) and layer_index >= shape.dense_layers
        self.attention = LayerAttention()  # the run's kernels (build_stack sets the chosen ones); auto by default
        g = torch.Generator(device=self.device).manual_seed(seed)
        self._g = g
        h, s = shape.hidden, shape
        self.w = {"norm1": torch.ones(h, dtype=dtype, device=self.device),
                  "norm2": torch.ones(h, dtype=dtype, device=self.device)}
        if s.is_mla:
            nope = s.head_dim - s.rope_head_dim
            self.w.update(
                dq=self._p(h, s.q_lora_rank), q_norm=torch.ones(s.q_lora_rank, dtype=dtype, device=self.device),
                uq=self._p(s.q_lora_rank, s.heads * s.head_dim),
                dkv=self._p(h, s.kv_lora_rank + s.rope_head_dim),
                kv_norm=torch.ones(s.kv_lora_rank, dtype=dtype, device=self.device),
                uk=self._p(s.kv_lora_rank, s.heads * nope, shape=(s.heads, nope, s.kv_lora_rank), fan=s.kv_lora_rank),
                uv=self._p(s.kv_lora_rank, s.heads * s.v_dim, shape=(s.heads, s.kv_lora_rank, s.v_dim),
                           fan=s.kv_lora_rank),
                o=self._p(s.heads * s.v_dim, h))
        else:
            self.w.update(q=self._p(h, s.heads * s.head_dim), k=self._p(h, s.kv_heads * s.head_dim),
                          v=self._p(h, s.kv_heads * s.head_dim), o=self._p(s.heads * s.head_dim, h))
        if self.moe:
            e, f = s.experts, s.moe_ffn
            self.w.update(router=self._p(h, e), w1=self._p(h, f, shape=(e, h, f), fan=h),
                          w3=self._p(h, f, shape=(e, h, f), fan=h), w2=self._p(f, h, shape=(e, f, h), fan=f))
            if s.shared_experts:
                fs = f * s.shared_experts
                self.w.update(s1=self._p(h, fs), s3=self._p(h, fs), s2=self._p(fs, h))
        else:
            self.w.update(w1=self._p(h, s.ffn), w3=self._p(h, s.ffn), w2=self._p(s.ffn, h))
        del self._g

    def _p(self, fan_in: int, fan_out: int, shape=None, fan: Optional[int] = None):
        """Random weights generated in the layer's dtype (no float32 intermediate: the peak is the weight)."""
        t = torch.randn(*(shape or (fan_in, fan_out)), device=self.device, dtype=self.dtype, generator=self._g)
        return t.mul_(1 / math.sqrt(fan or fan_in))

    def to(self, dtype) -> "Layer":
        """A copy with every weight in ``dtype`` (the numerics reference)."""
        other = object.__new__(Layer)
        other.s, other.dtype, other.device, other.moe = self.s, dtype, self.device, self.moe
        other.attention = LayerAttention()
        other.w = {k: v.to(dtype) for k, v in self.w.items()}
        return other

    def weight_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.w.values())

    # -- cache ---------------------------------------------------------------------------------------------------
    def new_cache(self, batch: int, tokens: int, seed: int, token_major: bool = False):
        """Random cached K/V for ``tokens`` positions (+ room is the caller's): GQA (k, v) [B, Hkv, T, d];
        MLA latent [B, T, kv_lora_rank + rope]. ``token_major`` stores GQA K/V as [B, T, Hkv, d] (paged-cache
        order) behind the same [B, Hkv, T, d] view, so the first positions of a sequence are one contiguous
        region (see :func:`cached_region`)."""
        s = self.s
        g = torch.Generator(device=self.device).manual_seed(seed)
        r = lambda *sh: torch.randn(*sh, device=self.device, dtype=self.dtype, generator=g)  # noqa: E731
        if s.is_mla:
            return (r(batch, tokens, s.kv_lora_rank + s.rope_head_dim),)
        if token_major:
            return (r(batch, tokens, s.kv_heads, s.head_dim).transpose(1, 2),
                    r(batch, tokens, s.kv_heads, s.head_dim).transpose(1, 2))
        return r(batch, s.kv_heads, tokens, s.head_dim), r(batch, s.kv_heads, tokens, s.head_dim)

    # -- forward -------------------------------------------------------------------------------------------------
    def forward(self, x, cache, n_ctx: int, decode: bool, forced_topk=None, at: Optional[DecodeAt] = None):
        """x [B, n, hidden]; cache holds n_ctx cached positions plus room for the n new ones, which are written.
        ``at``: a decode step whose position is on the device (then ``n_ctx`` is unused). Returns (output, topk
        ids used by the MoE or None)."""
        h = rms_norm(x, self.w["norm1"])
        a = self._mla(h, cache, n_ctx, decode, at) if self.s.is_mla else self._gqa(h, cache, n_ctx, at)
        x = x + a
        h = rms_norm(x, self.w["norm2"])
        m, ids = self._moe(h, forced_topk) if self.moe else (self._swiglu(h, "w1", "w3", "w2"), None)
        return x + m, ids

    def _gqa(self, h, cache, n_ctx, at: Optional[DecodeAt] = None):
        s, w = self.s, self.w
        b, n, _ = h.shape
        q = (h @ w["q"]).view(b, n, s.heads, s.head_dim).transpose(1, 2)
        k = (h @ w["k"]).view(b, n, s.kv_heads, s.head_dim).transpose(1, 2)
        v = (h @ w["v"]).view(b, n, s.kv_heads, s.head_dim).transpose(1, 2)
        pos = n_ctx if at is None else at.pos
        q, k = rope(q, pos), rope(k, pos)
        kc, vc = cache
        scale = 1 / math.sqrt(s.head_dim)
        if at is None:
            kc[:, :, n_ctx:n_ctx + n] = k
            vc[:, :, n_ctx:n_ctx + n] = v
            o = attend(self.attention, q, kc[:, :, :n_ctx + n], vc[:, :, :n_ctx + n], n_ctx, scale)
        else:
            kc.index_copy_(2, at.pos, k)
            vc.index_copy_(2, at.pos, v)
            o = attend(self.attention, q, kc[:, :, :at.span], vc[:, :, :at.span], 0, scale, at)
        return o.transpose(1, 2).reshape(b, n, -1) @ w["o"]

    def _mla(self, h, cache, n_ctx, decode, at: Optional[DecodeAt] = None):
        s, w = self.s, self.w
        b, n, _ = h.shape
        nope = s.head_dim - s.rope_head_dim
        pos = n_ctx if at is None else at.pos
        q = (rms_norm(h @ w["dq"], w["q_norm"]) @ w["uq"]).view(b, n, s.heads, s.head_dim).transpose(1, 2)
        q_nope, q_rope = q[..., :nope], rope(q[..., nope:], pos)
        ckv = h @ w["dkv"]
        latent = rms_norm(ckv[..., :s.kv_lora_rank], w["kv_norm"])
        k_rope = rope(ckv[..., s.kv_lora_rank:].unsqueeze(1), pos).squeeze(1)
        (lc,) = cache
        if at is None:
            lc[:, n_ctx:n_ctx + n, :s.kv_lora_rank] = latent
            lc[:, n_ctx:n_ctx + n, s.kv_lora_rank:] = k_rope
            ctx = lc[:, :n_ctx + n]
        else:
            lc.index_copy_(1, at.pos, torch.cat([latent, k_rope], dim=-1))
            ctx = lc[:, :at.span]
        scale = 1 / math.sqrt(s.head_dim)
        if decode:  # absorbed: attention over the latent as MQA (576 / 512), W_UK into q, W_UV after
            q_lat = torch.einsum("bhnd,hdl->bhnl", q_nope, w["uk"])
            qf = torch.cat([q_lat, q_rope], dim=-1)
            kv = ctx.unsqueeze(1)
            o_lat = attend(self.attention, qf, kv, kv[..., :s.kv_lora_rank], n_ctx, scale, at)
            o = torch.einsum("bhnl,hlv->bhnv", o_lat, w["uv"])
        else:  # decompressed K/V per head
            lat = ctx[..., :s.kv_lora_rank]
            k_nope = torch.einsum("btl,hdl->bhtd", lat, w["uk"])
            v = torch.einsum("btl,hlv->bhtv", lat, w["uv"])
            k = torch.cat([k_nope, ctx[..., s.kv_lora_rank:].unsqueeze(1).expand(-1, s.heads, -1, -1)], dim=-1)
            o = attend(self.attention, torch.cat([q_nope, q_rope], dim=-1), k, v, n_ctx, scale)
        return o.transpose(1, 2).reshape(b, n, -1) @ w["o"]

    def _swiglu(self, h, a, g, d):
        return (F.silu(h @ self.w[a]) * (h @ self.w[g])) @ self.w[d]

    def _moe(self, h, forced_topk=None):
        s, w = self.s, self.w
        shape = h.shape
        x = h.reshape(-1, shape[-1])
        logits = (x @ w["router"]).float()
        ids = forced_topk if forced_topk is not None else logits.topk(s.experts_active, dim=-1).indices
        gates = torch.softmax(logits.gather(-1, ids), dim=-1).to(x.dtype)
        out = torch.zeros_like(x)
        flat = ids.reshape(-1)
        order = torch.argsort(flat)
        counts = torch.bincount(flat, minlength=s.experts).tolist()
        tok = order // s.experts_active
        start = 0
        for e, c in enumerate(counts):  # the experts that got tokens (as a loop, not a fused grouped GEMM)
            if c:
                sel = order[start:start + c]
                t = tok[start:start + c]
                xe = x[t]
                y = (F.silu(xe @ w["w1"][e]) * (xe @ w["w3"][e])) @ w["w2"][e]
                out.index_add_(0, t, y * gates.reshape(-1)[sel, None])
                start += c
        if s.shared_experts:
            out = out + self._swiglu(x, "s1", "s3", "s2")
        return out.reshape(shape), ids

    def touched_expert_bytes(self, tokens: int) -> int:
        """Expected bytes of expert weights a step reads: every expert that got a token (uniform routing)."""
        if not self.moe:
            return 0
        s = self.s
        per = self.w["w1"][0].numel() * 3 * self.w["w1"].element_size()
        expected = s.experts * (1 - (1 - s.experts_active / s.experts) ** tokens)
        return int(expected * per)


def cached_region(t: torch.Tensor, ctx: int) -> torch.Tensor:
    """The first ``ctx`` positions of sequence 0 of a token-major cache tensor (GQA view [1, Hkv, T, d] over
    [1, T, Hkv, d]; MLA latent [1, T, r]) as one contiguous 1-D view: the bytes a KV load writes."""
    base = t.transpose(1, 2) if t.dim() == 4 else t
    region = base[0, :ctx]
    if not region.is_contiguous():
        raise ValueError("cache is not token-major: its cached positions are not one contiguous region")
    return region.reshape(-1)
