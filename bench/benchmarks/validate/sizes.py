"""Sizing rules the replay benchmark and its cost model share: its sessions and how many of the model's layers it
runs."""
from __future__ import annotations

from bench.harness import roofline
from bench.llm.replay import layers_that_fit, make_sessions
from bench.llm.shapes import ModelShape
from bench.llm.workload import Workload


def replay_dtype(state):
    return roofline.compute_dtype(state, "validate")


def replay_sizes(state):
    """The replay's sessions and how many of the model's layers it runs (validate.layers, or as many as fit half
    the memory budget with the longest session's KV cache): (config, shape, dtype, sessions, longest, layers)."""
    v = state.cfg.validate
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = replay_dtype(state)
    w = Workload.from_cfg(v.workload)
    sessions = make_sessions(w, int(v.sessions), int(v.turns), float(v.scale_tokens), int(v.vocab_rows), int(v.seed))
    max_tokens = max(s.max_tokens for s in sessions)
    k = int(v.layers) if v.layers else layers_that_fit(shape, dtype, state.mem_budget_bytes // 2, max_tokens)
    if k < 1:
        state.skip(f"not one layer of {shape.name} with a {max_tokens}-token KV cache fits the memory budget")
    return v, shape, dtype, sessions, max_tokens, min(k, shape.layers)
