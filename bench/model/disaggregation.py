"""The disaggregated handoff's figures for model.json (``result["handoff"]``): what each request moves from prefill
to decode (fleet.handoff), its cost and the part exposed in TTFT per configuration (no reuse, each tier), the load
on each GPU's link at the fleet's rate against the link's capacity, which prefill:decode splits the link allows,
the seed's 50:50 case priced with its handoff, and the measured layer-wise handoffs beside the model's prediction.
Seconds, bytes, GB/s (1e9 bytes/s), requests/s of the whole fleet."""
from __future__ import annotations

import math

import numpy as np

from bench.core.units import percent, sig
from bench.model import fleet as F
from bench.model.costs import ok_records
from bench.model.handoff import refusal, splits
from bench.model.pricing import request_prefill_s
from bench.model.slo import CONFIG_NAMES


def prefill_by_config(a) -> dict:
    """Per-request prefill seconds (one GPU) of each configuration: no reuse, then each tier scenario."""
    costs, req, scen, fl = a.fitted.costs, a.requests, a.scenario, a.fl
    return {"none": np.broadcast_to(costs.prefill_s(req.input_tokens, 0), req.input_tokens.shape).astype(float),
            **{k: request_prefill_s(costs, sim, fl.overlap_load) for k, sim in scen.tier_sims.items()}}


def exposed_by_config(a, prefill: dict) -> dict:
    """Per-request seconds of the handoff left in TTFT of a disaggregated fleet, per configuration (the comparison
    prices the handoff whatever fleet.mode says; a colocated replay adds none)."""
    cost, scen, sz = a.fitted.handoff, a.scenario, a.sizing
    kvb = a.inputs.shape.kv_bytes_per_token
    return {k: cost.exposed_s(scen.moved_tokens, kvb, sz.gpus_per_instance, pf, bool(a.fl.handoff_layerwise))
            for k, pf in prefill.items()}


def _pct(x, q) -> float:
    return float(np.percentile(x, q)) if len(x) else 0.0


def figures(a) -> dict:
    """model.json's ``handoff``: the cost, what moves, per configuration the exposed seconds, TTFT share, link load
    and allowed splits, the seed's 50:50 case with its handoff, the layer-wise check."""
    fl, req, sz, scen = a.fl, a.requests, a.sizing, a.scenario
    cost, link, pricer = a.fitted.handoff, scen.link, scen.pricer
    kvb, g = a.inputs.shape.kv_bytes_per_token, sz.gpus_per_instance
    moved = scen.moved_tokens
    whole = cost.request_s(moved, kvb, g)
    d = pricer.decode_s(a.fitted.costs, "disaggregated")  # the disaggregated fleet's own decode batch
    prefill, exposed = a.latencies.prefill_s, a.latencies.handoff_exposed_s
    out = {"mode": fl.handoff, "applies": fl.mode == "disaggregated", "layerwise": bool(fl.handoff_layerwise),
           "cost": cost.as_dict(),
           "moved": {"tokens_mean": float(np.mean(moved)), "bytes_mean": link.bytes_per_request,
                     "share_of_input": float(np.sum(moved) / max(np.sum(req.input_tokens), 1.0)),
                     "descriptors_mean": float(np.mean(cost.descriptors(moved)))},
           "request_s": {"mean": float(np.mean(whole)), "p50": _pct(whole, 50), "p90": _pct(whole, 90)},
           "link_capacity_gbps": link.capacity_gbps, "verdict_config": scen.verdict_tier, "configs": {}}
    for name, pf in prefill.items():
        ex = exposed[name]
        ttft0 = pf / g + ex  # unloaded: the prefill on its instance, then the exposed handoff
        ps = float(np.mean(pf))
        r, split = pricer.rate(ps, d, "disaggregated")
        pg, dg = split["prefill_gpus"], split["decode_gpus"]
        load = r * link.bytes_per_request / min(pg, dg) / 1e9 if min(pg, dg) > 0 else 0.0
        allowed = splits(int(fl.gpus), ps, d, link, None if fl.prefill_fraction is None else pg)  # the split used
        out["configs"][name] = {
            "label": CONFIG_NAMES[name], "exposed_s_mean": float(np.mean(ex)), "exposed_s_p50": _pct(ex, 50),
            "exposed_s_p90": _pct(ex, 90),
            "hidden_fraction": 1.0 - float(np.sum(ex) / np.sum(whole)) if np.sum(whole) > 0 else 1.0,
            "ttft_share": float(np.mean(ex) / np.mean(ttft0)) if np.mean(ttft0) > 0 else 0.0,
            "prefill_s_mean": float(np.mean(pf)) / g, "unloaded_ttft_p90_s": _pct(ttft0, 90), "requests_per_s": r,
            "prefill_gpus": pg, "decode_gpus": dg, "link_gbps_per_gpu": load,
            "link_utilization": load / link.capacity_gbps if link.capacity_gbps else math.inf,
            "link_bound": bool(split["link_bound"]), "splits": allowed,
            "refused": refusal(allowed, link, int(fl.gpus))}
    out["seed_50_50"] = seed_50_50(a)
    out["decode_side"] = decode_side(a)
    out["layerwise_check"] = layerwise_check(a)
    return out


def seed_50_50(a) -> dict:
    """The seed's split (half the fleet on prefill) on these costs, with and without its handoff's link: the
    speedup of the verdict's configuration over no reuse, and whether the link bounds either."""
    fl, scen, prefill = a.fl, a.scenario, a.latencies.prefill_s
    d, link = scen.pricer.decode_s(a.fitted.costs, "disaggregated"), scen.link.requests_per_s_per_gpu
    p0, px = float(np.mean(prefill["none"])), float(np.mean(prefill[scen.verdict_tier]))
    base, reuse = (F.fixed_split(int(fl.gpus), 0.5, p, d, link) for p in (p0, px))
    base_free, reuse_free = (F.fixed_split(int(fl.gpus), 0.5, p, d) for p in (p0, px))
    return {"prefill_gpus": base.prefill_gpus, "decode_gpus": base.decode_gpus,
            "speedup": reuse.requests_per_s / base.requests_per_s if base.requests_per_s else math.nan,
            "speedup_without_handoff": reuse_free.requests_per_s / base_free.requests_per_s,
            "requests_per_s": reuse.requests_per_s, "base_requests_per_s": base.requests_per_s,
            "link_bound": reuse.link_bound, "base_link_bound": base.link_bound}


def decode_side(a) -> dict:
    """How much of a request's earlier context the decode pool holds under fleet.handoff (new assumes all of it;
    sim simulates it): with `new`, the simulated share beside it says how optimistic that is."""
    req, scen = a.requests, a.scenario
    reusable = float(np.sum(req.reused_tokens))
    held_sim = float(np.sum(scen.decode_kept_tokens))
    # held / what `new` assumes held (the reusable tokens; under a what-if hit rate, its share): below 1, `new` is
    # optimistic by that much; above 1 (a what-if below the cache's own hits), the simulated cache holds more
    return {"reusable_tokens": reusable, "held_by_simulated_cache": held_sim,
            "simulated_share_of_reusable": held_sim / reusable if reusable else None,
            "cache_fraction_of_free_hbm": float(a.fl.hbm_cache_fraction) if a.fl.handoff in ("new", "sim") else 0.0}


def layerwise_check(a) -> list:
    """Each measured handoff_layerwise point beside the model's exposed time for its request (the fit, its per-layer
    lists, the point's own per-layer compute): the layer-wise formula held to what NIXL did."""
    d = ok_records(a.inputs.records, "handoff_layerwise")
    cost = a.fitted.handoff
    if d.empty or not cost.measured:
        return []
    out = []
    for _, row in d.iterrows():
        pred = cost.layer_exposed_s(float(row["metric.descriptors"]), float(row["metric.request_bytes"]),
                                    float(row["metric.layer_compute_ms"]) / 1e3, cost.layers)
        meas = float(row["metric.exposed_ms"]) / 1e3
        out.append({"context_tokens": int(row["param.context_tokens"]), "block_tokens": int(row["param.block_tokens"]),
                    "op": str(row["param.op"]), "memory": str(row["param.memory"]), "measured_exposed_s": meas,
                    "predicted_exposed_s": pred, "compute_s": float(row["metric.compute_ms"]) / 1e3})
    return out


def comparison(priced, boot: dict, tier: str, level: float) -> dict:
    """Disaggregated (with its handoff) against colocated for the verdict's configuration: the ratio of their request
    rates with its interval, and which the measured costs favour."""
    from bench.core.stats import interval

    point = priced.disagg_vs_colocated[tier]
    lo, hi = interval(boot.get(f"dvc:{tier}", []), level)
    if math.isfinite(lo) and lo > 1:
        favours = "disaggregated"
    elif math.isfinite(hi) and hi < 1:
        favours = "colocated"
    else:
        favours = "neither"
    return {"config": tier, "ratio": {"point": point, "low": lo, "high": hi}, "favours": favours,
            "without_reuse": priced.disagg_vs_colocated.get("none"), "by_config": dict(priced.disagg_vs_colocated),
            "what": "requests/s of the disaggregated fleet (its best split, held to the handoff's link) over the "
                    "colocated fleet (every GPU both), same GPUs, costs and requests; goodput at the SLO in "
                    "goodput.modes"}


def caveats(a) -> list[str]:
    """The handoff's caveats on the verdict (a disaggregated fleet): an estimated cost, a measurement that is not
    the fleet's fabric, `new`'s assumption, descriptors beyond the measured range, a link that bounds the rate."""
    fl, cost, h = a.fl, a.fitted.handoff, (a.result or {}).get("handoff")
    if fl.mode != "disaggregated" or h is None:
        return []
    out = []
    if not cost.measured:
        out.append(f"handoff priced as an estimate (bytes / {sig(cost.gbps)} GB/s per GPU): the run has no "
                   "handoff_request records")
    elif a.inputs.device == "cpu" or "/dram/" in cost.source:
        out.append("handoff measured DRAM to DRAM between two processes on one node (NIXL), not the fleet's "
                   "prefill-to-decode fabric (set fleet.link_gbps to hold the load to yours)")
    share = h["decode_side"]["simulated_share_of_reusable"]
    if fl.handoff == "new" and share is not None and share < 0.995:
        out.append(f"fleet.handoff=new assumes the decode pool keeps every session's KV; a decode cache of "
                   f"{fl.hbm_cache_fraction:.0%} of free HBM holds {percent(share)} of it (fleet.handoff=sim)")
    if cost.fit:
        most = float(np.max(cost.descriptors(a.scenario.moved_tokens))) if len(a.scenario.moved_tokens) else 0.0
        factor = most / max(float(cost.fit["descriptors_max"]), 1.0)
        if factor > 1.5:
            out.append(f"handoff descriptors per request extrapolated {sig(factor)}x beyond the measured "
                       f"{cost.fit['descriptors_min']}..{cost.fit['descriptors_max']}")
    c = h["configs"][a.scenario.verdict_tier]
    if c["link_bound"]:
        out.append(f"the handoff's link bounds the fleet: {c['prefill_gpus']}:{c['decode_gpus']} at "
                   f"{c['link_utilization']:.0%} of {sig(h['link_capacity_gbps'])} GB/s per GPU")
    return out
