"""The throughput model: measured costs of a run + a workload + a fleet -> speedup of KV reuse per tier, the
Amdahl bound, break-even bandwidths, simulated tiered-cache hit rates per routing, and a verdict on "up to 2x".
"""
from __future__ import annotations

import math

import numpy as np
from omegaconf import OmegaConf

from bench.errors import UserError
from bench.model import fleet as F
from bench.model.cachesim import TIERS, Trace, simulate
from bench.model.costs import Costs, fit_decode, fit_exposure, fit_prefill, host_tier, storage_tier
from bench.model.workload import Workload, generate, read_trace
from bench.shapes import ModelShape
from bench.store import load, read_manifest, run_dirs

HIT_GRID = np.round(np.concatenate([np.arange(0, 0.9, 0.05), np.arange(0.9, 1.0001, 0.01)]), 3)  # dense where agents live
CPU_ASSUMED_HBM = 80 * 2**30


def load_run(path):
    dirs = run_dirs([path])
    if len(dirs) != 1:
        raise UserError(f"{path} holds {len(dirs)} runs; name one run directory (e.g. {dirs[0]})")
    man = read_manifest(dirs[0])
    if not man.get("config", {}).get("model"):
        raise UserError(f"{dirs[0]} has no manifest with a model preset; is it a tierbench run directory?")
    return dirs[0], man, load(dirs[0])


def requests_for(cfg, w: Workload):
    if cfg.trace:
        return read_trace(cfg.trace), f"trace {cfg.trace}"
    return generate(w, int(cfg.fleet.sessions), int(cfg.fleet.block_tokens), int(cfg.fleet.seed)), \
        f"{cfg.fleet.sessions} synthetic sessions"


def mean_prefill_s(costs: Costs, new, cached, load_s, overlap: bool) -> float:
    """Mean prefill GPU-seconds per request: compute of the new tokens after the cached ones, with the load."""
    return float(np.mean(costs.prefill_with_load_s(new, cached, load_s, overlap)))


def load_exposure(df, load_cost: str, warnings: list):
    """The measured layer-wise exposure per fleet.load_cost: auto (when the run has it), measured, bandwidth."""
    if load_cost == "bandwidth":
        return None
    exposure = fit_exposure(df)
    if exposure is None:
        if load_cost == "measured":
            raise UserError("fleet.load_cost=measured but the run has no layerwise_load records: run `python -m bench "
                            "run benchmark=interference` with the same model, or use fleet.load_cost=auto|bandwidth")
        return None
    if exposure.rel_rms > 0.1:
        warnings.append(f"layer-wise load fit residual {exposure.rel_rms:.0%} of the prefill-with-load time (rel. "
                        f"RMS; ideal pipeline {exposure.ideal_rel_rms:.0%}): the measured overlap is noisy")
    return exposure


def break_even_gbps(costs: Costs, n, c, latency_s: float) -> float:
    """Tier bandwidth (GB/s) at which loading the cached KV takes as long as recomputing it, over requests:
    sum(cached bytes) / sum(t_p(n + c, 0) - t_p(n, c) - latency). inf when recomputing costs nothing."""
    n, c = np.asarray(n, float), np.asarray(c, float)
    saved = costs.prefill_s(n + c, 0) - costs.prefill_s(n, c)
    denom = float(np.sum(np.maximum(saved - latency_s * (c > 0), 0)))
    return float(np.sum(c) * costs.kv_bytes_per_token / denom / 1e9) if denom > 0 else math.inf


def analyze(run_path, cfg) -> dict:
    run_dir, man, df = load_run(run_path)
    run_model = man["config"]["model"]
    if cfg.model is not None and cfg.model.name != run_model["name"]:
        raise UserError(f"model={cfg.model.name} but {run_dir} measured {run_model['name']}: the costs belong to "
                        f"that model; run `python -m bench run model={cfg.model.name}` for this one")
    shape = ModelShape.from_cfg(run_model)
    fl = cfg.fleet
    warnings: list[str] = []
    kvb = shape.kv_bytes_per_token
    host = host_tier(df, int(fl.block_tokens))
    tiers = {"host": host}
    st = storage_tier(df, int(fl.block_tokens) * kvb, host)
    if st is None:
        warnings.append("no storage records in this run: storage tier left out (run `python -m bench run "
                        "benchmark=storage` to include it)")
    else:
        tiers["storage"] = st
    costs = Costs(fit_prefill(df), fit_decode(df), tiers, kvb, layers=shape.layers)
    costs.exposure = load_exposure(df, fl.load_cost, warnings)
    for fit in (costs.prefill, costs.decode):
        if fit.rel_rms > 0.15:
            warnings.append(f"{fit.name} fit residual {fit.rel_rms:.0%} (rel. RMS): the cost model is rough here")
        warnings.extend(f"{fit.name}: {n}" for n in fit.notes)

    gpu = (man.get("hardware") or {}).get("gpu") or {}
    hbm = fl.hbm_bytes or gpu.get("memory_bytes")
    if not hbm:
        hbm = CPU_ASSUMED_HBM
        warnings.append("CPU run: costs are CPU costs and HBM is assumed 80 GiB per GPU (set fleet.hbm_bytes)")
    weights = shape.weight_bytes()
    g = fl.gpus_per_instance or next(k for k in (1, 2, 4, 8, 16, 32, 64) if weights <= 0.6 * k * hbm)
    if g > fl.gpus:
        raise UserError(f"fleet.gpus={fl.gpus} cannot hold one instance of {shape.name} ({g} GPUs needed)")

    w = Workload.from_cfg(cfg.workload)
    reqs, source = requests_for(cfg, w)
    trace = Trace.from_requests(reqs)
    bt = int(fl.block_tokens)
    ideal = simulate(trace, bt, (trace.n_unique + 1, 0, 0))  # infinite HBM: the reuse the workload allows
    I = trace.input_length.astype(float)
    O = trace.output_length.astype(float)
    c = ideal.hit_tokens.sum(axis=1).astype(float)
    if cfg.hit_rate is not None:  # what-if: every request reuses this fraction of its input
        c = np.floor(cfg.hit_rate * I)
    n = I - c

    ctx_decode = float(np.mean(I + O / 2))
    step = lambda b: float(costs.decode_step_s(b, ctx_decode))  # noqa: E731
    B, b_limit = F.decode_batch(g * hbm, weights, ctx_decode * kvb, fl.reserve_fraction,
                                fl.slo_ms_per_token / 1e3 if fl.slo_ms_per_token else None, step,
                                int(fl.max_batch), g)
    if B < 1:
        raise UserError(f"no decode batch fits: {b_limit} (fleet.gpus_per_instance={g}, HBM {hbm / 2**30:.0f} GiB)")
    d = float(np.mean(O * costs.decode_step_s(B, I + O / 2) / B))
    p0_r = costs.prefill_s(I, 0)
    p0 = float(np.mean(p0_r))
    costs.check_range("prefill new tokens", np.concatenate([I, n]), costs.prefill.ranges["n_new"])
    costs.check_range("prefill cached context", c, costs.prefill.ranges["n_ctx"])
    costs.check_range("decode batch", [B], costs.decode.ranges["batch"])
    costs.check_range("decode context", I + O, costs.decode.ranges["ctx"])
    warnings.extend(costs.warnings)

    def rate(p: float) -> tuple[float, dict]:
        if fl.mode == "colocated":
            r = F.colocated_rate(fl.gpus, p, d, fl.colocated_interference)
            return r, {"mode": "colocated", "gpus": fl.gpus}
        s = F.best_split(fl.gpus, p, d) if fl.prefill_fraction is None else \
            F.fixed_split(fl.gpus, fl.prefill_fraction, p, d)
        return s.requests_per_s, {"prefill_gpus": s.prefill_gpus, "decode_gpus": s.decode_gpus}

    base_rate, base_split = rate(p0)
    out_tok, in_tok = float(np.mean(O)), float(np.mean(I))
    result = {
        "run": str(run_dir), "device": man.get("device"), "gpu": gpu.get("name") or man.get("device"),
        "model": shape.name, "kv_bytes_per_token": kvb,
        "workload": {"name": w.name, "source": cfg.workload.source, "requests": len(trace), "from": source,
                     "preset_summary": w.summary(), "ideal_hit_rate": float(c.sum() / I.sum()),
                     "hit_rate_override": cfg.hit_rate,
                     "mean_input_tokens": in_tok, "mean_output_tokens": out_tok},
        "fits": {"prefill": costs.prefill.as_dict(), "decode": costs.decode.as_dict()},
        "load_cost": costs.load_cost_used(),
        "tiers": {k: {"gbps": t.gbps, "latency_s": t.latency_s, "source": t.source} for k, t in tiers.items()},
        "fleet": {**OmegaConf.to_container(fl, resolve=True), "gpus_per_instance": g, "hbm_bytes": hbm,
                  "decode_batch": B, "decode_batch_limited_by": b_limit, "weight_bytes": weights},
        "baseline": {"prefill_gpu_s": p0, "decode_gpu_s": d, "prefill_share": F.prefill_share(p0, d),
                     "amdahl_bound": F.amdahl_bound(p0, d), "requests_per_s": base_rate, **base_split,
                     "output_tokens_per_s": base_rate * out_tok, "input_tokens_per_s": base_rate * in_tok},
        "reuse": {}, "simulated": {}, "sweep": {"hit_rate": HIT_GRID.tolist()}, "warnings": warnings,
    }

    for tier in ("hbm", *tiers):
        load_s = costs.load_s(tier, c)
        px = mean_prefill_s(costs, n, c, load_s, fl.overlap_load)
        r, split = rate(px)
        be = break_even_gbps(costs, n, c, 0.0 if tier == "hbm" else tiers[tier].latency_s)
        result["reuse"][tier] = {
            "prefill_gpu_s": px, "speedup": r / base_rate, "speedup_continuous": F.speedup(p0, px, d),
            "requests_per_s": r, **split, "output_tokens_per_s": r * out_tok,
            "break_even_gbps": be if tier != "hbm" else None,
            "measured_gbps": tiers[tier].gbps if tier != "hbm" else None,
            "pays": (tiers[tier].gbps > be) if tier != "hbm" else True,
        }
        sweep = []
        for h in HIT_GRID:
            ch = h * I
            ph = mean_prefill_s(costs, I - ch, ch, costs.load_s(tier, ch), fl.overlap_load)
            sweep.append(F.speedup(p0, ph, d))
        result["sweep"][tier] = sweep

    hbm_free = max(g * hbm * (1 - fl.reserve_fraction) - weights, 0)
    block_bytes = bt * kvb
    caps = (max(1, int(fl.hbm_cache_fraction * hbm_free // block_bytes)),
            int(g * fl.host_bytes_per_gpu // block_bytes) if "host" in tiers else 0,
            int(g * fl.storage_bytes_per_gpu // block_bytes) if "storage" in tiers else 0)
    for routing in fl.routings:
        sim = simulate(trace, bt, caps, int(fl.sim_instances), routing, float(fl.cache_slack))
        ht = sim.hit_tokens.astype(float)
        load_s = sum(costs.load_s(t, ht[:, i]) for i, t in enumerate(TIERS) if t == "hbm" or t in tiers)
        ps = mean_prefill_s(costs, sim.miss_tokens, ht.sum(axis=1), load_s, fl.overlap_load)
        r, split = rate(ps)
        result["simulated"][routing] = {**sim.rates(), "speedup": r / base_rate, "prefill_gpu_s": ps,
                                        "effective_routing": sim.meta["effective_routing"], **split,
                                        "capacity_blocks_per_instance": list(caps), "instances": fl.sim_instances}
    result["verdict"] = verdict(result)
    return result


def verdict(r: dict) -> str:
    b = r["baseline"]
    lines = [f"On {r['gpu']} with {r['model']} serving {r['workload']['name']} "
             f"(ideal reuse {r['workload']['ideal_hit_rate']:.1%} of input tokens): without reuse prefill takes "
             f"{b['prefill_share']:.0%} of GPU time, so KV reuse can give at most {b['amdahl_bound']:.2f}x "
             f"(Amdahl: 1/(1 - prefill share))."]
    parts = []
    for tier, v in r["reuse"].items():
        s = f"{tier}: {v['speedup']:.2f}x"
        if v["measured_gbps"] is not None:
            s += (f" ({v['measured_gbps']:.3g} GB/s measured vs {v['break_even_gbps']:.3g} GB/s break-even: "
                  f"{'loading beats recomputing' if v['pays'] else 'recomputing is faster'})")
        parts.append(s)
    lines.append("Reusing all reusable KV from " + "; ".join(parts) + ".")
    if r["simulated"]:
        best = max(r["simulated"].items(), key=lambda kv: kv[1]["speedup"])
        lines.append(f"With the simulated cache ({best[1]['instances']} instances, {best[0]} routing) the hit rate "
                     f"is {best[1]['hit_rate']:.1%} and the speedup {best[1]['speedup']:.2f}x.")
    top = max(v["speedup"] for v in r["reuse"].values())
    if b["amdahl_bound"] < 1.9:
        claim = (f"The 2x claim does not hold here: prefill is only {b['prefill_share']:.0%} of the work, so even "
                 f"free prefill gives {b['amdahl_bound']:.2f}x.")
    elif top >= 1.9:
        claim = f"The 2x claim holds: {top:.2f}x with the best tier" + (
            f", more than 2x because prefill is {b['prefill_share']:.0%} (over half) of the work without reuse."
            if top > 2.1 else ".")
    else:
        claim = (f"The 2x claim does not hold with these tiers: the bound is {b['amdahl_bound']:.2f}x but the best "
                 f"tier reaches {top:.2f}x (loading or the remaining prefill still costs GPU time).")
    lines.append(claim)
    return " ".join(lines)
