"""End-to-end check of the cost model: replay agentic sessions on this device in each mode (recompute, KV kept in
HBM, offloaded to host, offloaded to storage) and compare the measured times and speedups with what the costs
fitted from this run's own microbenchmarks (layer_prefill, layer_decode, paged_onload, file_read) predict.

The replay runs ``layers`` of the model (all if they fit, else as many as fit); predictions are scaled to the
same layer count. prediction_error = predicted / measured - 1 for the mode's time and for its speedup.
"""
from __future__ import annotations

import numpy as np
import torch

from bench import roofline
from bench.config import check, positive_ints
from bench.model.costs import Costs, fit_decode, fit_exposure, fit_prefill, host_tier, storage_tier
from bench.model.workload import Workload
from bench.registry import benchmark
from bench.benchmarks.layers import layer_attention, layer_param_bytes, representative_index
from bench.replay import MODES, Engine, layers_that_fit, make_sessions
from bench.shapes import ModelShape
from bench.store import load
from bench.validators import validator


def _dtype(state):
    v = state.cfg.validate
    return roofline.compute_dtype(state, state.cfg.model.dtype if v.dtype == "model" else v.dtype, v.cpu_dtype)


def _setup(state):
    v = state.cfg.validate
    shape = ModelShape.from_cfg(state.cfg.model)
    dtype = _dtype(state)
    w = Workload.from_cfg(v.workload)
    sessions = make_sessions(w, int(v.sessions), int(v.turns), float(v.scale_tokens), int(v.vocab_rows), int(v.seed))
    max_tokens = max(s.max_tokens for s in sessions)
    k = int(v.layers) if v.layers else layers_that_fit(shape, dtype, state.mem_budget_bytes // 2, max_tokens)
    if k < 1:
        state.skip(f"not one layer of {shape.name} with a {max_tokens}-token KV cache fits the memory budget")
    k = min(k, shape.layers)
    elt = torch.finfo(dtype).bits // 8
    kv_layer = max_tokens * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes  # one session's KV, a layer
    mode = state.params["mode"]
    offloads = mode in ("reuse_host", "reuse_storage")
    graphs = (max_tokens // 256).bit_length() + 1 if state.device.is_cuda else 0  # decode graphs (spans)
    state.require_bytes(k * (layer_param_bytes(shape, representative_index(shape), dtype) + 2 * kv_layer) +
                        int(v.vocab_rows) * shape.hidden * (elt + 4 * graphs),
                        f"{k} layer(s) with a {max_tokens}-token KV cache and the embedding"
                        + (", the KV's host copy" if offloads else ""),
                        host_bytes=k * kv_layer if offloads else 0,
                        file_bytes=k * kv_layer if mode == "reuse_storage" else 0)

    attention, _ = layer_attention(state, shape, dtype)  # the layer benchmarks' kernels: like with like

    def build():
        from bench.benchmarks.storage import storage_root

        engine = Engine.build(shape, k, dtype, state.device.torch, int(v.vocab_rows),
                              workdir=storage_root(state.cfg), attention=attention)
        engine.session_cache(max_tokens)  # sized for the longest session; decode graphs captured here, untimed
        return engine

    engine = state.run_resource(("replay_engine", shape.name, k, str(dtype)), build)
    return v, shape, engine, sessions


def replay(state, engine, sessions, mode: str, repeats: int) -> dict:
    """Median over ``repeats`` of the summed session times (after one warm-up session)."""
    import os
    import tempfile

    path = None
    if mode == "reuse_storage":
        fd, path = tempfile.mkstemp(prefix=".tierbench-replay-", dir=engine.workdir)
        os.close(fd)
        state.run_resource(("replay_file", path), lambda: path, lambda p: os.path.exists(p) and os.remove(p))
    engine.run_session(sessions[0], mode, path)  # warm-up: allocator, kernels, page tables
    runs = []
    for _ in range(repeats):
        tot = {}
        logits = []
        for s in sessions:
            r = engine.run_session(s, mode, path)
            logits.append(r.pop("logits"))
            for key, val in r.items():
                tot[key] = tot.get(key, 0) + val
        runs.append((tot, logits))
    order = np.argsort([t["prefill_s"] + t["decode_s"] for t, _ in runs])
    return {**runs[order[len(order) // 2]][0], "logits": runs[0][1], "repeats": repeats}


def predict(state, engine, sessions, mode: str) -> dict | None:
    """Predicted prefill/decode seconds from this run's fitted costs, for the layers the engine runs."""
    if state.ctx.records_path is None:
        return None
    try:
        df = load(state.ctx.records_path.parent)
        shape = engine.shape
        elt = torch.finfo(engine.dtype).bits // 8
        kv_tok = len(engine.layers) * shape.kv_bytes_per_token_per_layer * elt // shape.elt_bytes  # layers run
        costs = Costs(fit_prefill(df), fit_decode(df), {}, kv_tok, layers=len(engine.layers),
                      exposure=fit_exposure(df))
        if mode in ("reuse_host", "reuse_storage"):
            host = host_tier(df, int(state.cfg.transfer.block_tokens[-1]) if "transfer" in state.cfg else 16)
            costs.tiers["host"] = host
            if mode == "reuse_storage":
                st = storage_tier(df, 16 * shape.kv_bytes_per_token, host)
                if st is None:
                    return {"missing": "file_read (run benchmark=[layers,transfer,storage,validate])"}
                costs.tiers["storage"] = st
    except Exception as e:  # UserError says which benchmark is missing
        return {"missing": str(e)}
    frac = len(engine.layers) / shape.layers
    pre = dec = 0.0
    tier = {"reuse_host": "host", "reuse_storage": "storage"}.get(mode, "hbm")
    reads = len(engine.layers) * shape.kv_components  # the replay's O_DIRECT reads per storage load
    for s in sessions:
        for n_new, n_ctx, load_tok, dec_ctx in engine.turn_plan(s, mode):
            # the engine reads a storage file into host memory first, one O_DIRECT read per layer and K/V
            # (serial: each pays the measured request latency), then loads from host layer by layer (overlapped)
            over_s, serial_s = (float(x) for x in costs.load_split(tier, load_tok, requests=reads))
            pre += float(costs.prefill_with_load_s(n_new, n_ctx, over_s, overlap=True, scale=frac,
                                                   serial_s=serial_s))
            # the positions each step's attention reads (a captured step may read its whole span, masked)
            attended = np.array([engine.decode_reads(c) for c in dec_ctx]) - 1
            dec += float(np.sum(costs.decode_step_s(1, attended))) * frac
    return {"prefill_s": pre, "decode_s": dec, "load_cost": costs.load_cost_used()["used"]}


@benchmark("e2e_agentic_replay", family="validate", axes=lambda c: {"mode": list(c.validate.modes)})
def e2e_agentic_replay(state):
    """Replay agentic sessions in one mode (recompute / reuse_hbm / reuse_host / reuse_storage) through the
    model's layers: prefill_s (with KV loads), decode_s, speedup vs recompute, and the cost model's prediction
    error for both. Outputs are checked against the recompute mode's logits (the reuse path computes the same
    function). Timed: whole sessions after a warm-up session; offload after a turn is reported apart."""
    v, shape, engine, sessions = _setup(state)
    mode = state.params["mode"]
    rec = state.run_resource(("replay_result", "recompute"),
                             lambda: replay(state, engine, sessions, "recompute", int(v.repeats)))
    res = rec if mode == "recompute" else replay(state, engine, sessions, mode, int(v.repeats))
    ref_logits = rec["logits"]
    err = max(roofline.rel_error(a, b) for a, b in zip(res["logits"], ref_logits))
    tol = 4 * roofline.tolerance(engine.dtype)
    state.set_metric("logits_rel_error_vs_recompute", err)
    state.verify(bool(np.isfinite(err)) and err < tol,
                 f"{mode}: logits differ from recompute by {err:.2e} (> {tol:g}): the reuse path computes "
                 f"another function (or a load did not restore the KV)")
    total = res["prefill_s"] + res["decode_s"]
    rec_total = rec["prefill_s"] + rec["decode_s"]
    for key in ("prefill_s", "decode_s", "offload_s", "prefill_tokens", "decode_tokens", "load_bytes"):
        state.set_metric(key, res[key])
    state.set_metric("total_s", total)
    state.set_metric("tokens_per_s", (res["prefill_tokens"] + res["decode_tokens"]) / total)
    state.set_metric("output_tokens_per_s", res["decode_tokens"] / total)
    state.set_metric("speedup_measured", rec_total / total)
    pred, pred_rec = predict(state, engine, sessions, mode), predict(state, engine, sessions, "recompute")
    if pred and "missing" not in pred and pred_rec and "missing" not in pred_rec:
        p_total = pred["prefill_s"] + pred["decode_s"]
        state.set_metric("predicted_prefill_s", pred["prefill_s"])
        state.set_metric("predicted_decode_s", pred["decode_s"])
        state.set_metric("predicted_total_s", p_total)
        state.set_metric("time_prediction_error", p_total / total - 1)
        sp = (pred_rec["prefill_s"] + pred_rec["decode_s"]) / p_total
        state.set_metric("speedup_predicted", sp)
        state.set_metric("speedup_prediction_error", sp / (rec_total / total) - 1)
        state.note(load_cost=pred["load_cost"])
    else:
        state.note(prediction=f"no prediction: {(pred or pred_rec or {}).get('missing', 'no records')}")
    state.note(decode=engine.decode_mode, decode_attention=engine.decode_attention,
               attention_kernels=engine.attention.as_dict(), layers_run=len(engine.layers), model_layers=shape.layers,
               sessions=len(sessions),
               turns=len(sessions[0].turns), dtype=str(engine.dtype).replace("torch.", ""),
               workload=v.workload.name, repeats=res["repeats"])


@validator("validate")
def _validate(cfg) -> None:
    v = cfg.validate
    for m in v.modes:
        check(m in MODES, "validate.modes", m, f"each one of {', '.join(MODES)}")
    check("recompute" in v.modes, "validate.modes", list(v.modes), "must include recompute (the baseline)")
    positive_ints("validate.sessions", [v.sessions])
    positive_ints("validate.turns", [v.turns])
    positive_ints("validate.repeats", [v.repeats])
    positive_ints("validate.vocab_rows", [v.vocab_rows])
    check(0 < v.scale_tokens <= 1, "validate.scale_tokens", v.scale_tokens, "a fraction in (0, 1]")
    if v.layers is not None:
        positive_ints("validate.layers", [v.layers])
