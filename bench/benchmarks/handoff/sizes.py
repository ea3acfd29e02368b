"""Sizing rules the handoff benchmarks and their cost models share: one request's paged KV (blocks, descriptors,
bytes), each side's pool, and the per-layer prefill time that paces the layer-by-layer mode."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from bench.benchmarks.handoff.wire import PoolShape
from bench.llm.shapes import ModelShape


@dataclass(frozen=True)
class Geometry:
    """One request of ``context_tokens`` in blocks of ``block_tokens``: ``blocks`` blocks (the last one partly filled,
    moved whole as serving stacks do), each ``layers`` x ``components`` chunks of ``chunk_bytes``, one descriptor per
    chunk; each side's pool holds ``pool_factor`` x as many blocks, the request's at random slots."""

    layers: int
    components: int
    block_tokens: int
    context_tokens: int
    chunk_bytes: int
    blocks: int
    pool_blocks: int

    @property
    def regions(self) -> int:
        return self.layers * self.components

    @property
    def descriptors(self) -> int:
        """Descriptors one request posts (one per layer, component and block)."""
        return self.regions * self.blocks

    @property
    def request_bytes(self) -> int:
        """KV bytes one request moves (whole blocks)."""
        return self.descriptors * self.chunk_bytes

    @property
    def block_bytes(self) -> int:
        return self.regions * self.chunk_bytes

    @property
    def pool(self) -> PoolShape:
        return PoolShape(self.layers, self.components, self.pool_blocks, self.chunk_bytes)

    @property
    def region_bytes(self) -> int:
        return self.pool_blocks * self.chunk_bytes


def geometry(cfg, block_tokens: int, context_tokens: int) -> Geometry:
    """The request of a point: the model preset's KV layout (bench.llm.shapes) at these block and context sizes."""
    s = ModelShape.from_cfg(cfg.model)
    chunk = block_tokens * s.kv_token_elems_per_component * s.elt_bytes
    blocks = math.ceil(context_tokens / block_tokens)
    return Geometry(s.layers, s.kv_components, int(block_tokens), int(context_tokens), chunk, blocks,
                    blocks * int(cfg.handoff.pool_factor))


def layer_flops(cfg, context_tokens: int) -> float:
    """FLOPs of one layer's prefill of the whole context (no cached prefix): what each layer's KV waits for."""
    return ModelShape.from_cfg(cfg.model).prefill_flops(int(context_tokens), 0, layers=1)


def fixed_layer_s(cfg) -> Optional[float]:
    """handoff.layer_compute_s when set (seconds per layer), else None: one layer's FLOPs at the GEMM ceiling."""
    v = cfg.handoff.layer_compute_s
    return None if v is None else float(v)


def host_need_bytes(geo: Geometry) -> int:
    """Host bytes a check takes beyond the pools: the expected chunks of one region and a region's comparison."""
    return 2 * geo.blocks * geo.chunk_bytes + 2 * geo.region_bytes
