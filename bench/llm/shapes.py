"""Model arithmetic in one place: KV bytes per token, parameters and FLOPs per token for a model preset.

Used by the transfer benchmarks (KV block sizes), the attention/layer benchmarks (FLOP counts) and the throughput
model. Conventions: a multiply-add is 2 FLOPs; SwiGLU MLPs (gate, up, down); bytes are of the preset's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1}


@dataclass(frozen=True)
class ModelShape:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int = 0
    dtype: str = "bfloat16"
    attention: str = "gqa"
    experts: int = 0
    experts_active: int = 0
    shared_experts: int = 0
    moe_ffn: int = 0
    dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    rope_head_dim: int = 0
    v_head_dim: int = 0

    @classmethod
    def from_cfg(cls, m) -> "ModelShape":
        names = {f.name for f in fields(cls)}
        return cls(**{k: m[k] for k in names if k in m})

    # -- KV cache -------------------------------------------------------------------------------------------
    @property
    def elt_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def is_mla(self) -> bool:
        return self.attention == "mla"

    @property
    def kv_components(self) -> int:
        """Separately stored KV tensors per layer: K and V for GQA, one compressed latent for MLA."""
        return 1 if self.is_mla else 2

    @property
    def kv_token_elems_per_component(self) -> int:
        """Elements of one component for one token in one layer."""
        return self.kv_lora_rank + self.rope_head_dim if self.is_mla else self.kv_heads * self.head_dim

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        return self.kv_components * self.kv_token_elems_per_component * self.elt_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies across all layers (llama3_8b bf16: 131072)."""
        return self.layers * self.kv_bytes_per_token_per_layer

    def kv_block_bytes(self, block_tokens: int) -> int:
        return block_tokens * self.kv_bytes_per_token

    # -- parameters -------------------------------------------------------------------------------------------
    @property
    def v_dim(self) -> int:
        return self.v_head_dim or self.head_dim

    def attn_params(self) -> int:
        h, d = self.hidden, self.head_dim
        if self.is_mla:
            q = (h * self.q_lora_rank + self.q_lora_rank * self.heads * d) if self.q_lora_rank else h * self.heads * d
            kv = h * (self.kv_lora_rank + self.rope_head_dim) + \
                self.kv_lora_rank * self.heads * ((d - self.rope_head_dim) + self.v_dim)
            return q + kv + self.heads * self.v_dim * h
        return h * d * (2 * self.heads + 2 * self.kv_heads)

    def mlp_params_active(self, layer: int) -> int:
        """Parameters one token passes through in the MLP of ``layer`` (MoE: routed active + shared + router)."""
        if not self.experts or layer < self.dense_layers:
            return 3 * self.hidden * self.ffn
        per_expert = 3 * self.hidden * self.moe_ffn
        return (self.experts_active + self.shared_experts) * per_expert + self.hidden * self.experts

    def mlp_params_total(self, layer: int) -> int:
        if not self.experts or layer < self.dense_layers:
            return 3 * self.hidden * self.ffn
        return (self.experts + self.shared_experts) * 3 * self.hidden * self.moe_ffn + self.hidden * self.experts

    def active_params(self, with_embeddings: bool = True) -> int:
        """Parameters touched per token (MoE: active experts only)."""
        n = sum(self.attn_params() + self.mlp_params_active(i) for i in range(self.layers))
        return n + (2 * self.vocab * self.hidden if with_embeddings else 0)

    def total_params(self, with_embeddings: bool = True) -> int:
        n = sum(self.attn_params() + self.mlp_params_total(i) for i in range(self.layers))
        return n + (2 * self.vocab * self.hidden if with_embeddings else 0)

    def weight_bytes(self) -> int:
        return self.total_params() * self.elt_bytes

    # -- FLOPs ---------------------------------------------------------------------------------------------------
    def linear_flops_per_token(self, layers: int | None = None) -> float:
        """Projection + MLP FLOPs for one token through ``layers`` layers (default all), no attention scores."""
        n = self.layers if layers is None else layers
        return 2.0 * sum(self.attn_params() + self.mlp_params_active(i) for i in range(n))

    def attn_dims(self, decode: bool) -> tuple[int, int, int, int]:
        """(query heads, kv heads, qk dim, v dim) of the attention kernel.

        GQA: (heads, kv_heads, head_dim, head_dim). MLA prefill runs per head on decompressed K/V
        (qk = nope + rope = head_dim, v = v_head_dim); MLA decode runs absorbed, as an MQA over the cached latent
        (one kv head, qk = kv_lora_rank + rope_head_dim, v = kv_lora_rank)."""
        if not self.is_mla:
            return self.heads, self.kv_heads, self.head_dim, self.head_dim
        if decode:
            return self.heads, 1, self.kv_lora_rank + self.rope_head_dim, self.kv_lora_rank
        return self.heads, self.heads, self.head_dim, self.v_dim

    def attn_score_flops(self, pairs: float, decode: bool, layers: int | None = None) -> float:
        """QK^T and PV FLOPs: 2 * q_heads * (qk_dim + v_dim) per (query, key) pair, summed over ``pairs``:
        decode = batch * ctx; causal prefill of n new tokens after c cached = n*c + n(n+1)/2 (:func:`causal_pairs`)."""
        n = self.layers if layers is None else layers
        hq, _, qk, v = self.attn_dims(decode)
        return 2.0 * hq * (qk + v) * pairs * n

    def mla_decompress_flops(self, cached_tokens: int, layers: int | None = None) -> float:
        """MLA prefill decompresses every cached position's latent into per-head K (nope part) and V, over all
        cached tokens and not only the new ones (whose projections :meth:`attn_params` already counts):
        2 x kv_lora_rank x heads x (nope + v_dim) FLOPs per cached token per layer; 0 for GQA."""
        if not self.is_mla:
            return 0.0
        n = self.layers if layers is None else layers
        nope = self.head_dim - self.rope_head_dim
        return 2.0 * self.kv_lora_rank * self.heads * (nope + self.v_dim) * cached_tokens * n

    def prefill_flops(self, n_new: int, n_ctx: int = 0, layers: int | None = None) -> float:
        return self.linear_flops_per_token(layers) * n_new + \
            self.attn_score_flops(causal_pairs(n_new, n_ctx), False, layers) + self.mla_decompress_flops(n_ctx, layers)

    def decode_flops(self, batch: int, ctx: int, layers: int | None = None) -> float:
        """One decode step: ``batch`` sequences each adding one token after ``ctx`` cached ones."""
        return self.linear_flops_per_token(layers) * batch + self.attn_score_flops(batch * (ctx + 1), True, layers)

    def lm_head_flops(self, tokens: int) -> float:
        return 2.0 * self.hidden * self.vocab * tokens


def causal_pairs(n_new: int, n_ctx: int = 0) -> float:
    """(query, key) pairs of a causal prefill of ``n_new`` tokens after ``n_ctx`` cached ones."""
    return n_new * n_ctx + n_new * (n_new + 1) / 2


def representative_index(shape: ModelShape) -> int:
    """The layer kind that dominates: the first MoE layer of an MoE model, else layer 0."""
    return shape.dense_layers if shape.experts else 0


def layer_param_bytes(shape: ModelShape, idx: int, dtype) -> int:
    """Bytes of one layer's weights (layer ``idx``: dense or MoE) and its two norms in ``dtype`` (a torch dtype)."""
    import torch

    return (shape.attn_params() + shape.mlp_params_total(idx) + 2 * shape.hidden) * (torch.finfo(dtype).bits // 8)
