"""Goodput at a latency SLO (TTFT and TPOT targets): per configuration (no reuse, HBM only, + host DRAM, + NVMe),
the highest request rate whose replay meets the targets for the SLO's share of requests, and the verdict there.
Times in ms where named so, else seconds; rates in requests/s."""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional

import numpy as np

from bench.model import fleet as F
from bench.model.costs import Costs
from bench.model.handoff import decode_cache_fraction
from bench.model.pricing import HIT_GRID, mean_decode_s
from bench.model.steps import FleetSizing, Priced, Requests


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


def goodput_at_slo(req: Requests, sizing: FleetSizing, costs: Costs, fl, slo: dict, prefill_by_config: dict,
                   kv_bytes_per_token: int, timestamps_ms=None, handoff_by_config: Optional[dict] = None,
                   link_rps_per_gpu: float = math.inf, compare_config: Optional[str] = None) -> tuple[dict, list]:
    """Goodput per configuration (no reuse, HBM only, + host, + NVMe) at the SLO, from a discrete-event replay
    (bench.model.goodput) of a uniform sample of the requests (fleet.slo_requests), arriving at a trace's
    timestamps (``timestamps_ms``, rescaled per rate) or as a Poisson process (generated sessions). The decode
    batch is the largest HBM allows whose step meets the TPOT target at the mean decode context. Disaggregated,
    each request's TTFT carries its exposed handoff (``handoff_by_config``: seconds per request) and a split's
    capacity its link (``link_rps_per_gpu``); ``compare_config``: that configuration replayed in the other mode too
    (``modes``: disaggregated against colocated). Returns the figures and the warnings they raise."""
    import time

    from bench.model import goodput as G

    t0 = time.perf_counter()
    I, O, g, warnings = req.input_tokens, req.output_tokens, sizing.gpus_per_instance, []
    hbm, weights, ctx_decode = sizing.hbm_bytes_per_gpu, sizing.weight_bytes, sizing.mean_decode_context
    kvb = kv_bytes_per_token
    tpot_s = slo["tpot_ms"] / 1e3 if slo["tpot_ms"] else None
    step = lambda b: float(costs.decode_step_s(b, ctx_decode))  # noqa: E731
    batch_of = lambda mode: F.decode_batch(g * hbm, weights, ctx_decode * kvb, fl.reserve_fraction,  # noqa: E731
                                           tpot_s, step, int(fl.max_batch), g, decode_cache_fraction(fl, mode))
    b_slo, b_why = batch_of(fl.mode)
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
        return out, warnings
    pool = G.Pool(int(fl.gpus), g, fl.mode, int(b_slo), tuple(costs.decode.coef), slo["ttft_ms"] and
                  slo["ttft_ms"] / 1e3, tpot_s, float(fl.slo_attainment), fl.prefill_fraction,
                  float(fl.colocated_interference), link_rps_per_gpu)
    if pool.instances < (1 if fl.mode == "colocated" else 2):
        out["skipped"] = (f"{fl.gpus} GPUs make {pool.instances} instance(s) of {g}: disaggregated serving needs a "
                          "prefill and a decode instance")
        return out, warnings
    o_keep = O[keep]
    d_gpu_s = mean_decode_s(costs, I[keep], o_keep, b_slo)
    d_by_mode = {fl.mode: d_gpu_s}
    done: dict = {}  # configurations with the same per-request prefill (a tier that served no hit) share a search
    handoff_by_config = handoff_by_config or {}

    def replay(name, p):
        pf = np.asarray(prefill_by_config[name], float)[keep]
        hs = handoff_by_config.get(name)
        hs = None if hs is None or p.mode != "disaggregated" else np.asarray(hs, float)[keep]
        key = hashlib.sha1(pf.tobytes() + (b"" if hs is None else hs.tobytes()) + p.mode.encode()).hexdigest()
        if key not in done:
            res = G.search(name, G.Replay(reqs, pf, p, hs), float(np.mean(pf)), d_by_mode[p.mode])
            o = res.at_goodput
            # the handoff's share of TTFT at the goodput rate, else (no rate meets the SLO) of an unloaded TTFT
            ttft = o.ttft if o is not None else pf / g + (0.0 if hs is None else hs)
            share = float(np.mean(hs) / np.mean(ttft)) if hs is not None and np.mean(ttft) > 0 else 0.0
            done[key] = {**res.as_dict(int(fl.gpus)), "handoff_ttft_share": share,
                         "handoff_ttft_share_at": "goodput" if o is not None else "unloaded",
                         "handoff_exposed_s_mean": 0.0 if hs is None else float(np.mean(hs))}
        return done[key]

    for name in prefill_by_config:
        out["configs"][name] = {**replay(name, pool), "config": name, "label": CONFIG_NAMES[name]}
    if compare_config in prefill_by_config:
        other = "colocated" if pool.mode == "disaggregated" else "disaggregated"
        b_alt, _ = batch_of(other)
        alt = dataclasses.replace(pool, mode=other, batch=int(b_alt))
        if b_alt >= 1:
            d_by_mode[other] = mean_decode_s(costs, I[keep], o_keep, b_alt)
        if b_alt >= 1 and alt.instances >= (1 if other == "colocated" else 2):
            both = {pool.mode: out["configs"][compare_config], other: replay(compare_config, alt)}
            keys = ("goodput_rps", "capacity_rps", "ttft_p90_s", "tpot_p90_s", "prefill_instances",
                    "decode_instances", "reason", "handoff_ttft_share")
            dis, col = both["disaggregated"]["goodput_rps"], both["colocated"]["goodput_rps"]
            out["modes"] = {"config": compare_config, **{m: {k: v[k] for k in keys} for m, v in both.items()},
                            "ratio": dis / col if col > 0 else (math.inf if dis > 0 else math.nan)}
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
    return out, warnings


def slo_verdict(gp: dict, priced: Priced, verdict_tier: str) -> dict:
    """The speedup at the SLO of the verdict's configuration (the last tier), beside the unconstrained one, and
    the tier whose loads break TTFT first."""
    if gp.get("skipped") or not gp.get("configs"):
        return {"skipped": gp.get("skipped", "no configuration replayed")}
    cfgs = gp["configs"]
    last = verdict_tier
    v = {"config": last, "speedup": cfgs[last]["speedup"], "unconstrained": priced.speedup_by_tier[last],
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
