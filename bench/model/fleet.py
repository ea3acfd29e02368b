"""Fleet arithmetic: GPU-seconds per request -> throughput of N GPUs, best prefill:decode split, Amdahl bound.

Everything is in GPU-seconds per request (measured single-GPU costs; ideal tensor parallelism keeps
GPU-seconds constant). Disaggregated: P prefill GPUs and D = N - P decode GPUs serve min(P/p, D/d) requests/s,
and at most ``link`` x min(P, D) when each request's KV handoff loads the links (``link``: requests/s one GPU's link
carries, bench.model.handoff); colocated: N/(p + d). Reuse lowers p only; the bound when prefill vanishes is (p0 + d)/d = 1/(1 - prefill share).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Split:
    prefill_gpus: int
    decode_gpus: int
    requests_per_s: float
    link_bound: bool = False  # the handoff's link, not prefill or decode, sets the rate


def split_rate(pg: int, dg: int, p: float, d: float, link: float = math.inf) -> tuple[float, bool]:
    """(requests/s of ``pg`` prefill and ``dg`` decode GPUs, whether the link bounds it). With a handoff (a finite
    ``link``) every request's KV leaves a prefill GPU, so a split without one carries nothing."""
    work = min(pg / p if p > 0 else math.inf, dg / d if dg else 0.0)
    if not math.isfinite(link) or work == 0:
        return work, False
    carried = link * min(pg, dg)
    return (carried, True) if carried < work else (work, False)


def best_split(n_gpus: int, p: float, d: float, link: float = math.inf) -> Split:
    """The integer prefill:decode split of ``n_gpus`` with the highest request rate (P = 0 only when p = 0);
    ``link``: requests/s one GPU's link carries (the handoff), inf: no limit."""
    if d <= 0:
        raise ValueError("decode GPU-seconds per request must be > 0")
    best = None
    for pg in range(0, n_gpus):
        dg = n_gpus - pg
        if pg == 0 and p > 0:
            continue
        rate, bound = split_rate(pg, dg, p, d, link)
        if best is None or rate > best.requests_per_s:
            best = Split(pg, dg, rate, bound)
    return best


def fixed_split(n_gpus: int, prefill_fraction: float, p: float, d: float, link: float = math.inf) -> Split:
    pg = int(round(n_gpus * prefill_fraction))
    dg = n_gpus - pg
    return Split(pg, dg, *split_rate(pg, dg, p, d, link))


def colocated_rate(n_gpus: int, p: float, d: float, interference: float = 0.0) -> float:
    """Every GPU does both; ``interference`` is the fraction of capacity lost to mixing them (default 0)."""
    return n_gpus * (1 - interference) / (p + d)


def prefill_share(p: float, d: float) -> float:
    return p / (p + d)


def amdahl_bound(p0: float, d: float) -> float:
    """Speedup if prefill cost vanished entirely: 1 / (1 - prefill share)."""
    return (p0 + d) / d


def speedup(p0: float, px: float, d: float) -> float:
    """Continuous-split speedup of reuse: (p0 + d) / (px + d)."""
    return (p0 + d) / (px + d)


def decode_batch(hbm_bytes_per_instance: float, weight_bytes: float, kv_bytes_per_seq: float, reserve: float,
                 slo_s_per_token: float | None, step_s, max_batch: int, gpus_per_instance: int,
                 cache_fraction: float = 0.0) -> tuple[int, str]:
    """Largest decode batch allowed by HBM (after weights, a reserve and the share ``cache_fraction`` of the rest a
    decode-side prefix cache keeps) and by the per-token latency SLO. ``step_s(b)`` is the single-GPU step time; an
    instance of g GPUs runs it in step_s(b)/g (ideal TP)."""
    free = (hbm_bytes_per_instance * (1 - reserve) - weight_bytes) * (1 - cache_fraction)
    if free <= kv_bytes_per_seq:
        return 0, "weights leave no HBM for a single sequence's KV cache"
    b_mem = int(free // kv_bytes_per_seq)
    b, why = min(b_mem, max_batch), ("HBM" if b_mem <= max_batch else "max_batch")
    if slo_s_per_token:
        lo, hi = 0, b
        while lo < hi:  # largest b with step_s(b)/g <= slo (step time grows with b)
            mid = (lo + hi + 1) // 2
            if step_s(mid) / gpus_per_instance <= slo_s_per_token:
                lo = mid
            else:
                hi = mid - 1
        if lo < b:
            b, why = lo, "latency SLO"
        if b == 0:
            return 0, f"even batch 1 misses the {slo_s_per_token * 1e3:.1f} ms/token SLO"
    return b, why
