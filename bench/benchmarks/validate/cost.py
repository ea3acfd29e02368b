"""Cost model of the validate family (bench.harness.cost): the end-to-end replay's sessions, prefill per turn
and decode token by token through its layers."""
from __future__ import annotations

from bench.benchmarks.layers.cost import layer_ops, layer_s
from bench.benchmarks.validate.sizes import replay_sizes
from bench.harness.cost import Ctx, Work


def e2e_agentic_replay(c: Ctx) -> Work:
    """The replay: a warm-up session and ``repeats`` passes over the sessions, prefill per turn and decode token by
    token through ``k`` layers. A decode step is a CUDA graph on a GPU where one can hold it
    (bench.llm.replay.graph_refusal, the engine's rule), else eager: a layer's ops (layer_ops: ~65, MoE more)
    issued one by one from Python at the target's issue_us each (the H200 replayed llama3_8b's 32 layers eagerly
    at ~49 ms a token: ~23 us an op), the GPU waiting on the host."""
    from bench.llm.workload import Workload
    from bench.llm.replay import decode_spans, graph_refusal, make_sessions

    v = c.cfg.validate
    mode = c.p["mode"]
    elt = c.compute_elt("validate")
    w = Workload.from_cfg(v.workload)
    sessions = make_sessions(w, int(v.sessions), int(v.turns), float(v.scale_tokens), int(v.vocab_rows), int(v.seed))
    k = replay_sizes(c.state)[5]  # the layers the replay runs: the benchmark's own rule
    graphs = c.cuda and graph_refusal(c.shape) is None
    eager_step = 0.0 if graphs else c.t.issue_us * 1e-6 * layer_ops(c.shape, 1)  # a layer's decode ops, issued

    def session_s(s) -> float:
        tot, hist, ctx = 0.0, 0, 0
        for i, turn in enumerate(s.turns):
            n = len(turn.new_ids)
            pre_n, pre_ctx = (hist + n, 0) if mode == "recompute" else (n, ctx)
            issue = c.t.issue_us * 1e-6 * layer_ops(c.shape, pre_n)  # prefill is eager
            tot += k * max(layer_s(c, False, 1, pre_n, pre_ctx, elt), issue)
            if mode in ("reuse_host", "reuse_storage") and i:
                kvb = ctx * k * c.shape.kv_bytes_per_token_per_layer * elt // c.shape.elt_bytes
                tot += c.link(kvb) * 2 + (kvb / (c.t.storage_read_gbps * 1e9) + kvb / (c.t.storage_write_gbps * 1e9)
                                          if mode == "reuse_storage" else 0.0)
            hist += n
            ctx = hist
            for _ in range(len(turn.out_ids)):  # eager: the GPU runs behind the host's op issue
                tot += k * max(layer_s(c, True, 1, 1, ctx, elt), eager_step)
                ctx += 1
            hist = ctx
        return tot

    per_pass = sum(session_s(s) for s in sessions)
    if graphs:  # decode graphs captured once per run (one per attention span), untimed
        c_spans = len(decode_spans(max(s.max_tokens for s in sessions)))
        capture = c_spans * (0.05 + 3 * k * layer_s(c, True, 1, 1, 256, elt))
    else:
        capture = 0.0
    total = session_s(sessions[0]) + int(v.repeats) * per_pass + 0.1 * len(sessions)
    if mode == "recompute":  # the baseline of every mode: replayed once per run, by whichever point comes first
        return Work([], once={("replay_recompute",): total, ("replay_engine",): capture})
    return Work([], setup_s=total, once=e2e_agentic_replay(c.with_params(mode="recompute")).once)
