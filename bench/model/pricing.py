"""Pricing: per-request seconds of prefill (with the loads of its cached KV from each tier) and decode, for a set of
costs, turned into the fleet's request rate (the best prefill:decode split, a fixed one, or colocated) and into
speedups over no reuse. Seconds are GPU-seconds per request (CPU-seconds on a CPU run); rates are requests/s of the
whole fleet."""
from __future__ import annotations

import copy
import dataclasses
import math
from typing import Optional

import numpy as np

from bench.model import fleet as F
from bench.model.cachesim import TIERS
from bench.model.costs import Costs
from bench.model.steps import FleetSizing, Priced, Requests

PRICE_CHUNK = 1 << 18  # requests priced at a time (a 2M-request replay's temporaries would hold gigabytes)
HIT_GRID = np.round(np.concatenate([np.arange(0, 0.9, 0.05), np.arange(0.9, 1.0001, 0.01)]), 3)  # dense where agents live


def mean_prefill_s(costs: Costs, new, cached, loads, overlap: bool) -> float:
    """Mean prefill GPU-seconds per request: compute of the new tokens after the cached ones, with the load
    ``loads`` = (layer-wise overlappable seconds, serial seconds) per request."""
    load_s, serial_s = loads
    return float(np.mean(costs.prefill_with_load_s(new, cached, load_s, overlap, serial_s=serial_s)))


def mean_decode_s(costs: Costs, input_tokens, output_tokens, batch: int) -> float:
    """Mean decode seconds per request: its output tokens at decode batch ``batch`` (each step's time shared by the
    batch), at its mean context while decoding (input + output / 2)."""
    i, o = np.asarray(input_tokens, float), np.asarray(output_tokens, float)
    return float(np.mean(o * costs.decode_step_s(batch, i + o / 2) / batch))


def tier_loads(costs: Costs, tokens_by_tier: dict):
    """(overlappable, serial) load seconds per request of the hit tokens of each tier ({tier: tokens})."""
    over, serial = 0.0, 0.0
    for tier, tokens in tokens_by_tier.items():
        o, s = costs.load_split(tier, tokens)
        over, serial = over + o, serial + s
    return over, serial


def sim_loads(costs: Costs, sim):
    """(hit tokens per tier as floats, (overlappable, serial) loads) of each request of a cache simulation."""
    ht = sim.hit_tokens.astype(float)
    return ht, tier_loads(costs, {t: ht[:, i] for i, t in enumerate(TIERS) if t == "hbm" or t in costs.tiers})


def request_prefill_s(costs: Costs, sim, overlap: bool) -> np.ndarray:
    """Prefill seconds (one GPU) of each request of a cache simulation: its misses after its hits, with its loads."""
    ht, (over, serial) = sim_loads(costs, sim)
    return np.broadcast_to(costs.prefill_with_load_s(sim.miss_tokens, ht.sum(axis=1), over, overlap,
                                                     serial_s=serial), ht.shape[:1]).astype(float)


def break_even_gbps(costs: Costs, n, c, latency_s: float) -> float:
    """Tier bandwidth (GB/s) at which loading the cached KV takes as long as recomputing it, over requests:
    sum(cached bytes) / sum(t_p(n + c, 0) - t_p(n, c) - latency). inf when recomputing costs nothing."""
    n, c = np.asarray(n, float), np.asarray(c, float)
    saved = costs.prefill_s(n + c, 0) - costs.prefill_s(n, c)
    denom = float(np.sum(np.maximum(saved - latency_s * (c > 0), 0)))
    return float(np.sum(c) * costs.kv_bytes_per_token / denom / 1e9) if denom > 0 else math.inf


def scaled_tiers(cs: Costs, tier_scale: dict) -> Costs:
    """``cs`` with each tier's bandwidths x its ``tier_scale`` factor (a resample of their noise)."""
    cs = copy.copy(cs)
    cs.tiers = {k: dataclasses.replace(
        t, gbps=t.gbps * tier_scale.get(k, 1.0),
        serial_gbps=None if t.serial_gbps is None else t.serial_gbps * tier_scale.get(k, 1.0))
        for k, t in cs.tiers.items()}
    return cs


class Pricer:
    """Every speedup of the model for a set of costs: the requests' prefill (with their tiers' loads) and decode
    seconds, turned into the fleet's request rate; ``sims_by_routing``: each routing's cache at the fleet's
    capacities; ``tier_sims``: the verdict's tier scenarios (empty while the best routing is being chosen)."""

    def __init__(self, requests: Requests, sizing: FleetSizing, fleet_cfg, sims_by_routing: dict,
                 tier_sims: Optional[dict] = None, link=None):
        self.requests, self.sizing, self.fl = requests, sizing, fleet_cfg
        self.sims_by_routing, self.tier_sims = sims_by_routing, dict(tier_sims or {})
        self.link = link  # bench.model.handoff.Link: the handoff's load on a disaggregated fleet (None: none)

    def with_tier_sims(self, tier_sims: dict) -> "Pricer":
        return Pricer(self.requests, self.sizing, self.fl, self.sims_by_routing, tier_sims, self.link)

    def with_link(self, link) -> "Pricer":
        return Pricer(self.requests, self.sizing, self.fl, self.sims_by_routing, self.tier_sims, link)

    def sample(self, n: int, seed: int) -> "Pricer":
        """This pricer on a fixed uniform sample of ``n`` requests (the same rows of the requests and of every
        tier scenario's simulation; the routings' simulations left out): the bootstrap's resamples."""
        rows = np.sort(np.random.default_rng(seed).choice(len(self.requests.input_tokens), n, replace=False))
        r = self.requests
        req = dataclasses.replace(r, input_tokens=r.input_tokens[rows], output_tokens=r.output_tokens[rows],
                                  reused_tokens=r.reused_tokens[rows], new_tokens=r.new_tokens[rows])
        return Pricer(req, self.sizing, self.fl, {}, {k: _rows(sim, rows) for k, sim in self.tier_sims.items()},
                      self.link)

    def decode_s(self, cs: Costs, mode: Optional[str] = None) -> float:
        """Mean decode seconds per request: its output tokens at the decode batch of ``mode`` (default the fleet's),
        per sequence."""
        b = (self.sizing.decode_batch_by_mode or {}).get(mode or self.fl.mode, self.sizing.decode_batch)
        return mean_decode_s(cs, self.requests.input_tokens, self.requests.output_tokens, b) if b >= 1 else math.inf

    def rate(self, prefill_s: float, decode_s: float, mode: Optional[str] = None,
             link_scale: float = 1.0) -> tuple[float, dict]:
        """(requests/s of the fleet, its split) for these per-request seconds, in ``mode`` (default the fleet's);
        a disaggregated split is held to the handoff's link (its capacity x ``link_scale``)."""
        fl = self.fl
        if (mode or fl.mode) == "colocated":
            return F.colocated_rate(fl.gpus, prefill_s, decode_s, fl.colocated_interference), \
                {"mode": "colocated", "gpus": fl.gpus}
        link = math.inf if self.link is None else self.link.requests_per_s_per_gpu * link_scale
        sp = F.best_split(fl.gpus, prefill_s, decode_s, link) if fl.prefill_fraction is None else \
            F.fixed_split(fl.gpus, fl.prefill_fraction, prefill_s, decode_s, link)
        return sp.requests_per_s, {"prefill_gpus": sp.prefill_gpus, "decode_gpus": sp.decode_gpus,
                                   "link_bound": sp.link_bound}

    def sim_prefill_s(self, cs: Costs, sim) -> float:
        """Mean prefill seconds per request of cache ``sim`` at costs ``cs`` (a large replay in chunks of
        PRICE_CHUNK requests: its temporaries stay small)."""
        n = len(sim.miss_tokens)
        if n <= PRICE_CHUNK:
            ht, loads = sim_loads(cs, sim)
            return mean_prefill_s(cs, sim.miss_tokens, ht.sum(axis=1), loads, self.fl.overlap_load)
        total = 0.0
        for lo in range(0, n, PRICE_CHUNK):
            part = _rows(sim, slice(lo, lo + PRICE_CHUNK))
            ht, (over, serial) = sim_loads(cs, part)
            total += float(np.sum(cs.prefill_with_load_s(part.miss_tokens, ht.sum(axis=1), over,
                                                         self.fl.overlap_load, serial_s=serial)))
        return total / n

    def price(self, cs: Costs, sim) -> tuple[float, float, dict]:
        """(mean prefill seconds, requests/s, split) of the requests served by cache ``sim`` at costs ``cs``."""
        ps = self.sim_prefill_s(cs, sim)
        return (ps, *self.rate(ps, self.decode_s(cs)))

    def evaluate(self, cs: Costs, tier_scale: Optional[dict] = None, verdict_only: bool = False) -> Priced:
        """Every speedup of the model for costs ``cs`` (tier bandwidths x ``tier_scale``); ``verdict_only``: the
        tier scenarios, not every routing (the bootstrap's resamples)."""
        link_scale = (tier_scale or {}).get("handoff", 1.0)
        if tier_scale:
            cs = scaled_tiers(cs, tier_scale)
        d = self.decode_s(cs)
        p0 = float(np.mean(cs.prefill_s(self.requests.input_tokens, 0)))
        base_rate, base_split = self.rate(p0, d, link_scale=link_scale)
        done: dict = {}  # id(sim) -> (prefill s, rate, split): a simulation shared by scenarios is priced once

        def priced(sim):
            if id(sim) not in done:
                ps = self.sim_prefill_s(cs, sim)
                done[id(sim)] = (ps, *self.rate(ps, d, link_scale=link_scale))
            return done[id(sim)]

        by_routing, detail = {}, {}
        for routing, sim in ({} if verdict_only else self.sims_by_routing).items():
            ps, r, split = priced(sim)
            by_routing[routing] = r / base_rate
            detail[routing] = (ps, split)
        by_tier = {key: priced(sim)[1] / base_rate for key, sim in self.tier_sims.items()}
        dvc = {}  # disaggregated (with its handoff) over colocated, same costs and requests, each its own batch
        d_mode = {m: d if m == self.fl.mode else self.decode_s(cs, m) for m in ("disaggregated", "colocated")}
        for key, sim in {"none": None, **self.tier_sims}.items():
            ps = p0 if sim is None else priced(sim)[0]
            dis = self.rate(ps, d_mode["disaggregated"], "disaggregated", link_scale)[0]
            col = self.rate(ps, d_mode["colocated"], "colocated")[0]
            dvc[key] = dis / col if col > 0 else math.nan
        return Priced(baseline_prefill_s=p0, decode_s=d, baseline_rps=base_rate, amdahl_bound=F.amdahl_bound(p0, d),
                      prefill_share=F.prefill_share(p0, d), speedup_by_routing=by_routing, speedup_by_tier=by_tier,
                      baseline_split=base_split, routing_detail=detail, disagg_vs_colocated=dvc)


def _rows(sim, rows):
    """A cache result (SimResult or WhatIf) restricted to ``rows`` of its requests."""
    out = copy.copy(sim)
    out.hit_tokens, out.miss_tokens = sim.hit_tokens[rows], sim.miss_tokens[rows]
    if getattr(sim, "instance", None) is not None:
        out.instance = sim.instance[rows]
    return out


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
