"""Sizing rules the interference benchmarks and their cost model share: how many layers the layer-wise load
pipeline runs."""
from __future__ import annotations

import torch

from bench.benchmarks.layers.benchmarks import layer_dtype
from bench.llm.shapes import ModelShape, layer_param_bytes, representative_index


def layerwise_depth(state, n_new: int, hit: int) -> int:
    """Layers the pipeline runs: interference.layerwise_layers, or all of the model's that fit half the budget."""
    ic = state.cfg.interference
    shape = ModelShape.from_cfg(state.cfg.model)
    if ic.layerwise_layers:
        return min(int(ic.layerwise_layers), shape.layers)
    dtype = layer_dtype(state)
    elt = torch.finfo(dtype).bits // 8
    per = layer_param_bytes(shape, representative_index(shape), dtype) + \
        3 * (n_new + hit) * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes  # cache + host copy
    return int(max(2, min(shape.layers, state.mem_budget_bytes // 2 // max(per, 1))))
