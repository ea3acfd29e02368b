"""The throughput model: measured costs of a run + a workload + a fleet -> speedup of KV reuse per tier, the
Amdahl bound, break-even bandwidths, simulated tiered-cache hit rates per routing, and a verdict on "up to 2x".

The analysis is a sequence of named steps (:data:`STEPS`), each taking the frozen results of earlier ones and
returning its own (bench.model.steps): ``load`` (the run: RunInputs), ``fit`` (costs: Fitted), ``workload``
(Requests), ``fleet`` (FleetSizing), ``simulate_caches`` (CacheScenario, with the pricing at the measured costs);
then the model.json body: ``price`` creates it, ``handoff`` (each request's prefill and exposed handoff seconds per
configuration: Latencies; the disaggregated handoff's figures), ``verdict`` (bootstrap interval, outcome, caveats,
seed case, disaggregated vs colocated),
``capacity`` (curves, knees, persistence), ``goodput`` (at the SLO) and ``sparse`` (the warm tier's sparse decode)
add to it, and ``finish`` words it (bench.model.prose).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
from omegaconf import OmegaConf

from bench.core.config import FleetConfig, SparseConfig
from bench.core.errors import UserError
from bench.core.units import sig
from bench.core.stats import bootstrap, interval, point_noise, resample
from bench.core.threads import in_threads
from bench.core.store import load as load_records, read_manifest, run_dirs, run_state
from bench.llm.shapes import ModelShape
from bench.model import disaggregation as D
from bench.model import fleet as F
from bench.model import prose
from bench.model import verdict as V
from bench.model.cachesim import reuse_times, simulate
from bench.model.capacity import capacity_curves
from bench.model.costs import DECODE, PREFILL, Costs, Tier, fit_decode, fit_exposure, fit_points, fit_prefill, \
    host_tier, points, storage_tier
from bench.model.handoff import decode_cache_fraction, decode_kept_tokens, handoff_cost, link_load, moved_tokens
from bench.model.inputs import COST_BENCHMARKS, missing_inputs, supply
from bench.model.pricing import HIT_GRID, Pricer, WhatIf, break_even_gbps, mean_prefill_s
from bench.model.slo import goodput_at_slo, slo_targets, slo_verdict
from bench.model.steps import Analysis, CacheScenario, FleetSizing, Fitted, Latencies, Requests, RunInputs
from bench.model.sessions import summarize
from bench.model.traces import read_requests
from bench.model.traces.table import SERVING, to_trace
from bench.model.workload import Workload, generate_trace

CPU_ASSUMED_HBM = 80 * 2**30
DEFAULT_BLOCK_TOKENS = 512  # fleet.block_tokens' default: a trace brings its own block size


def load_run(path):
    dirs = run_dirs([path])
    if len(dirs) != 1:
        raise UserError(f"{path} holds {len(dirs)} runs; name one run directory (e.g. {dirs[0]})")
    man = read_manifest(dirs[0])
    if not man.get("config", {}).get("model"):
        raise UserError(f"{dirs[0]} has no manifest with a model preset; is it a tierbench run directory?")
    return dirs[0], man, load_records(dirs[0])


def load_exposure(df, load_cost: str):
    """The measured layer-wise exposure per fleet.load_cost: auto (when the run has it), measured, bandwidth."""
    if load_cost == "bandwidth":
        return None
    exposure = fit_exposure(df)
    if exposure is None:
        if load_cost == "measured":
            raise UserError("fleet.load_cost=measured but the run has no layerwise_load records: run `python -m bench "
                            f"run {supply('layerwise_load')}` with the same model, or use fleet.load_cost=auto|bandwidth")
        return None
    return exposure  # a noisy fit (residual > 10%) is one of the verdict's caveats


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


def load(run_path, cfg) -> Analysis:
    """The run, its model, and what the model needs from it (one line per missing input, else the analysis)."""
    run_dir, man, df = load_run(run_path)
    run_model = man["config"]["model"]
    if cfg.model is not None and cfg.model.name != run_model["name"]:
        raise UserError(f"model={cfg.model.name} but {run_dir} measured {run_model['name']}: the costs belong to "
                        f"that model; run `python -m bench run model={cfg.model.name}` for this one")
    shape = ModelShape.from_cfg(run_model)
    device = man.get("device") or "cpu"
    state = run_state(man, len(df))
    usable = df[df["implausible"].isna()] if not df.empty else df
    missing = missing_inputs(usable, shape.name, device)
    if missing:
        raise UserError(f"{run_dir} lacks what the model needs: " + "; ".join(missing) +
                        (f" (the run is {state})" if state else ""))
    warnings = ()
    if not df.empty and df["implausible"].notna().any():  # above the physical peak: never priced
        bad = df[df["implausible"].notna()]
        warnings = (f"{len(bad)} point(s) above the physical peak left out of every fit (e.g. {bad['benchmark'].iloc[0]}:"
                    f" {bad['implausible'].iloc[0]})",)
        df = df[df["implausible"].isna()]
    # an incomplete run is the verdict's first caveat (caveats): not repeated as a warning
    return Analysis(RunInputs(cfg, run_dir, man, df, shape, device, (man.get("hardware") or {}).get("gpu") or {},
                              state, warnings))


def fit(a: Analysis) -> Analysis:
    """The measured costs: prefill and decode fits (one attention kernel), the host and storage tiers, the
    layer-wise load exposure."""
    run, fl = a.inputs, a.fl
    kvb, bt, warnings = run.shape.kv_bytes_per_token, int(fl.block_tokens), []
    host = host_tier(run.records, bt)
    tiers = {"host": host}
    st = storage_tier(run.records, bt * kvb, host)
    if st is None:
        warnings.append("no storage records in this run: storage tier left out (run `python -m bench run "
                        f"{supply('file_read')}` to include it)")
    else:
        tiers["storage"] = st
    kern = run.cfg.get("attention_kernel")
    prefill, decode = fit_prefill(run.records, kern), fit_decode(run.records, kern)
    exposure = load_exposure(run.records, fl.load_cost)
    costs = Costs(prefill, decode, tiers, kvb, exposure=exposure, layers=run.shape.layers)
    for f in (prefill, decode):  # a residual over 10% is one of the verdict's caveats
        warnings.extend(f"{f.name}: {n}" for n in f.notes)
    handoff, hw = handoff_cost(run.records, run.shape, fl)
    if fl.mode == "disaggregated":
        warnings.extend(hw)
    return dataclasses.replace(a, fitted=Fitted(costs, tiers, kern, tuple(warnings), handoff))


def workload(a: Analysis) -> Analysis:
    """The requests (a trace, or generated sessions of the preset), their lengths and the reuse they allow."""
    cfg, fl = a.cfg, a.fl
    bt = int(fl.block_tokens)
    preset = Workload.from_cfg(cfg.workload)
    summary = None
    if cfg.trace:
        table = read_requests([cfg.trace], cfg.get("trace_format"))
        trace = to_trace(table, cfg.get("users"))
        if bt != DEFAULT_BLOCK_TOKENS:  # fleet.block_tokens set: it must be the trace's (hashed ids cannot re-block)
            check_trace_blocks(trace, bt, cfg.trace)
        bt = table.block_tokens
        summary = summarize(table, sessions=False)  # per conversation: `bench workload --json` has them
        summary.pop("sessions")
        label = Path(cfg.trace).stem or Path(cfg.trace).name
        users = f", {cfg.users} concurrent users" if cfg.get("users") and table.source not in SERVING else ""
        source = (f"trace {cfg.trace} ({table.source}, {len(table.names)} conversations, {len(table)} requests, "
                  f"{bt}-token blocks{users})")
    else:
        trace = generate_trace(preset, int(fl.sessions), bt, int(fl.seed))
        label, source = preset.name, f"{fl.sessions} synthetic sessions of preset {preset.name}"
    ideal = simulate(trace, bt, (trace.n_unique + 1, 0, 0))  # infinite HBM: the reuse the workload allows
    input_tokens = trace.input_length.astype(float)
    reused = ideal.hit_tokens.sum(axis=1).astype(float)
    if cfg.hit_rate is not None:  # what-if: every request reuses this fraction of its input
        reused = np.floor(cfg.hit_rate * input_tokens)
    return dataclasses.replace(a, requests=Requests(trace, preset, label, source, input_tokens,
                                                    trace.output_length.astype(float), reused,
                                                    input_tokens - reused, bt, summary))


def fleet(a: Analysis) -> Analysis:
    """The fleet's instances: HBM per GPU, GPUs per instance, the decode batch; how far the workload lies outside
    what was measured."""
    run, fl, costs, req = a.inputs, a.fl, a.fitted.costs, a.requests
    kvb, warnings = run.shape.kv_bytes_per_token, []
    hbm = fl.hbm_bytes or run.gpu.get("memory_bytes")
    if not hbm:  # the verdict's caveats say so (CPU run; HBM assumed)
        hbm = CPU_ASSUMED_HBM
    weights = run.shape.weight_bytes()
    g = fl.gpus_per_instance or next(k for k in (1, 2, 4, 8, 16, 32, 64) if weights <= 0.6 * k * hbm)
    if g > fl.gpus:
        raise UserError(f"fleet.gpus={fl.gpus} cannot hold one instance of {run.shape.name} ({g} GPUs needed)")
    I, O, c, n = req.input_tokens, req.output_tokens, req.reused_tokens, req.new_tokens
    ctx_decode = float(np.mean(I + O / 2))
    step = lambda b: float(costs.decode_step_s(b, ctx_decode))  # noqa: E731
    by_mode = {m: F.decode_batch(g * hbm, weights, ctx_decode * kvb, fl.reserve_fraction, None, step,
                                 int(fl.max_batch), g, decode_cache_fraction(fl, m))
               for m in ("disaggregated", "colocated")}
    batch, limit = by_mode[fl.mode]
    if batch < 1:
        raise UserError(f"no decode batch fits: {limit} (fleet.gpus_per_instance={g}, HBM {hbm / 2**30:.0f} GiB)")
    extrap = tuple(e for e in (
        V.extrapolation("prefill new tokens", np.concatenate([I, n]), costs.prefill.ranges["n_new"]),
        V.extrapolation("prefill cached context", c, costs.prefill.ranges["n_ctx"]),
        V.extrapolation("decode batch", [batch], costs.decode.ranges["batch"]),
        V.extrapolation("decode context", I + O, costs.decode.ranges["ctx"])) if e)
    # extrapolation beyond 1.5x is one of the verdict's caveats, and the farthest decides an undetermined outcome
    return dataclasses.replace(a, sizing=FleetSizing(hbm, weights, g, ctx_decode, batch, limit, extrap,
                                                     tuple(warnings), {m: b for m, (b, _) in by_mode.items()}))


def simulate_caches(a: Analysis) -> Analysis:
    """The tiered cache at the fleet's capacities for every routing (simulated once: independent of the costs),
    then the verdict's scenario: the best routing with the HBM tier only, then + host DRAM, then + NVMe (or the
    what-if hit rate, in the simulated tiers' shares); the verdict describes the last of them."""
    cfg, fl, sz, req, tiers = a.cfg, a.fl, a.sizing, a.requests, a.fitted.tiers
    bt, warnings = req.block_tokens, []
    hbm_free = max(sz.gpus_per_instance * sz.hbm_bytes_per_gpu * (1 - fl.reserve_fraction) - sz.weight_bytes, 0)
    block_bytes = bt * a.inputs.shape.kv_bytes_per_token
    caps = (max(1, int(fl.hbm_cache_fraction * hbm_free // block_bytes)),
            int(sz.gpus_per_instance * fl.host_bytes_per_gpu // block_bytes) if "host" in tiers else 0,
            int(sz.gpus_per_instance * fl.storage_bytes_per_gpu // block_bytes) if "storage" in tiers else 0)
    sims = dict(zip(fl.routings, in_threads(lambda r: simulate(req.trace, bt, caps, int(fl.sim_instances), r),
                                            list(fl.routings))))
    fell = [r for r, s in sims.items() if s.meta["effective_routing"] != r]
    if fell:
        warnings.append(f"routing {', '.join(fell)}: the requests carry no session ids, so session routing fell "
                        "back to prefix routing")
    pricer = Pricer(req, sz, fl, sims)
    first = pricer.evaluate(a.fitted.costs)
    best = max(fl.routings, key=lambda r: first.speedup_by_routing[r])
    scenarios = {"hbm": (caps[0], 0, 0)}
    if "host" in tiers:
        scenarios["host"] = (caps[0], caps[1], 0)
    if "storage" in tiers:
        scenarios["storage"] = caps
    full = sims[best]
    used = full.hit_tokens.sum(axis=0)  # tokens hit per tier with every tier present

    def tier_sim(cp):
        # a tier that served no hit changes nothing when removed (its blocks were only ever demoted into it)
        if cp == caps or all(used[i] == 0 for i in range(3) if cp[i] != caps[i]):
            return full
        return simulate(req.trace, bt, cp, int(fl.sim_instances), best)

    tier_sims = dict(zip(scenarios, in_threads(tier_sim, list(scenarios.values()))))
    kept = decode_kept_tokens(tier_sims["hbm"])  # the decode pool's own cache (fleet.handoff=sim), before a what-if
    if cfg.hit_rate is not None:  # what-if: every request reuses hit_rate of its input, from the tiers it had
        tier_sims = {k: WhatIf(sim, req.input_tokens, float(cfg.hit_rate)) for k, sim in tier_sims.items()}
    moved = moved_tokens(fl.handoff, req, kept)  # disaggregated: the KV each request hands to decode
    link = link_load(a.fitted.handoff, moved, a.inputs.shape.kv_bytes_per_token)
    pricer = pricer.with_tier_sims(tier_sims).with_link(link)
    verdict_tier = next(t for t in ("storage", "host", "hbm") if t in scenarios)  # every tier the run measured
    return dataclasses.replace(a, scenario=CacheScenario(block_bytes, caps, sims, best, scenarios, tier_sims,
                                                         verdict_tier, pricer, pricer.evaluate(a.fitted.costs),
                                                         tuple(warnings), moved, link, kept))


def price(a: Analysis) -> Analysis:
    """The result's figures at the measured costs: no reuse, reuse of every reusable token from each tier (with
    its break-even bandwidth), the hit-rate sweep, each routing's simulated cache."""
    run, cfg, fl, costs, req, sz, scen = a.inputs, a.cfg, a.fl, a.fitted.costs, a.requests, a.sizing, a.scenario
    tiers, pt = a.fitted.tiers, scen.priced
    I, O, c, n = req.input_tokens, req.output_tokens, req.reused_tokens, req.new_tokens
    p0, d, base_rate = pt.baseline_prefill_s, pt.decode_s, pt.baseline_rps
    out_tok, in_tok = float(np.mean(O)), float(np.mean(I))
    warnings = [*run.warnings, *a.fitted.warnings, *sz.warnings, *scen.warnings]  # goodput may add to it
    result = {
        "run": str(run.run_dir), "device": run.device, "gpu": run.gpu.get("name") or run.device,
        "model": run.shape.name, "kv_bytes_per_token": run.shape.kv_bytes_per_token,
        "cost_unit": "CPU-s" if run.device == "cpu" else "GPU-s",
        "workload": ({"label": req.label, "name": req.label, "kind": "trace", "trace": str(cfg.trace),
                      "requests": len(req.trace), "from": req.source} if cfg.trace else
                     {"label": req.label, "name": req.preset.name, "kind": "preset", "source": cfg.workload.source,
                      "requests": len(req.trace), "from": req.source, "preset_summary": req.preset.summary()}),
        "fits": {"prefill": costs.prefill.as_dict(), "decode": costs.decode.as_dict()},
        "kernels": {"prefill": costs.prefill.kernel, "decode": costs.decode.kernel},
        "load_cost": costs.load_cost_used(),
        "tiers": {k: {"gbps": t.gbps, "latency_s": t.latency_s, "source": t.source,
                      "emulated": run.device == "cpu"} for k, t in tiers.items()},
        "fleet": {**OmegaConf.to_container(fl, resolve=True), "gpus_per_instance": sz.gpus_per_instance,
                  "hbm_bytes": sz.hbm_bytes_per_gpu, "decode_batch": sz.decode_batch,
                  "decode_batch_limited_by": sz.decode_batch_limited_by, "weight_bytes": sz.weight_bytes},
        "reuse": {}, "simulated": {}, "sweep": {"hit_rate": HIT_GRID.tolist()}, "warnings": warnings,
    }
    result["workload"].update({"ideal_hit_rate": float(c.sum() / I.sum()), "hit_rate_override": cfg.hit_rate,
                               "mean_input_tokens": in_tok, "mean_output_tokens": out_tok,
                               "block_tokens": req.block_tokens})
    if req.summary is not None:
        result["trace"] = req.summary
    result["baseline"] = {"prefill_gpu_s": p0, "decode_gpu_s": d, "prefill_share": F.prefill_share(p0, d),
                          "amdahl_bound": F.amdahl_bound(p0, d), "requests_per_s": base_rate, **pt.baseline_split,
                          "output_tokens_per_s": base_rate * out_tok, "input_tokens_per_s": base_rate * in_tok}
    for tier in ("hbm", *tiers):
        px = mean_prefill_s(costs, n, c, costs.load_split(tier, c), fl.overlap_load)
        r, split = scen.pricer.rate(px, d)
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
            ph = mean_prefill_s(costs, I - ch, ch, costs.load_split(tier, ch), fl.overlap_load)
            sweep.append(F.speedup(p0, ph, d))
        result["sweep"][tier] = sweep
    for routing, sim in scen.sims_by_routing.items():
        ps, split = pt.routing_detail[routing]
        result["simulated"][routing] = {**sim.rates(), "speedup": pt.speedup_by_routing[routing], "prefill_gpu_s": ps,
                                        "effective_routing": sim.meta["effective_routing"], **split,
                                        "capacity_blocks_per_instance": list(scen.capacity_blocks),
                                        "instances": fl.sim_instances}
    # from here on only the best routing's replay is read (capacity, persistence): the others' memory goes
    kept = {scen.best_routing: scen.sims_by_routing[scen.best_routing]}
    scen = dataclasses.replace(scen, sims_by_routing=kept, pricer=Pricer(req, sz, fl, kept, scen.tier_sims,
                                                                            scen.link))
    return dataclasses.replace(a, result=result, scenario=scen)


class Resampler:
    """One bootstrap resample of the verdict's evidence: the prefill and decode fits refitted on resampled points
    (each jittered by its own noise), tier bandwidths jittered by theirs, the tier scenarios priced again.

    A workload of more than BOOT_REQUESTS requests is priced, in every resample, on a fixed uniform sample of that
    many of them (the same rows of every cache simulation), each resample's figures scaled by all requests' /
    the sample's at the fitted costs (a ratio estimator: the interval's centre is all requests', its spread the
    sample's); ``sample_error`` says how far the sample alone was from all requests there."""

    def __init__(self, a: Analysis):
        run, costs = a.inputs, a.fitted.costs
        self.costs, self.pricer, self.shape = costs, a.scenario.pricer, run.shape
        self.tier_noise = {k: _tier_noise(run.records, t) for k, t in a.fitted.tiers.items()}
        if a.fitted.handoff.measured:  # the handoff's link rate, by its fit's residual
            self.tier_noise["handoff"] = a.fitted.handoff.rel_noise
        kern = a.fitted.attention_kernel
        self.prefill_points = points(run.records, *PREFILL, kernel=kern)
        self.decode_points = points(run.records, *DECODE, kernel=kern)
        self.sampled, self.correction, self.sample_error = None, {}, 0.0
        n = len(a.requests.input_tokens)
        if n > BOOT_REQUESTS:
            full = self.pricer.evaluate(costs, verdict_only=True).bootstrap_values()
            self.pricer = self.pricer.sample(BOOT_REQUESTS, int(a.cfg.verdict.seed))
            part = self.pricer.evaluate(costs, verdict_only=True).bootstrap_values()
            self.correction = {k: full[k] / v for k, v in part.items() if v and math.isfinite(v / full[k])}
            self.sample_error = max((abs(v / full[k] - 1) for k, v in part.items() if k in self.correction),
                                    default=0.0)
            self.sampled = {"requests": BOOT_REQUESTS, "of": n, "error_at_fitted_costs": self.sample_error,
                            "corrected": True}

    def __call__(self, rng, rs_prefill: bool, rs_decode: bool) -> dict:
        c, pp, dp = self.costs, self.prefill_points, self.decode_points
        cs = Costs(fit_points(pp, *resample(pp, rng)) if rs_prefill else c.prefill,
                   fit_points(dp, *resample(dp, rng)) if rs_decode else c.decode, c.tiers, c.kv_bytes_per_token,
                   exposure=c.exposure, layers=self.shape.layers)
        scale = {k: max(0.05, 1 + s * rng.standard_normal()) for k, s in self.tier_noise.items()}
        values = self.pricer.evaluate(cs, scale, verdict_only=True).bootstrap_values()
        return {k: v * self.correction.get(k, 1.0) for k, v in values.items()}


BOOT_REQUESTS = 100_000  # requests a bootstrap resample prices (every one, up to this many: the presets all)


def handoff(a: Analysis) -> Analysis:
    """Each request's prefill seconds and exposed handoff seconds per configuration (Latencies: goodput replays the
    same), then the disaggregated handoff's figures (bench.model.disaggregation): what moves, its cost, the part
    exposed in TTFT per configuration, the link's load and the splits it allows, the seed's 50:50 with its handoff."""
    prefill = D.prefill_by_config(a)
    a = dataclasses.replace(a, latencies=Latencies(prefill, D.exposed_by_config(a, prefill)))
    h = D.figures(a)
    a.result["handoff"] = h
    c = h["configs"][a.scenario.verdict_tier]
    if h["applies"] and c["refused"]:
        a.result["warnings"].append(f"handoff: {c['refused']}")
    return a


def verdict(a: Analysis) -> Analysis:
    """The verdict: the speedup's interval from refitting the costs on resampled points (each jittered by its noise,
    tier bandwidths by theirs), the outcome against the claim, what would decide it, every caveat, the seed case."""
    cfg, fl, scen = a.cfg, a.fl, a.scenario
    vc, pt, extrap = cfg.verdict, scen.priced, a.sizing.extrapolations
    resampled = Resampler(a)
    n_boot, lvl = int(vc.bootstrap), float(vc.interval)
    boot = bootstrap(resampled, n_boot, int(vc.seed))
    key = f"tiers:{scen.verdict_tier}"
    lo, hi = interval(boot[key], lvl)
    point = pt.speedup_by_tier[scen.verdict_tier]
    spread = {}  # which fit's uncertainty moves the verdict most: resample it alone
    for name, only in (("layer_prefill", (True, False)), ("layer_decode", (False, True))):
        part = bootstrap(resampled, max(20, n_boot // 4), int(vc.seed) + 1, *only)[key]
        a_lo, a_hi = interval(part, lvl)
        spread[name] = float(a_hi - a_lo) if math.isfinite(a_hi - a_lo) else 0.0
    widest = max(spread, key=spread.get)
    outcome, decide_by, why = V.decide(point, lo, hi, float(vc.claim), list(extrap), float(vc.max_extrapolation),
                                       widest, lvl)
    tier_rates = {k: {"speedup": pt.speedup_by_tier[k], **{kk: vv for kk, vv in sim.rates().items()}}
                  for k, sim in scen.tier_sims.items()}
    speedup = {"point": point, "low": lo, "high": hi}
    tiers_named = " + ".join(scen.scenario_capacities)
    a.result["verdict"] = {
        "claim": float(vc.claim), "outcome": outcome, "speedup": speedup,
        "interval": float(vc.interval), "bootstrap": int(vc.bootstrap),
        "amdahl_bound": {"point": pt.amdahl_bound, **dict(zip(("low", "high"), interval(boot["amdahl"],
                                                                                        float(vc.interval))))},
        "routing": scen.best_routing, "tiers": tier_rates,
        "seed_case": V.seed_case(fl, pt, speedup, boot, key, float(vc.interval),
                                 tier_rates[scen.verdict_tier]["hit_rate"]),
        "extrapolation": list(extrap), "decide_by": decide_by, "why": why,
        "disaggregation": D.comparison(pt, boot, scen.verdict_tier, lvl),
        "reasons": caveats(a) + _sample_caveat(resampled.sampled), "bootstrap_sample": resampled.sampled,
        "uncertainty_by_fit": spread,
        "scenario": (f"simulated {scen.best_routing} routing, capacity-limited tiers {tiers_named} "
                     "(per-request hits from the cache simulation)") if cfg.hit_rate is None else
                    (f"what-if hit_rate={cfg.hit_rate:g}: every request reuses {cfg.hit_rate:.0%} of its input, "
                     f"served by {tiers_named} in the shares the {scen.best_routing}-routed simulation found"),
        "what_if_hit_rate": cfg.hit_rate,
    }
    return a


def _sample_caveat(sampled) -> list[str]:
    """The bootstrap's request sample, when it took one (Resampler), in words with its error."""
    if not sampled:
        return []
    return [f"the interval's resamples priced a {sampled['requests']:,}-request sample of the {sampled['of']:,} "
            f"(at the fitted costs within {sampled['error_at_fitted_costs']:.2%} of all requests, scaled to them)"]


def caveats(a: Analysis) -> list[str]:
    """Every caveat that bears on the verdict: a CPU run, extrapolation, rough fits, missing tiers, assumed HBM,
    the end-to-end replay's errors, suspect points, an incomplete run."""
    run, fl, costs = a.inputs, a.fl, a.fitted.costs
    reasons = []
    if run.device == "cpu":
        reasons.append("CPU run: CPU costs of a small preset, host memcpy for the host tier, not a GPU's")
    reasons += [f"{e['quantity']} extrapolated {sig(e['factor'])}x beyond the measured {sig(e['measured'][0])}.."
                f"{sig(e['measured'][1])} (workload {sig(e['workload'][0])}..{sig(e['workload'][1])})"
                for e in a.sizing.extrapolations if e["factor"] > 1.5]
    reasons += [f"{f.name} fit residual {f.rel_rms:.0%}" for f in (costs.prefill, costs.decode) if f.rel_rms > 0.1]
    if costs.exposure is not None and costs.exposure.rel_rms > 0.1:
        reasons.append(f"layer-wise load overlap fit residual {costs.exposure.rel_rms:.0%}")
    if "storage" not in a.fitted.tiers:
        reasons.append("no NVMe tier measured (storage records missing)")
    if not run.gpu.get("memory_bytes") and not fl.hbm_bytes:
        reasons.append("HBM assumed 80 GiB per GPU (set fleet.hbm_bytes)")
    reasons += D.caveats(a)
    reasons += _validation_reasons(run.records, run.run_dir)
    reasons += _suspect_reasons(run.run_dir)
    if run.incomplete:
        reasons.insert(0, f"incomplete run ({run.incomplete}): only the points its records hold")
    return reasons


def capacity(a: Analysis) -> Analysis:
    """Capacity curves per tier (and their knees) and how long KV must persist, on the verdict's routing."""
    fl, result, scen = a.fl, a.result, a.scenario
    result["capacity"] = capacity_curves(a.requests, scen, a.sizing, fl, a.fitted.costs)
    result["persistence"] = reuse_times(a.requests.trace, scen.sims_by_routing[scen.best_routing].instance,
                                        int(fl.sim_instances))
    result["verdict"]["capacity"] = {k: v["knee"] for k, v in result["capacity"]["tiers"].items()}
    result["verdict"]["persistence_minutes"] = dict(zip(("p50", "p90", "p99"), result["persistence"]["minutes"]))
    result["verdict"]["sentence"] = prose.sentence(result)
    result["verdict_text"] = result["verdict"]["sentence"]
    return a


def goodput(a: Analysis) -> Analysis:
    """Goodput at the latency SLO per configuration, and the verdict at the SLO (skipped without targets)."""
    cfg, fl, costs, result, req, scen = a.cfg, a.fl, a.fitted.costs, a.result, a.requests, a.scenario
    slo = slo_targets(cfg)
    if slo["ttft_ms"] or slo["tpot_ms"]:
        lat = a.latencies
        result["goodput"], warnings = goodput_at_slo(req, a.sizing, costs, fl, slo, lat.prefill_s,
                                                     a.inputs.shape.kv_bytes_per_token,
                                                     req.trace.timestamp_ms if cfg.trace else None,
                                                     lat.handoff_exposed_s, scen.link.requests_per_s_per_gpu,
                                                     scen.verdict_tier)
        result["warnings"].extend(warnings)
        result["verdict"]["slo"] = slo_verdict(result["goodput"], scen.priced, scen.verdict_tier)
        result["verdict"]["disaggregation"]["goodput"] = result["goodput"].get("modes")
    else:
        result["goodput"] = {"targets": slo, "skipped": "no TTFT or TPOT target (fleet.ttft_ms / fleet.tpot_ms)"}
    return a


def sparse(a: Analysis) -> Analysis:
    """The sparse-decode mode (bench.model.warm): decode that fetches each step's top-k rows from the warm tier at
    the run's measured fit, per k and tier, beside the dense decode of the same fleet; skipped with why when the
    run has no warm_fetch fit."""
    from bench.model.warm import sparse_decode

    run = a.inputs
    a.result["sparse_decode"] = sparse_decode(run.records, a.fitted.costs, run.shape, a.fl, a.cfg.sparse, a.sizing)
    return a


def finish(a: Analysis) -> dict:
    """The verdict's headline, details and sentence (built from the result's fields), and the variant's name."""
    result = a.result
    result["verdict"]["headline"] = prose.headline(result)
    result["verdict"]["details"] = prose.details(result)
    result["verdict"]["sentence"] = prose.sentence(result)
    result["verdict_text"] = result["verdict"]["sentence"]
    result["variant"] = variant_name(a.cfg, a.requests.label)
    return result


STEPS = (fit, workload, fleet, simulate_caches, price, handoff, verdict, capacity, goodput, sparse)


def analyze(run_path, cfg, progress=None) -> dict:
    """The whole analysis of the run at ``run_path`` with the analysis config ``cfg``: every step in order
    (``progress(step name, index, count)`` before each, for a progress bar), the freed memory of each given back to
    the system (a 2M-request trace's steps hold gigabytes in turn)."""
    a = load(run_path, cfg)
    for i, step in enumerate(STEPS):
        if progress is not None:
            progress(step.__name__, i, len(STEPS))
        a = step(a)
        trim_memory()
    return finish(a)


def trim_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps the arrays under its mmap threshold otherwise)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to give back this way
        pass


def write_model_json(result: dict, out) -> Path:
    """model.json of a result into ``out`` (the model's own output; its plots are bench.report.model_plots)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return path


def _tier_noise(df, tier: Tier) -> float:
    """Relative standard error of the record a tier's bandwidth comes from (0 when unknown)."""
    bench = tier.source.split()[0]
    d = df[(df["benchmark"] == bench) & (df["status"] == "ok")]
    if d.empty or "metric.gbps" not in d:
        return 0.0
    rec = d.loc[(d["metric.gbps"].astype(float) - tier.gbps).abs().idxmin()]
    return float(point_noise(rec.to_frame().T)[0])


def _suspect_reasons(run_dir) -> list[str]:
    """Points the costs come from that were timed under contention or fell implausibly in their sweep."""
    from bench.core.store import RECORDS, read_records, suspect_points

    sus = suspect_points(read_records(Path(run_dir) / RECORDS), read_manifest(run_dir))
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
