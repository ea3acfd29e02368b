"""Does the model predict? The end-to-end replay's measured times beside what the costs fitted from the same run
predict for exactly the work the replay did (its turn plan, recorded by the e2e_agentic_replay benchmark: prefill
of n_new after n_ctx cached tokens, the KV loaded per turn, the positions each decode step's attention read), for
the layers it ran. The benchmark measures; this module predicts, after the run, from the run's records."""
from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.errors import UserError
from bench.model.costs import Costs, fit_decode, fit_exposure, fit_prefill, host_tier, storage_tier

TIERS = {"reuse_host": "host", "reuse_storage": "storage"}


def predicted_times(costs: Costs, plan: dict, mode: str) -> tuple[float, float]:
    """(prefill seconds, decode seconds) the costs predict for one mode's recorded turn plan."""
    frac = plan["layers_run"] / plan["model_layers"]
    tier = TIERS.get(mode, "hbm")
    spans = plan.get("decode_spans")
    pre = dec = 0.0
    for n_new, n_ctx, load_tok, first, steps in plan["turns"][mode]:
        # a storage load reads the file into host memory first, one O_DIRECT read per layer and K/V (serial: each
        # pays the measured request latency), then loads from host layer by layer (overlapped)
        over_s, serial_s = (float(x) for x in costs.load_split(tier, load_tok, requests=plan["storage_reads"]))
        pre += float(costs.prefill_with_load_s(n_new, n_ctx, over_s, overlap=True, scale=frac, serial_s=serial_s))
        ctx = np.arange(first, first + steps)
        # the positions each step's attention read: the context and the new token, or a captured step's span
        reads = ctx + 1 if not spans else np.array([next(s for s in spans if s > c) for c in ctx])
        dec += float(np.sum(costs.decode_step_s(1, reads - 1))) * frac
    return pre, dec


def eager_decode(rec: dict) -> str | None:
    """How a GPU replay record decoded when it ran no CUDA graphs (each step Python's op issue, which the costs
    do not price), else None. Records before info.decode_graphs say it in info.decode."""
    info = rec.get("info") or {}
    mode = info.get("decode_mode", info.get("decode"))
    graphs = info.get("decode_graphs", not str(mode or "").startswith("eager"))
    return None if (graphs or rec.get("device") != "cuda") else str(mode)


def replay_predictions(df: pd.DataFrame, records: list) -> dict:
    """{mode: measured and predicted times and speedups, and their errors, or why there is no prediction} for the
    run's ok e2e_agentic_replay records. Records written before schema 2 carry the prediction made during the run:
    it is used as recorded."""
    recs = [r for r in records if r["benchmark"] == "e2e_agentic_replay" and r["status"] == "ok"]
    out = {}
    plans = [r for r in recs if (r.get("info") or {}).get("plan")]
    costs = None
    if plans:
        plan = plans[0]["info"]["plan"]
        try:
            costs = Costs(fit_prefill(df), fit_decode(df), {}, plan["kv_bytes_per_token"], layers=plan["layers_run"],
                          exposure=fit_exposure(df))
            host = host_tier(df, plan["host_block_tokens"])
            costs.tiers["host"] = host
            st = storage_tier(df, plan["storage_block_bytes"], host)
            if st is not None:
                costs.tiers["storage"] = st
        except UserError as e:
            costs = str(e)
        except Exception as e:  # the records lack a cost the prediction needs
            costs = f"{type(e).__name__}: {e}"
    base = next((r for r in recs if r["params"]["mode"] == "recompute"), None)
    for r in recs:
        mode, m = r["params"]["mode"], r["metrics"]
        plan = (r.get("info") or {}).get("plan")
        if plan is None:  # schema 1: predicted during the run
            out[mode] = {k: m.get(k) for k in ("speedup_measured", "speedup_predicted", "speedup_prediction_error",
                                               "time_prediction_error", "predicted_total_s")}
            continue
        if isinstance(costs, str) or costs is None or base is None:
            out[mode] = {"speedup_measured": m.get("speedup_measured"), "missing": costs if isinstance(costs, str)
                         else "no recompute record (the baseline)"}
            continue
        if mode == "reuse_storage" and "storage" not in costs.tiers:
            out[mode] = {"speedup_measured": m.get("speedup_measured"),
                         "missing": "file_read (run benchmark=[layers,transfer,storage,validate])"}
            continue
        pre, dec = predicted_times(costs, plan, mode)
        pre0, dec0 = predicted_times(costs, plan, "recompute")
        total = m["prefill_s"] + m["decode_s"]
        rec_total = base["metrics"]["prefill_s"] + base["metrics"]["decode_s"]
        sp = (pre0 + dec0) / (pre + dec)
        out[mode] = {"predicted_prefill_s": pre, "predicted_decode_s": dec, "predicted_total_s": pre + dec,
                     "time_prediction_error": (pre + dec) / total - 1, "speedup_measured": rec_total / total,
                     "speedup_predicted": sp, "speedup_prediction_error": sp / (rec_total / total) - 1,
                     "load_cost": costs.load_cost_used()["used"]}
    for r in recs:
        if (how := eager_decode(r)) is not None:
            out[r["params"]["mode"]]["eager_decode"] = how
    return out
