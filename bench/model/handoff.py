"""The disaggregated handoff in the model: what moves from a prefill instance to a decode instance per request
(``fleet.handoff``), what it costs (the run's handoff_request fit, else the link's rate: an estimate), the part the
prefill hides layer by layer and the part left in TTFT, and the load it puts on each GPU's link.

    one request, one GPU's share     t = t0 + n_desc x c + bytes / g / BW
                                     n_desc = ceil(tokens / block) x layers x KV components (one per chunk)
    layer by layer                   each layer's list (tau = t0 + n_desc / L x c + bytes / (L g BW)) is posted when
                                     that layer's prefill ends (kappa: the prefill's seconds per layer on its
                                     instance): exposed = max(tau, L tau - (L - 1) kappa); else exposed = t
    link                             P prefill and D decode GPUs moving B bytes per request at r requests/s load
                                     each GPU of the smaller side with r B / min(P, D) bytes/s; a split whose load
                                     would exceed the link's capacity is refused (its rate is capped by the link)

What moves (``fleet.handoff``): ``full``, the request's whole KV (the decode side keeps nothing between turns);
``new``, only the tokens the workload does not reuse (the decode side keeps every session's KV: an upper bound);
``sim``, what the decode pool's own prefix cache misses (simulated like the prefill side's, with the HBM share
fleet.hbm_cache_fraction of each decode instance). Units: tokens, bytes, seconds; GB/s = 1e9 bytes/s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bench.core.units import rate as fmt_rate
from bench.core.units import sig
from bench.model.costs import ok_records, require_positive

MODES = ("full", "new", "sim")
ESTIMATE_LINK_GBPS = 50.0  # one 400 Gb/s NIC per GPU (the DGX H100/H200 compute fabric): the rate of an estimate
ESTIMATE_BLOCK_TOKENS = 16  # vLLM's default KV block, the block of an estimate (it only rounds up the bytes)
PREFERRED = {"memory": ("vram", "dram"), "op": ("read", "write")}  # decode pulling VRAM to VRAM: what stacks run
MEASURE = "python -m bench run benchmark=handoff (NIXL: pip install -e \".[nixl-cu13]\")"


@dataclass(frozen=True)
class HandoffCost:
    """What moving one request's KV costs: seconds = t0 + descriptors x c + bytes / (gbps 1e9) on each GPU of an
    instance (its share of the bytes, every descriptor); ``link_gbps``: each GPU's link capacity the fleet's load
    is held to; ``regions``: descriptors per block (layers x K/V components)."""

    t0_s: float
    s_per_descriptor: float
    gbps: float
    link_gbps: float
    block_tokens: int
    regions: int
    layers: int
    measured: bool
    source: str
    # relative standard error of the link's rate when it is the measured one (the fit's covariance), the bootstrap's
    # jitter; 0 when the capacity is given (fleet.link_gbps) or estimated
    rel_noise: float = 0.0
    fit: Optional[dict] = None  # the fit's figures and measured ranges (None: an estimate)
    measured_gbps: Optional[float] = None  # the rate the records gave (gbps may be the link's, when lower)

    def descriptors(self, tokens) -> np.ndarray:
        t = np.asarray(tokens, float)
        return np.ceil(t / self.block_tokens) * self.regions

    def nbytes(self, tokens, kv_bytes_per_token: int) -> np.ndarray:
        """KV bytes one request moves (whole blocks, as serving stacks move them), all GPUs of an instance."""
        t = np.asarray(tokens, float)
        return np.ceil(t / self.block_tokens) * self.block_tokens * kv_bytes_per_token

    def request_s(self, tokens, kv_bytes_per_token: int, gpus_per_instance: int, scale: float = 1.0) -> np.ndarray:
        """Seconds to move each request's KV in one descriptor list (each GPU its share, in parallel); x ``scale``
        (a bootstrap resample's jitter). 0 where nothing moves."""
        t = np.asarray(tokens, float)
        s = (self.t0_s + self.descriptors(t) * self.s_per_descriptor
             + self.nbytes(t, kv_bytes_per_token) / gpus_per_instance / (self.gbps * 1e9)) * scale
        return np.where(t > 0, s, 0.0)

    def exposed_s(self, tokens, kv_bytes_per_token: int, gpus_per_instance: int, prefill_s,
                  layerwise: bool) -> np.ndarray:
        """Seconds of each request's handoff left after its prefill (in TTFT): layer by layer, each layer's list
        posted when its prefill ends (``prefill_s``: one GPU's prefill seconds), else the whole list after it.
        Layer by layer pays t0 per layer: where the prefill is too short to hide that, the whole list after it is
        sooner, and a stack that can do both sends the request that way (the smaller of the two per request)."""
        t = np.asarray(tokens, float)
        whole = self.request_s(t, kv_bytes_per_token, gpus_per_instance)
        if not layerwise:
            return whole
        L = max(1, self.layers)
        tau = (self.t0_s + self.descriptors(t) / L * self.s_per_descriptor
               + self.nbytes(t, kv_bytes_per_token) / L / gpus_per_instance / (self.gbps * 1e9))
        kappa = np.asarray(prefill_s, float) / gpus_per_instance / L
        return np.where(t > 0, np.minimum(np.maximum(tau, L * tau - (L - 1) * kappa), whole), 0.0)

    def layer_exposed_s(self, descriptors: float, nbytes: float, layer_s: float, layers: int) -> float:
        """A measured handoff_layerwise point's exposed seconds as the formula predicts them at the records' own
        rate (not a lower link's): one list per layer, each posted ``layer_s`` after the previous."""
        L = max(1, layers)
        gbps = self.measured_gbps or self.gbps
        tau = self.t0_s + descriptors / L * self.s_per_descriptor + nbytes / L / (gbps * 1e9)
        return max(tau, L * tau - (L - 1) * layer_s)

    def as_dict(self) -> dict:
        return {"measured": self.measured, "source": self.source, "t0_us": self.t0_s * 1e6,
                "us_per_descriptor": self.s_per_descriptor * 1e6, "gbps": self.gbps, "link_gbps": self.link_gbps,
                "block_tokens": self.block_tokens, "descriptors_per_block": self.regions,
                "rel_noise": self.rel_noise, "measured_gbps": self.measured_gbps, "fit": self.fit}


def _pick(d, key: str):
    """The rows of the preferred value of ``key`` the records hold (PREFERRED's order), and that value."""
    have = [str(v) for v in d[f"param.{key}"].dropna().unique()]
    for v in PREFERRED[key]:
        if v in have:
            return d[d[f"param.{key}"] == v], v
    v = sorted(have)[0]
    return d[d[f"param.{key}"] == v], v


def handoff_cost(df, shape, fl) -> tuple[HandoffCost, list]:
    """The handoff's cost from the run's handoff_request records (VRAM over DRAM, READ over WRITE, the backend with
    the most points), refitted here as the handoff_fit record fits it; without records an estimate at
    fleet.link_gbps (or ESTIMATE_LINK_GBPS). Returns the cost and its warnings."""
    from bench.core.descriptor_fit import fit_descriptor_cost

    regions, layers = shape.layers * shape.kv_components, shape.layers
    link = None if fl.link_gbps is None else float(fl.link_gbps)
    d = ok_records(df, "handoff_request")
    if d.empty or "metric.descriptors" not in d:
        gbps = link or ESTIMATE_LINK_GBPS
        why = ("fleet.link_gbps" if link else f"{ESTIMATE_LINK_GBPS:g} GB/s per GPU, one 400 Gb/s NIC (set "
                                              "fleet.link_gbps)")
        return HandoffCost(0.0, 0.0, gbps, gbps, int(fl.handoff_block_tokens or ESTIMATE_BLOCK_TOKENS), regions,
                           layers, False, f"estimate: bytes / {sig(gbps)} GB/s ({why}); the run has no "
                                              f"handoff_request records: {MEASURE}"), \
            [f"handoff priced as an estimate (bytes / {sig(gbps)} GB/s, no per-request or per-descriptor cost): the "
             f"run has no handoff_request records; measure it: {MEASURE}"]
    d, memory = _pick(d, "memory")
    d, op = _pick(d, "op")
    backend = d["param.backend"].astype(str).value_counts().idxmax()
    d = d[d["param.backend"].astype(str) == backend]
    for m in ("median_s", "bytes", "descriptors"):
        require_positive(d, "handoff_request", m, d[f"metric.{m}"].astype(float).to_numpy())
    n, b, t = (d[f"metric.{m}"].astype(float).to_numpy() for m in ("descriptors", "bytes", "median_s"))
    where = f"handoff_request {op}/{memory}/{backend}, {len(t)} points"
    try:
        f = fit_descriptor_cost(n, b, t)
    except ValueError as e:  # too few points, one block size: bytes / the points' own best rate
        gbps = float(np.max(b / t)) / 1e9
        f, t0, c, note = None, 0.0, 0.0, f"no descriptor fit ({e}): bytes / the best point's {sig(gbps)} GB/s"
    else:
        t0, c, gbps, note = f.t0_s, f.s_per_descriptor, f.gbps, f.note
        if gbps is None:  # one request size: t0 held bytes / BW there; the bytes' rate from the points instead
            t0 = 0.0
            gbps = float(np.median(b / np.maximum(t - n * c, 1e-12))) / 1e9
    warnings = []
    cap = link if link is not None else gbps
    se = None if f is None else f.gbps_rel_se
    if link is not None and link < gbps:
        warnings.append(f"fleet.link_gbps={link:g} is below the {sig(gbps)} GB/s the handoff measured: the link's "
                        "rate is used")
    fit = None if f is None else {**f.as_metrics(), "note": note}
    block = int(fl.handoff_block_tokens or d["param.block_tokens"].astype(int).max())
    src = (f"{where}: t = {sig(t0 * 1e6)} us + {sig(c * 1e6)} us x descriptors + bytes / {sig(gbps)} GB/s"
           + (f" ({note})" if note else "") + f"; {block}-token blocks")
    return HandoffCost(t0, c, min(gbps, cap), cap, block, regions, layers, True, src,
                       rel_noise=float(se) if (se is not None and link is None) else 0.0, fit=fit,
                       measured_gbps=gbps), warnings


def decode_kept_tokens(hbm_only_sim) -> np.ndarray:
    """Tokens of each request the decode pool's own prefix cache holds: the HBM-only simulation's HBM hits (each
    decode instance keeps fleet.hbm_cache_fraction of its free HBM as the prefill side does; a what-if hit rate
    does not change what that cache holds)."""
    return np.asarray(hbm_only_sim.hit_tokens, float)[:, 0]


def moved_tokens(mode: str, requests, decode_kept) -> np.ndarray:
    """Tokens of KV each request moves from prefill to decode under ``fleet.handoff`` = ``mode`` (``decode_kept``:
    what the decode pool's simulated cache holds, used by ``sim``)."""
    I = np.asarray(requests.input_tokens, float)
    if mode == "full":
        return I
    if mode == "new":
        return np.asarray(requests.new_tokens, float)
    return np.maximum(I - np.asarray(decode_kept, float), 0.0)


@dataclass(frozen=True)
class Link:
    """The handoff's load on the fleet: mean bytes per request, and the requests/s each GPU's link carries."""

    bytes_per_request: float
    capacity_gbps: float

    @property
    def requests_per_s_per_gpu(self) -> float:
        return math.inf if self.bytes_per_request <= 0 else self.capacity_gbps * 1e9 / self.bytes_per_request


def link_load(cost: HandoffCost, tokens, kv_bytes_per_token: int) -> Link:
    return Link(float(np.mean(cost.nbytes(tokens, kv_bytes_per_token))), cost.link_gbps)


def splits(n_gpus: int, p: float, d: float, link: Link, fixed: Optional[int] = None) -> dict:
    """Which prefill:decode splits the link allows at their unconstrained rate min(P/p, D/d): the allowed prefill
    GPU counts (as ranges) and the split judged, with what it would need: ``fixed`` prefill GPUs (a fixed
    fleet.prefill_fraction), else the best split without the link."""
    allowed, best, judged = [], None, None
    for pg in range(1, n_gpus):
        dg = n_gpus - pg
        r = min(pg / p if p > 0 else math.inf, dg / d)
        need = r * link.bytes_per_request / min(pg, dg) / 1e9
        row = {"prefill_gpus": pg, "decode_gpus": dg, "requests_per_s": r, "link_gbps_per_gpu": need,
               "allowed": need <= link.capacity_gbps * (1 + 1e-12)}
        if best is None or r > best["requests_per_s"]:
            best = row
        if pg == fixed:
            judged = row
        if row["allowed"]:
            allowed.append(pg)
    return {"allowed_prefill_gpus": _ranges(allowed), "allowed_count": len(allowed), "of": n_gpus - 1,
            "judged": {**(judged or best), "why": "fleet.prefill_fraction" if judged else "the best without the link"}}


def _ranges(v: list) -> list:
    """[3, 4, 5, 9] -> [[3, 5], [9, 9]]."""
    out = []
    for x in v:
        if out and x == out[-1][1] + 1:
            out[-1][1] = x
        else:
            out.append([x, x])
    return out


def ranges_text(rs: list) -> str:
    return ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in rs) or "none"


def refusal(split: dict, link: Link, gpus: int) -> str:
    """Why the split judged (the fixed one, else the best without the link) is refused, in words ('' when the link
    carries it)."""
    u = split["judged"]
    if u["allowed"]:
        return ""
    return (f"the {u['prefill_gpus']}:{u['decode_gpus']} split ({u['why']}) would move "
            f"{fmt_rate(u['link_gbps_per_gpu'])} per GPU of its smaller side, over the link's "
            f"{fmt_rate(link.capacity_gbps)}; the link allows prefill GPUs {ranges_text(split['allowed_prefill_gpus'])} "
            f"of {gpus}")


def decode_cache_fraction(fl, mode: Optional[str] = None) -> float:
    """Share of a decode instance's free HBM its own prefix cache keeps (fleet.handoff new or sim, disaggregated;
    ``mode``: the mode priced, default the fleet's): the decode batch has the rest."""
    m = mode or fl.mode
    return float(fl.hbm_cache_fraction) if m == "disaggregated" and fl.handoff in ("new", "sim") else 0.0
