"""The throughput model: measured costs of a run + a workload + a fleet -> speedup of KV reuse per tier, the
Amdahl bound, break-even bandwidths, simulated tiered-cache hit rates per routing, and a verdict on "up to 2x".
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from omegaconf import OmegaConf

from bench.core.config import FleetConfig, SparseConfig
from bench.core.errors import UserError
from bench.model import fleet as F
from bench.model import verdict as V
from bench.model.cachesim import TIERS, Curves, reuse_times, simulate
from bench.model.costs import (DECODE, PREFILL, Costs, Tier, fit_decode, fit_exposure, fit_points, fit_prefill,
                               host_tier, points, storage_tier)
from bench.model.workload import Workload, generate_trace, load_trace
from bench.llm.shapes import ModelShape
from bench.core.store import load as load_records, read_manifest, run_dirs, run_state

HIT_GRID = np.round(np.concatenate([np.arange(0, 0.9, 0.05), np.arange(0.9, 1.0001, 0.01)]), 3)  # dense where agents live
CPU_ASSUMED_HBM = 80 * 2**30


def load_run(path):
    dirs = run_dirs([path])
    if len(dirs) != 1:
        raise UserError(f"{path} holds {len(dirs)} runs; name one run directory (e.g. {dirs[0]})")
    man = read_manifest(dirs[0])
    if not man.get("config", {}).get("model"):
        raise UserError(f"{dirs[0]} has no manifest with a model preset; is it a tierbench run directory?")
    return dirs[0], man, load_records(dirs[0])


def mean_prefill_s(costs: Costs, new, cached, loads, overlap: bool) -> float:
    """Mean prefill GPU-seconds per request: compute of the new tokens after the cached ones, with the load
    ``loads`` = (layer-wise overlappable seconds, serial seconds) per request."""
    load_s, serial_s = loads
    return float(np.mean(costs.prefill_with_load_s(new, cached, load_s, overlap, serial_s=serial_s)))


def tier_loads(costs: Costs, tokens_by_tier: dict):
    """(overlappable, serial) load seconds per request of the hit tokens of each tier ({tier: tokens})."""
    over, serial = 0.0, 0.0
    for tier, tokens in tokens_by_tier.items():
        o, s = costs.load_split(tier, tokens)
        over, serial = over + o, serial + s
    return over, serial


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


def trace_block_tokens(trace) -> Optional[int]:
    """The block size a Mooncake trace's hash_ids were cut at (ceil(input_length / block) ids per request), from
    its requests of several blocks; None when no request tells."""
    n = np.diff(trace.off)
    sel = (n >= 4) & (trace.input_length > 0)
    if not sel.any():
        return None
    est = float(np.median(trace.input_length[sel] / n[sel]))
    return int(2 ** round(math.log2(est))) if est >= 1 else 1


def check_trace_blocks(trace, block_tokens: int, path) -> None:
    n = np.diff(trace.off)
    bad = int(np.sum((n > 0) & (-(-trace.input_length // block_tokens) != n)))
    if bad > 0.05 * len(trace):
        found = trace_block_tokens(trace)
        raise UserError(f"trace {path} was cut into blocks of {found if found else 'unknown'} tokens (its hash_ids "
                        f"per input_length) but fleet.block_tokens={block_tokens}: set fleet.block_tokens={found}")


def variant_name(cfg, label: str) -> str:
    """The output folder name of one variant (workload or trace, hit rate, fleet): different variants never share
    a folder. The default fleet and no what-if give ``model-<label>``."""
    parts = [label]
    if cfg.hit_rate is not None:
        parts.append(f"hit{cfg.hit_rate:g}")
    fleet = OmegaConf.to_container(cfg.fleet, resolve=True)
    default = OmegaConf.to_container(OmegaConf.structured(FleetConfig), resolve=True)
    changed = {k: v for k, v in fleet.items() if k != "description" and default.get(k) != v}
    if changed:
        parts.append("fleet-" + hashlib.sha1(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:8])
    sparse_cfg = OmegaConf.to_container(cfg.sparse, resolve=True) if "sparse" in cfg else {}
    sparse_default = OmegaConf.to_container(OmegaConf.structured(SparseConfig), resolve=True)
    if sparse_cfg and sparse_cfg != sparse_default:
        parts.append("sparse-" + hashlib.sha1(json.dumps(sparse_cfg, sort_keys=True).encode()).hexdigest()[:8])
    return "model-" + "-".join(re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in parts)


@dataclass
class Analysis:
    """One analysis of a run, built step by step (:func:`analyze` runs them in order; a test may call them one by
    one): ``load`` (the run and its checks), ``fit`` (costs), ``workload`` (requests), ``fleet`` (instances, decode
    batch, extrapolation), ``simulate_caches`` (tiered caches, pricing, the verdict's scenario), ``price`` (no reuse,
    each tier, routings), ``verdict`` (bootstrap interval, outcome, caveats, seed case), ``capacity`` (curves, knees,
    persistence), ``goodput`` (at the SLO), ``sparse`` (the warm tier's sparse decode) and ``finish`` (the
    sentence). Each step reads what earlier ones set."""

    cfg: Any
    run_dir: Path
    man: dict
    df: Any
    shape: ModelShape
    device: str
    gpu: dict
    state: Optional[str]
    warnings: list = field(default_factory=list)
    kern: Optional[str] = None
    tiers: dict = field(default_factory=dict)
    costs: Optional[Costs] = None
    trace: Any = None
    w: Any = None
    label: str = ""
    source: str = ""
    I: Any = None
    O: Any = None
    c: Any = None
    n: Any = None
    hbm: float = 0.0
    weights: int = 0
    g: int = 1
    ctx_decode: float = 0.0
    B: int = 0
    b_limit: str = ""
    extrap: list = field(default_factory=list)
    caps: tuple = ()
    block_bytes: int = 0
    sims: dict = field(default_factory=dict)
    pricer: Any = None
    best_routing: str = ""
    tier_caps: dict = field(default_factory=dict)
    pt: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    @property
    def fl(self):
        return self.cfg.fleet


def load(run_path, cfg) -> Analysis:
    """The run, its model, and what the model needs from it (one line per missing input, else the analysis)."""
    run_dir, man, df = load_run(run_path)
    run_model = man["config"]["model"]
    if cfg.model is not None and cfg.model.name != run_model["name"]:
        raise UserError(f"model={cfg.model.name} but {run_dir} measured {run_model['name']}: the costs belong to "
                        f"that model; run `python -m bench run model={cfg.model.name}` for this one")
    shape = ModelShape.from_cfg(run_model)
    missing = V.missing_inputs(df, shape.name, man.get("device") or "cpu")
    if missing:
        state = run_state(man, len(df))
        raise UserError(f"{run_dir} lacks what the model needs: " + "; ".join(missing) +
                        (f" (the run is {state})" if state else ""))
    a = Analysis(cfg, run_dir, man, df, shape, man.get("device") or "cpu", (man.get("hardware") or {}).get("gpu") or {},
                 run_state(man, len(df)))
    if a.state:
        a.warnings.append(f"{run_dir} is an incomplete run ({a.state}): the model uses the points it measured")
    return a


def fit(a: Analysis) -> Analysis:
    """The measured costs: prefill and decode fits (one attention kernel), the host and storage tiers, the
    layer-wise load exposure."""
    fl, kvb = a.fl, a.shape.kv_bytes_per_token
    bt = int(fl.block_tokens)
    host = host_tier(a.df, bt)
    a.tiers = {"host": host}
    st = storage_tier(a.df, bt * kvb, host)
    if st is None:
        a.warnings.append("no storage records in this run: storage tier left out (run `python -m bench run "
                          "benchmark=storage` to include it)")
    else:
        a.tiers["storage"] = st
    a.kern = a.cfg.get("attention_kernel")
    a.costs = Costs(fit_prefill(a.df, a.kern), fit_decode(a.df, a.kern), a.tiers, kvb, layers=a.shape.layers)
    a.costs.exposure = load_exposure(a.df, fl.load_cost, a.warnings)
    for f in (a.costs.prefill, a.costs.decode):
        if f.rel_rms > 0.15:
            a.warnings.append(f"{f.name} fit residual {f.rel_rms:.0%} (rel. RMS): the cost model is rough here")
        a.warnings.extend(f"{f.name}: {n}" for n in f.notes)
    return a


def workload(a: Analysis) -> Analysis:
    """The requests (a trace, or generated sessions of the preset), their lengths and the reuse they allow."""
    cfg, fl = a.cfg, a.fl
    bt = int(fl.block_tokens)
    a.w = Workload.from_cfg(cfg.workload)
    if cfg.trace:
        a.trace = load_trace(cfg.trace)
        check_trace_blocks(a.trace, bt, cfg.trace)
        a.label, a.source = Path(cfg.trace).stem, f"trace {cfg.trace}"
    else:
        a.trace = generate_trace(a.w, int(fl.sessions), bt, int(fl.seed))
        a.label, a.source = a.w.name, f"{fl.sessions} synthetic sessions of preset {a.w.name}"
    ideal = simulate(a.trace, bt, (a.trace.n_unique + 1, 0, 0))  # infinite HBM: the reuse the workload allows
    a.I = a.trace.input_length.astype(float)
    a.O = a.trace.output_length.astype(float)
    a.c = ideal.hit_tokens.sum(axis=1).astype(float)
    if cfg.hit_rate is not None:  # what-if: every request reuses this fraction of its input
        a.c = np.floor(cfg.hit_rate * a.I)
    a.n = a.I - a.c
    return a


def fleet(a: Analysis) -> Analysis:
    """The fleet's instances: HBM per GPU, GPUs per instance, the decode batch; how far the workload lies outside
    what was measured."""
    fl, costs, kvb = a.fl, a.costs, a.shape.kv_bytes_per_token
    a.hbm = fl.hbm_bytes or a.gpu.get("memory_bytes")
    if not a.hbm:
        a.hbm = CPU_ASSUMED_HBM
        a.warnings.append("CPU run: costs are CPU costs and HBM is assumed 80 GiB per GPU (set fleet.hbm_bytes)")
    a.weights = a.shape.weight_bytes()
    a.g = fl.gpus_per_instance or next(k for k in (1, 2, 4, 8, 16, 32, 64) if a.weights <= 0.6 * k * a.hbm)
    if a.g > fl.gpus:
        raise UserError(f"fleet.gpus={fl.gpus} cannot hold one instance of {a.shape.name} ({a.g} GPUs needed)")
    I, O, c, n = a.I, a.O, a.c, a.n
    a.ctx_decode = float(np.mean(I + O / 2))
    step = lambda b: float(costs.decode_step_s(b, a.ctx_decode))  # noqa: E731
    a.B, a.b_limit = F.decode_batch(a.g * a.hbm, a.weights, a.ctx_decode * kvb, fl.reserve_fraction, None, step,
                                    int(fl.max_batch), a.g)
    if a.B < 1:
        raise UserError(f"no decode batch fits: {a.b_limit} (fleet.gpus_per_instance={a.g}, HBM "
                        f"{a.hbm / 2**30:.0f} GiB)")
    a.extrap = [e for e in (
        V.extrapolation("prefill new tokens", np.concatenate([I, n]), costs.prefill.ranges["n_new"]),
        V.extrapolation("prefill cached context", c, costs.prefill.ranges["n_ctx"]),
        V.extrapolation("decode batch", [a.B], costs.decode.ranges["batch"]),
        V.extrapolation("decode context", I + O, costs.decode.ranges["ctx"])) if e]
    a.warnings.extend(f"{e['quantity']}: workload spans {e['span'][0]:.0f}..{e['span'][1]:.0f}, measured "
                      f"{e['measured'][0]:.0f}..{e['measured'][1]:.0f}: extrapolated; measure closer sizes for a "
                      "firmer answer" for e in a.extrap if e["factor"] > 2)
    return a


class Pricer:
    """Every speedup of the model for a set of costs: per-request GPU-seconds of prefill (with the tiers' loads)
    and decode, turned into request rates of the fleet (best or fixed split, or colocated)."""

    def __init__(self, a: Analysis):
        self.a, self.tier_sims = a, {}

    def evaluate(self, cs: Costs, tier_scale: Optional[dict] = None, with_detail: bool = False,
                 verdict_only: bool = False) -> dict:
        """Every speedup of the model for costs ``cs`` (tier bandwidths x ``tier_scale``)."""
        a, fl = self.a, self.a.fl
        I, O, B = a.I, a.O, a.B
        if tier_scale:
            cs = copy.copy(cs)
            cs.tiers = {k: dataclasses.replace(
                t, gbps=t.gbps * tier_scale.get(k, 1.0),
                serial_gbps=None if t.serial_gbps is None else t.serial_gbps * tier_scale.get(k, 1.0))
                for k, t in cs.tiers.items()}
        d = float(np.mean(O * cs.decode_step_s(B, I + O / 2) / B))
        p0 = float(np.mean(cs.prefill_s(I, 0)))

        def rate(p: float) -> tuple[float, dict]:
            if fl.mode == "colocated":
                return F.colocated_rate(fl.gpus, p, d, fl.colocated_interference), {"mode": "colocated",
                                                                                      "gpus": fl.gpus}
            sp = F.best_split(fl.gpus, p, d) if fl.prefill_fraction is None else \
                F.fixed_split(fl.gpus, fl.prefill_fraction, p, d)
            return sp.requests_per_s, {"prefill_gpus": sp.prefill_gpus, "decode_gpus": sp.decode_gpus}

        def sim_prefill(sim) -> float:
            ht = sim.hit_tokens.astype(float)
            loads = tier_loads(cs, {t: ht[:, i] for i, t in enumerate(TIERS) if t == "hbm" or t in cs.tiers})
            return mean_prefill_s(cs, sim.miss_tokens, ht.sum(axis=1), loads, fl.overlap_load)

        base_rate, base_split = rate(p0)
        out = {"p0": p0, "d": d, "base_rate": base_rate, "amdahl": F.amdahl_bound(p0, d)}
        done: dict = {}  # id(sim) -> (prefill s, rate, split): a simulation shared by scenarios is priced once

        def priced(sim):
            if id(sim) not in done:
                ps = sim_prefill(sim)
                done[id(sim)] = (ps, *rate(ps))
            return done[id(sim)]

        for routing, sim in ({} if verdict_only else a.sims).items():
            ps, r, split = priced(sim)
            out[f"sim:{routing}"] = r / base_rate
            if with_detail:
                out[f"sim_detail:{routing}"] = (ps, split)
        for key, sim in self.tier_sims.items():
            out[f"tiers:{key}"] = priced(sim)[1] / base_rate
        out["prefill_share"] = F.prefill_share(p0, d)
        if with_detail:  # price: a simulation priced now (capacity curves make many short-lived ones: no id cache)
            out["rate"], out["base_split"] = rate, base_split
            out["price"] = lambda sim: (lambda ps: (ps, *rate(ps)))(sim_prefill(sim))
        return out


def simulate_caches(a: Analysis) -> Analysis:
    """The tiered cache at the fleet's capacities for every routing (simulated once: independent of the costs),
    then the verdict's scenario: the best routing with the HBM tier only, then + host DRAM, then + NVMe (or the
    what-if hit rate, in the simulated tiers' shares)."""
    fl, cfg = a.fl, a.cfg
    bt, kvb = int(fl.block_tokens), a.shape.kv_bytes_per_token
    hbm_free = max(a.g * a.hbm * (1 - fl.reserve_fraction) - a.weights, 0)
    a.block_bytes = bt * kvb
    a.caps = (max(1, int(fl.hbm_cache_fraction * hbm_free // a.block_bytes)),
              int(a.g * fl.host_bytes_per_gpu // a.block_bytes) if "host" in a.tiers else 0,
              int(a.g * fl.storage_bytes_per_gpu // a.block_bytes) if "storage" in a.tiers else 0)
    caps = a.caps
    a.sims = {routing: simulate(a.trace, bt, caps, int(fl.sim_instances), routing) for routing in fl.routings}
    if any(s.meta["effective_routing"] != r for r, s in a.sims.items()):
        fell = [r for r, s in a.sims.items() if s.meta["effective_routing"] != r]
        a.warnings.append(f"routing {', '.join(fell)}: the requests carry no session ids, so session routing fell "
                          "back to prefix routing")
    a.pricer = Pricer(a)
    first = a.pricer.evaluate(a.costs, with_detail=True)
    a.best_routing = max(fl.routings, key=lambda r: first[f"sim:{r}"])
    a.tier_caps = {"hbm": (caps[0], 0, 0)}
    if "host" in a.tiers:
        a.tier_caps["host"] = (caps[0], caps[1], 0)
    if "storage" in a.tiers:
        a.tier_caps["storage"] = caps
    full = a.sims[a.best_routing]
    used = full.hit_tokens.sum(axis=0)  # tokens hit per tier with every tier present

    def tier_sim(cp):
        # a tier that served no hit changes nothing when removed (its blocks were only ever demoted into it)
        if cp == caps or all(used[i] == 0 for i in range(3) if cp[i] != caps[i]):
            return full
        return simulate(a.trace, bt, cp, int(fl.sim_instances), a.best_routing)

    tier_sims = {k: tier_sim(cp) for k, cp in a.tier_caps.items()}
    if cfg.hit_rate is not None:  # what-if: every request reuses hit_rate of its input, from the tiers it had
        tier_sims = {k: WhatIf(sim, a.I, float(cfg.hit_rate)) for k, sim in tier_sims.items()}
    a.pricer.tier_sims = tier_sims
    a.pt = a.pricer.evaluate(a.costs, with_detail=True)
    return a


def price(a: Analysis) -> Analysis:
    """The result's figures at the measured costs: no reuse, reuse of every reusable token from each tier (with
    its break-even bandwidth), the hit-rate sweep, each routing's simulated cache."""
    cfg, fl, costs, pt = a.cfg, a.fl, a.costs, a.pt
    I, O, c, n = a.I, a.O, a.c, a.n
    rate, p0, d, base_rate = pt["rate"], pt["p0"], pt["d"], pt["base_rate"]
    out_tok, in_tok = float(np.mean(O)), float(np.mean(I))
    result = {
        "run": str(a.run_dir), "device": a.device, "gpu": a.gpu.get("name") or a.device,
        "model": a.shape.name, "kv_bytes_per_token": a.shape.kv_bytes_per_token,
        "cost_unit": "CPU-s" if a.device == "cpu" else "GPU-s",
        "workload": ({"label": a.label, "name": a.label, "kind": "trace", "trace": str(cfg.trace),
                      "requests": len(a.trace), "from": a.source} if cfg.trace else
                     {"label": a.label, "name": a.w.name, "kind": "preset", "source": cfg.workload.source,
                      "requests": len(a.trace), "from": a.source, "preset_summary": a.w.summary()}),
        "fits": {"prefill": costs.prefill.as_dict(), "decode": costs.decode.as_dict()},
        "kernels": {"prefill": costs.prefill.kernel, "decode": costs.decode.kernel},
        "load_cost": costs.load_cost_used(),
        "tiers": {k: {"gbps": t.gbps, "latency_s": t.latency_s, "source": t.source,
                      "emulated": a.device == "cpu"} for k, t in a.tiers.items()},
        "fleet": {**OmegaConf.to_container(fl, resolve=True), "gpus_per_instance": a.g, "hbm_bytes": a.hbm,
                  "decode_batch": a.B, "decode_batch_limited_by": a.b_limit, "weight_bytes": a.weights},
        "reuse": {}, "simulated": {}, "sweep": {"hit_rate": HIT_GRID.tolist()}, "warnings": a.warnings,
    }
    result["workload"].update({"ideal_hit_rate": float(c.sum() / I.sum()), "hit_rate_override": cfg.hit_rate,
                               "mean_input_tokens": in_tok, "mean_output_tokens": out_tok})
    result["baseline"] = {"prefill_gpu_s": p0, "decode_gpu_s": d, "prefill_share": F.prefill_share(p0, d),
                          "amdahl_bound": F.amdahl_bound(p0, d), "requests_per_s": base_rate, **pt["base_split"],
                          "output_tokens_per_s": base_rate * out_tok, "input_tokens_per_s": base_rate * in_tok}
    for tier in ("hbm", *a.tiers):
        px = mean_prefill_s(costs, n, c, costs.load_split(tier, c), fl.overlap_load)
        r, split = rate(px)
        be = break_even_gbps(costs, n, c, 0.0 if tier == "hbm" else a.tiers[tier].latency_s)
        result["reuse"][tier] = {
            "prefill_gpu_s": px, "speedup": r / base_rate, "speedup_continuous": F.speedup(p0, px, d),
            "requests_per_s": r, **split, "output_tokens_per_s": r * out_tok,
            "break_even_gbps": be if tier != "hbm" else None,
            "measured_gbps": a.tiers[tier].gbps if tier != "hbm" else None,
            "pays": (a.tiers[tier].gbps > be) if tier != "hbm" else True,
        }
        sweep = []
        for h in HIT_GRID:
            ch = h * I
            ph = mean_prefill_s(costs, I - ch, ch, costs.load_split(tier, ch), fl.overlap_load)
            sweep.append(F.speedup(p0, ph, d))
        result["sweep"][tier] = sweep
    for routing, sim in a.sims.items():
        ps, split = pt[f"sim_detail:{routing}"]
        result["simulated"][routing] = {**sim.rates(), "speedup": pt[f"sim:{routing}"], "prefill_gpu_s": ps,
                                        "effective_routing": sim.meta["effective_routing"], **split,
                                        "capacity_blocks_per_instance": list(a.caps), "instances": fl.sim_instances}
    a.result = result
    return a


def verdict(a: Analysis) -> Analysis:
    """The verdict: the speedup's interval from refitting the costs on resampled points (each jittered by its noise,
    tier bandwidths by theirs), the outcome against the claim, what would decide it, every caveat, the seed case."""
    cfg, fl, costs, pt, df = a.cfg, a.fl, a.costs, a.pt, a.df
    vc = cfg.verdict
    kvb = a.shape.kv_bytes_per_token
    tier_noise = {k: _tier_noise(df, t) for k, t in a.tiers.items()}
    pp, dp = points(df, *PREFILL, kernel=a.kern), points(df, *DECODE, kernel=a.kern)

    def resampled(rng, rs_prefill: bool, rs_decode: bool) -> dict:
        cs = Costs(fit_points(pp, *V.resample(pp, rng)) if rs_prefill else costs.prefill,
                   fit_points(dp, *V.resample(dp, rng)) if rs_decode else costs.decode, a.tiers, kvb,
                   layers=a.shape.layers)
        cs.exposure = costs.exposure
        scale = {k: max(0.05, 1 + s * rng.standard_normal()) for k, s in tier_noise.items()}
        e = a.pricer.evaluate(cs, scale, verdict_only=True)
        return {k: v for k, v in e.items() if isinstance(v, float)}

    n_boot, lvl = int(vc.bootstrap), float(vc.interval)
    boot = V.bootstrap(resampled, n_boot, int(vc.seed))
    key = f"tiers:{list(a.tier_caps)[-1]}"
    lo, hi = V.interval(boot[key], lvl)
    point = pt[key]
    spread = {}  # which fit's uncertainty moves the verdict most: resample it alone
    for name, only in (("layer_prefill", (True, False)), ("layer_decode", (False, True))):
        part = V.bootstrap(resampled, max(20, n_boot // 4), int(vc.seed) + 1, *only)[key]
        a_lo, a_hi = V.interval(part, lvl)
        spread[name] = float(a_hi - a_lo) if math.isfinite(a_hi - a_lo) else 0.0
    widest = max(spread, key=spread.get)
    outcome, decide_by = V.decide(point, lo, hi, float(vc.claim), a.extrap, float(vc.max_extrapolation), widest)
    reasons = []
    if a.device == "cpu":
        reasons.append("CPU run: CPU costs of a small preset, host memcpy for the host tier, not a GPU's")
    reasons += [f"{e['quantity']} extrapolated {e['factor']:.3g}x beyond the measured {e['measured'][0]:.0f}.."
                f"{e['measured'][1]:.0f} (workload {e['workload'][0]:.0f}..{e['workload'][1]:.0f})"
                for e in a.extrap if e["factor"] > 1.5]
    reasons += [f"{f.name} fit residual {f.rel_rms:.0%}" for f in (costs.prefill, costs.decode) if f.rel_rms > 0.1]
    if costs.exposure is not None and costs.exposure.rel_rms > 0.1:
        reasons.append(f"layer-wise load overlap fit residual {costs.exposure.rel_rms:.0%}")
    if "storage" not in a.tiers:
        reasons.append("no NVMe tier measured (storage records missing)")
    if not a.gpu.get("memory_bytes") and not fl.hbm_bytes:
        reasons.append("HBM assumed 80 GiB per GPU")
    reasons += _validation_reasons(df, a.run_dir)
    reasons += _suspect_reasons(a.run_dir)
    if a.state:
        reasons.insert(0, f"incomplete run ({a.state}): only the points its records hold")
    tier_rates = {k: {"speedup": pt[f"tiers:{k}"], **{kk: vv for kk, vv in sim.rates().items()}}
                  for k, sim in a.pricer.tier_sims.items()}
    a.result["verdict"] = {
        "claim": float(vc.claim), "outcome": outcome,
        "speedup": {"point": point, "low": lo, "high": hi},
        "interval": float(vc.interval), "bootstrap": int(vc.bootstrap),
        "amdahl_bound": {"point": pt["amdahl"], **dict(zip(("low", "high"), V.interval(boot["amdahl"],
                                                                                       float(vc.interval))))},
        "routing": a.best_routing, "tiers": tier_rates,
        "seed_case": seed_case(fl, pt, point, lo, hi, boot, key, float(vc.interval),
                               tier_rates[list(a.tier_caps)[-1]]["hit_rate"]),
        "extrapolation": a.extrap, "decide_by": decide_by, "reasons": reasons,
        "uncertainty_by_fit": spread,
        "scenario": (f"simulated {a.best_routing} routing, capacity-limited tiers {' + '.join(a.tier_caps)} "
                     "(per-request hits from the cache simulation)") if cfg.hit_rate is None else
                    (f"what-if hit_rate={cfg.hit_rate:g}: every request reuses {cfg.hit_rate:.0%} of its input, "
                     f"served by {' + '.join(a.tier_caps)} in the shares the {a.best_routing}-routed simulation "
                     "found"),
        "what_if_hit_rate": cfg.hit_rate,
    }
    return a


def capacity(a: Analysis) -> Analysis:
    """Capacity curves per tier (and their knees) and how long KV must persist, on the verdict's routing."""
    fl, result = a.fl, a.result
    result["capacity"] = capacity_curves(a.trace, int(fl.block_tokens), a.block_bytes, a.g, a.caps,
                                         a.sims[a.best_routing], a.best_routing, fl, a.pt["price"],
                                         a.pt["base_rate"], a.tiers)
    result["persistence"] = reuse_times(a.trace, a.sims[a.best_routing].instance, int(fl.sim_instances))
    result["verdict"]["capacity"] = {k: v["knee"] for k, v in result["capacity"]["tiers"].items()}
    result["verdict"]["persistence_minutes"] = dict(zip(("p50", "p90", "p99"), result["persistence"]["minutes"]))
    result["verdict"]["sentence"] = V.sentence(result)
    result["verdict_text"] = result["verdict"]["sentence"]
    return a


def goodput(a: Analysis) -> Analysis:
    """Goodput at the latency SLO per configuration, and the verdict at the SLO (skipped without targets)."""
    cfg, fl, costs, result = a.cfg, a.fl, a.costs, a.result
    slo = slo_targets(cfg)
    if slo["ttft_ms"] or slo["tpot_ms"]:
        prefill_by_config = {"none": costs.prefill_s(a.I, 0),
                             **{k: request_prefill_s(costs, sim, fl.overlap_load)
                                for k, sim in a.pricer.tier_sims.items()}}
        result["goodput"] = goodput_at_slo(a.trace.timestamp_ms if cfg.trace else None, a.I, a.O, prefill_by_config,
                                           costs, fl, slo, a.g, a.hbm, a.weights, a.shape.kv_bytes_per_token,
                                           a.ctx_decode, a.B, a.pt, a.warnings)
        result["verdict"]["slo"] = slo_verdict(result["goodput"], a.pt, a.pt["base_rate"])
    else:
        result["goodput"] = {"targets": slo, "skipped": "no TTFT or TPOT target (fleet.ttft_ms / fleet.tpot_ms)"}
    return a


def sparse(a: Analysis) -> Analysis:
    """The sparse-decode mode (bench.model.warm): decode that fetches each step's top-k rows from the warm tier at
    the run's measured fit, per k and tier, beside the dense decode of the same fleet; skipped with why when the
    run has no warm_fetch fit."""
    from bench.model.warm import sparse_decode

    a.result["sparse_decode"] = sparse_decode(a.df, a.costs, a.shape, a.fl, a.cfg.sparse, a.hbm, a.weights, a.g,
                                              a.ctx_decode, a.B)
    return a


def finish(a: Analysis) -> dict:
    """The verdict's headline, details and sentence (built from the result's fields), and the variant's name."""
    result = a.result
    result["verdict"]["headline"] = V.headline(result)
    result["verdict"]["details"] = V.details(result)
    result["verdict"]["sentence"] = V.sentence(result)
    result["verdict_text"] = result["verdict"]["sentence"]
    result["variant"] = variant_name(a.cfg, a.label)
    return result


STEPS = (fit, workload, fleet, simulate_caches, price, verdict, capacity, goodput, sparse)


def analyze(run_path, cfg) -> dict:
    """The whole analysis of the run at ``run_path`` with the analysis config ``cfg``: every step in order."""
    a = load(run_path, cfg)
    for step in STEPS:
        a = step(a)
    return finish(a)


def write_model_json(result: dict, out) -> Path:
    """model.json of a result into ``out`` (the model's own output; its plots are bench.report.model_plots)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


class WhatIf:
    """A cache result for a what-if hit rate (``hit_rate=``): every request reuses ``rate`` of its input (whole
    tokens), its hits split among the tiers in the shares the simulation of the same tiers (``sim``) found; the
    verdict, goodput and tiers are priced on it, so a what-if changes the answer. Same fields as a simulation's."""

    def __init__(self, sim, input_tokens, rate: float):
        ht = sim.hit_tokens.astype(float)
        total = ht.sum()
        share = ht.sum(axis=0) / total if total > 0 else np.array([1.0, 0.0, 0.0])
        reused = np.floor(rate * np.asarray(input_tokens, float))
        self.hit_tokens = reused[:, None] * share[None, :]
        self.miss_tokens = np.asarray(input_tokens, float) - reused
        self.meta = {**sim.meta, "what_if_hit_rate": rate}
        self._input = float(np.sum(input_tokens))

    def rates(self) -> dict:
        hits = self.hit_tokens.sum(axis=0)
        out = {"hit_rate": float(hits.sum() / self._input) if self._input else 0.0}
        out.update({f"hit_rate_{t}": float(h / self._input) if self._input else 0.0 for t, h in zip(TIERS, hits)})
        return out


def seed_case(fl, pt: dict, point: float, lo: float, hi: float, boot: dict, key: str, level: float,
              hit_rate: float) -> dict:
    """The seed's case, labelled: its arithmetic as written (64 GPUs balanced 50:50, prefill removed: 2x, Amdahl
    1 / (1 - 0.5)), computed by the fleet model itself, then the same arithmetic on the measured costs: the measured
    prefill share, the balanced split it implies, its Amdahl bound, and what the workload's hit rate reaches of
    it (the verdict's speedup and its share of the bound's gain), each with its interval."""
    base = F.best_split(64, 1.0, 1.0)  # equal prefill and decode work per request: the balanced split is 32:32
    gone = F.best_split(64, 0.0, 1.0)  # reuse removes prefill: every GPU decodes
    written = {"gpus": 64, "prefill_gpus": base.prefill_gpus, "decode_gpus": base.decode_gpus, "prefill_share": 0.5,
               "speedup": gone.requests_per_s / base.requests_per_s, "amdahl_bound": F.amdahl_bound(1.0, 1.0),
               "description": "the seed's arithmetic as written: 64 GPUs split 50:50 between prefill and decode, "
                              "each pool busy (prefill is half the GPU time); KV reuse removes prefill and its 32 "
                              "GPUs move to decode: 2x, and no more (Amdahl: 1 / (1 - 0.5))"}
    share = pt["prefill_share"]
    n_pre = max(1, min(fl.gpus - 1, round(fl.gpus * share)))
    amd = [a for a in boot["amdahl"]]
    gain = [(s - 1) / (a - 1) if a > 1 else np.nan for s, a in zip(boot[key], amd)]
    bound = pt["amdahl"]
    measured = {
        "prefill_share": {"point": share, **dict(zip(("low", "high"), V.interval(boot["prefill_share"], level)))},
        "balanced_split": {"gpus": int(fl.gpus), "prefill_gpus": int(n_pre), "decode_gpus": int(fl.gpus - n_pre)},
        "amdahl_bound": {"point": bound, **dict(zip(("low", "high"), V.interval(amd, level)))},
        "speedup": {"point": point, "low": lo, "high": hi}, "hit_rate": hit_rate,
        "share_of_bound_gain": {"point": (point - 1) / (bound - 1) if bound > 1 else math.nan,
                                **dict(zip(("low", "high"), V.interval(gain, level)))},
        "description": f"the same arithmetic on the measured costs: prefill is this share of the GPU time without "
                       f"reuse, so a balanced {fl.gpus}-GPU fleet splits {n_pre}:{fl.gpus - n_pre}; removing prefill "
                       "gives at most the Amdahl bound, and the workload's hit rate reaches the verdict's speedup"}
    return {"as_written": written, "measured": measured, "speedup": point,
            "description": "the seed's case: its arithmetic as written, then on these costs"}


def request_prefill_s(costs: Costs, sim, overlap: bool) -> np.ndarray:
    """Prefill seconds (one GPU) of each request of a cache simulation: its misses after its hits, with its loads."""
    ht = sim.hit_tokens.astype(float)
    over, serial = tier_loads(costs, {t: ht[:, i] for i, t in enumerate(TIERS) if t == "hbm" or t in costs.tiers})
    return np.broadcast_to(costs.prefill_with_load_s(sim.miss_tokens, ht.sum(axis=1), over, overlap,
                                                     serial_s=serial), ht.shape[:1]).astype(float)


def slo_targets(cfg) -> dict:
    """TTFT/TPOT targets (ms): fleet.* when set, else the workload preset's; 0 means no target."""
    fl, w = cfg.fleet, cfg.workload
    out = {"attainment": float(fl.slo_attainment)}
    for key in ("ttft_ms", "tpot_ms"):
        v = fl[key] if fl[key] is not None else w.get(key)
        out[key] = float(v) if v else None
        out[f"{key}_from"] = (f"fleet.{key}" if fl[key] is not None else
                              (f"workload {w.name}: {w.get('slo_source') or 'preset'}" if v else "none"))
    return out


CONFIG_NAMES = {"none": "no reuse", "hbm": "HBM-only reuse", "host": "HBM + host DRAM reuse",
                "storage": "HBM + host DRAM + NVMe reuse"}


def goodput_at_slo(timestamps_ms, I, O, prefill_by_config: dict, costs: Costs, fl, slo: dict, g: int, hbm, weights, kvb,
                   ctx_decode: float, B: int, pt: dict, warnings: list) -> dict:
    """Goodput per configuration (no reuse, HBM only, + host, + NVMe) at the SLO, from a discrete-event replay
    (bench.model.goodput) of a uniform sample of the requests (fleet.slo_requests), arriving at a trace's
    timestamps (``timestamps_ms``, rescaled per rate) or as a Poisson process (generated sessions). The decode
    batch is the largest HBM allows whose step meets the TPOT target at the mean decode context."""
    import time

    from bench.model import goodput as G

    t0 = time.perf_counter()
    tpot_s = slo["tpot_ms"] / 1e3 if slo["tpot_ms"] else None
    step = lambda b: float(costs.decode_step_s(b, ctx_decode))  # noqa: E731
    b_slo, b_why = F.decode_batch(g * hbm, weights, ctx_decode * kvb, fl.reserve_fraction, tpot_s, step,
                                  int(fl.max_batch), g)
    n = len(I)
    rng = np.random.default_rng(int(fl.seed) + 7)
    keep = np.arange(n) if not fl.slo_requests or n <= int(fl.slo_requests) else \
        np.sort(rng.choice(n, int(fl.slo_requests), replace=False))
    reqs = G.Requests.build(I[keep], O[keep], None if timestamps_ms is None else
                            np.asarray(timestamps_ms, float)[keep] / 1e3, seed=int(fl.seed))
    out = {"targets": slo, "decode_batch": int(b_slo), "decode_batch_limited_by": b_why,
           "requests_replayed": int(keep.size), "requests": int(n), "arrivals": reqs.arrivals_from,
           "gpus": int(fl.gpus), "gpus_per_instance": g, "mode": fl.mode, "configs": {}}
    if b_slo < 1:
        out["skipped"] = f"no decode batch meets the TPOT target: {b_why}"
        return out
    pool = G.Pool(int(fl.gpus), g, fl.mode, int(b_slo), tuple(costs.decode.coef), slo["ttft_ms"] and
                  slo["ttft_ms"] / 1e3, tpot_s, float(fl.slo_attainment), fl.prefill_fraction,
                  float(fl.colocated_interference))
    if pool.instances < (1 if fl.mode == "colocated" else 2):
        out["skipped"] = (f"{fl.gpus} GPUs make {pool.instances} instance(s) of {g}: disaggregated serving needs a "
                          "prefill and a decode instance")
        return out
    o_keep = O[keep]
    d_gpu_s = float(np.mean(o_keep * costs.decode_step_s(b_slo, I[keep] + o_keep / 2) / b_slo))
    done: dict = {}  # configurations with the same per-request prefill (a tier that served no hit) share a search
    for name, pf in prefill_by_config.items():
        pf = np.asarray(pf, float)[keep]
        key = hashlib.sha1(pf.tobytes()).hexdigest()
        if key not in done:
            done[key] = G.search(name, G.Replay(reqs, pf, pool), float(np.mean(pf)), d_gpu_s).as_dict(int(fl.gpus))
        out["configs"][name] = {**done[key], "config": name, "label": CONFIG_NAMES[name]}
    base = out["configs"]["none"]["goodput_rps"]
    for c in out["configs"].values():
        c["speedup"] = c["goodput_rps"] / base if base > 0 else (math.inf if c["goodput_rps"] > 0 else math.nan)
    if slo["ttft_ms"]:
        hits = HIT_GRID
        tiers = ["hbm"] + [t for t in ("host", "storage") if t in costs.tiers]

        def at(tier):
            def fn(h):
                c = np.floor(h * I[keep])
                lo, se = costs.load_split(tier, c)
                return np.broadcast_to(costs.prefill_with_load_s(I[keep] - c, c, lo, fl.overlap_load, serial_s=se),
                                       c.shape)
            return fn

        br = G.ttft_breaks({t: at(t) for t in tiers}, hits, g, slo["ttft_ms"] / 1e3, float(fl.slo_attainment))
        out["ttft_by_hit_rate"] = {"hit_rate": hits.tolist(), **br}
    out["seconds"] = time.perf_counter() - t0
    if out["seconds"] > 60:
        warnings.append(f"goodput search took {out['seconds']:.0f} s: lower fleet.slo_requests to speed it up")
    return out


def slo_verdict(gp: dict, pt: dict, base_rate: float) -> dict:
    """The speedup at the SLO of the verdict's configuration (the last tier), beside the unconstrained one, and
    the tier whose loads break TTFT first."""
    if gp.get("skipped") or not gp.get("configs"):
        return {"skipped": gp.get("skipped", "no configuration replayed")}
    cfgs = gp["configs"]
    last = list(cfgs)[-1]
    v = {"config": last, "speedup": cfgs[last]["speedup"], "unconstrained": pt[f"tiers:{last}"],
         "goodput_rps": cfgs[last]["goodput_rps"], "base_goodput_rps": cfgs["none"]["goodput_rps"],
         "capacity_rps": cfgs[last]["capacity_rps"], "targets": gp["targets"],
         "ttft_miss": cfgs[last]["ttft_miss"], "tpot_miss": cfgs[last]["tpot_miss"],
         "base_reason": cfgs["none"]["reason"], "reason": cfgs[last]["reason"]}
    br = gp.get("ttft_by_hit_rate")
    if br:
        hbm = br["hbm"]["ttft_quantile_s"]
        t_s = gp["targets"]["ttft_ms"] / 1e3
        first = None
        for tier in ("host", "storage"):
            if tier not in br:
                continue
            at = next((h for h, tq, hq in zip(br["hit_rate"], br[tier]["ttft_quantile_s"], hbm)
                       if tq > t_s >= hq), None)  # its loads, not the prefill, push TTFT over the target
            br[tier]["breaks_at_hit_rate"] = at
            if at is not None and (first is None or at < first[1]):
                first = (tier, at)
        v["ttft_breaks_first"] = None if first is None else {"tier": first[0], "hit_rate": first[1]}
        v["ttft_unloaded_misses_without_reuse"] = hbm[0] > t_s
    return v


def _tier_noise(df, tier: Tier) -> float:
    """Relative standard error of the record a tier's bandwidth comes from (0 when unknown)."""
    bench = tier.source.split()[0]
    d = df[(df["benchmark"] == bench) & (df["status"] == "ok")]
    if d.empty or "metric.gbps" not in d:
        return 0.0
    rec = d.loc[(d["metric.gbps"].astype(float) - tier.gbps).abs().idxmin()]
    return float(V.point_noise(rec.to_frame().T)[0])


COST_BENCHMARKS = ("layer_prefill", "layer_decode", "paged_onload", "file_read", "gpu_file_read_kvikio",
                   "gpu_file_read_bounce", "layerwise_load", "h2d_pinned")


def _suspect_reasons(run_dir) -> list[str]:
    """Points the costs come from that were timed under contention or fell implausibly in their sweep."""
    from bench.core.store import RECORDS, read_records, suspect_points

    sus = suspect_points(read_records(Path(run_dir) / RECORDS))
    used = {k: v for k, v in sus.items() if k.split(" ", 1)[0] in COST_BENCHMARKS}
    if not used:
        return []
    contended = sum(1 for v in used.values() if v.startswith("timed under contention"))
    return [f"{len(used)} measured point(s) the costs use are suspect ({contended} timed under contention; e.g. "
            f"{next(iter(used))}: {next(iter(used.values()))})"]


def _validation_reasons(df, run_dir=None) -> list[str]:
    """The end-to-end replay's per-tier speedup prediction errors (bench.model.replay_check, from the run's own
    costs), when the run has them (and, on a GPU, when its decode ran eagerly: host-bound, so its time is
    Python's)."""
    if run_dir is None or df.empty or not (df["benchmark"] == "e2e_agentic_replay").any():
        return []
    from bench.core.store import RECORDS, read_records
    from bench.model.replay_check import eager_decode, replay_predictions

    recs = read_records(Path(run_dir) / RECORDS)
    pred = replay_predictions(df, recs)
    errs = {m: p["speedup_prediction_error"] for m, p in pred.items()
            if p.get("speedup_prediction_error") is not None and p["speedup_prediction_error"] == p["speedup_prediction_error"]}
    if not errs:
        return []
    eager = sorted({how for r in recs
                    if r["benchmark"] == "e2e_agentic_replay" and r["status"] == "ok" and (how := eager_decode(r))})
    out = ["end-to-end replay vs this model's prediction: " + ", ".join(f"{m} {e:+.0%}" for m, e in errs.items())]
    return out + [f"the replay decoded {e}" for e in eager]


# capacity grids, per GPU: host DRAM and NVMe from none to far beyond a node's; HBM for KV up to 8x the configured
HOST_GRID_GIB = (0, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
NVME_GRID_TB = (0, 0.125, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


def capacity_curves(trace, bt: int, block_bytes: int, g: int, caps: tuple, sim, routing: str, fl, price,
                    base_rate: float, tiers: dict) -> dict:
    """Hit rate per tier, throughput and speedup as each tier's capacity per GPU grows (the others as configured;
    NVMe with the configured host DRAM), from one pass of stack distances over the best routing's replay (exact;
    ``fleet.curve_sample_rate`` < 1 replays that share of the instances, with its standard error). The knee of a
    tier: the capacity after which doubling it adds less than ``fleet.knee_gain`` of throughput."""
    import time

    t0 = time.perf_counter()
    rate = float(fl.curve_sample_rate) if fl.curve_sample_rate else 1.0
    cv = Curves(trace, bt, sim.instance, int(fl.sim_instances), routing, rate=rate)
    gib = 2 ** 30
    hbm_max = int(caps[0] / max(float(fl.hbm_cache_fraction), 1e-9))  # every free byte of HBM holding KV
    grids = {"hbm": sorted({max(1, min(hbm_max, int(caps[0] * f))) for f in (0.125, 0.25, 0.5, 1, 2, 4, 8)}),
             "host": [int(g * x * gib // block_bytes) for x in HOST_GRID_GIB],
             "storage": [int(g * x * 1e12 // block_bytes) for x in NVME_GRID_TB]}
    out: dict = {"routing": routing, "per_gpu_unit": {"hbm": "GB", "host": "GiB", "storage": "TB"}, "tiers": {},
                 "exact": not cv.sampled, "instances_replayed": len(cv.kept_instances),
                 "instances": int(fl.sim_instances)}
    for tier, grid in grids.items():
        if tier != "hbm" and tier not in tiers:
            continue
        rows = []
        for c in grid:
            cp = (c, 0, 0) if tier == "hbm" else ((caps[0], c, 0) if tier == "host" else (caps[0], caps[1], c))
            res = cv.at(cp)
            r = res.rates()
            _, rps, _ = price(res)
            row = {"blocks_per_instance": int(c), "per_gpu": c * block_bytes / g / (gib if tier == "host" else 1e12
                                                                                   if tier == "storage" else 1e9),
                   "hit_rate": r["hit_rate"], "hit_rate_hbm": r["hit_rate_hbm"], "hit_rate_host": r["hit_rate_host"],
                   "hit_rate_storage": r["hit_rate_storage"], "requests_per_s": rps, "speedup": rps / base_rate}
            if cv.sampled:
                row["stderr"] = cv.stderr(res)
            rows.append(row)
        out["tiers"][tier] = {"points": rows, "knee": _knee(rows, float(fl.knee_gain), out["per_gpu_unit"][tier])}
    out["seconds"] = time.perf_counter() - t0
    return out


def _knee(rows: list, gain: float, unit: str) -> dict:
    """The capacity after which every doubling (each next grid point) adds less than ``gain`` of throughput; and
    whether the tier pays at all (throughput there above the first grid point's: no tier or the least of it)."""
    knee = None
    for i in range(len(rows) - 1):
        if rows[i]["per_gpu"] > 0 and all(rows[j + 1]["requests_per_s"] < rows[j]["requests_per_s"] * (1 + gain)
                                          for j in range(i, len(rows) - 1)):
            knee = i
            break
    if knee is None:
        last = rows[-1]
        return {"per_gpu": None, "unit": unit, "speedup": last["speedup"], "hit_rate": last["hit_rate"],
                "gain_of_doubling": None, "pays": True,
                "note": f"still gains {gain:.0%} or more per doubling at {last['per_gpu']:g} {unit} per GPU"}
    a = rows[knee]
    nxt = rows[knee + 1]
    pays = a["requests_per_s"] > rows[0]["requests_per_s"] * (1 + 1e-9)
    return {"per_gpu": a["per_gpu"], "unit": unit, "speedup": a["speedup"], "hit_rate": a["hit_rate"],
            "gain_of_doubling": nxt["requests_per_s"] / a["requests_per_s"] - 1, "pays": bool(pays),
            "without": rows[0]["speedup"]}
