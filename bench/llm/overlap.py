"""Bookkeeping of concurrent work: how much two overlapped activities hide each other, how much each slows the
other, and the layer-wise load/compute pipeline (ideal and with measured interference). Pure functions of
timings in seconds, shared by the interference benchmarks and the throughput model.
"""
from __future__ import annotations

import math

import numpy as np


def pair_overlap(copy_alone_s: float, compute_alone_s: float, copy_under_s: float, compute_under_s: float,
                 together_s: float, noise: float = 0.0) -> dict:
    """Copy and compute run alone, then at once (same work, same run).

    overlap_ratio    share of the shorter activity hidden behind the longer: (sum - together) / shorter, clipped
                     to [0, 1] (1: together = the longer alone; 0: no better than one after the other);
                     overlap_raw keeps the unclipped value (< 0: worse than serial)
    together_vs_sum  together / (copy + compute alone): 1 = serial, 0.5 at best for equal halves
    together_vs_max  together / max(alone): 1 = perfect overlap
    compute_slowdown compute span under the copy / alone - 1; copy_slowdown likewise for the copy
    exposed_copy_s   time together adds over the compute alone: the copy time not hidden (>= 0)
    load_hidden      together within ``noise`` (relative) of the compute alone
    slowdown_noise   the relative noise band the slowdowns are read against
    """
    for name, v in (("copy_alone_s", copy_alone_s), ("compute_alone_s", compute_alone_s),
                    ("copy_under_s", copy_under_s), ("compute_under_s", compute_under_s), ("together_s", together_s)):
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name}={v!r}: timings must be finite and > 0")
    serial = copy_alone_s + compute_alone_s
    longest, shortest = max(copy_alone_s, compute_alone_s), min(copy_alone_s, compute_alone_s)
    raw = (serial - together_s) / shortest
    compute_slowdown = compute_under_s / compute_alone_s - 1
    return {
        "serial_s": serial,
        "max_s": longest,
        "together_vs_sum": together_s / serial,
        "together_vs_max": together_s / longest,
        "overlap_raw": raw,
        "overlap_ratio": float(min(1.0, max(0.0, raw))),
        "compute_slowdown": compute_slowdown,
        "copy_slowdown": copy_under_s / copy_alone_s - 1,
        "compute_slowdown_significant": bool(compute_slowdown > noise),
        "exposed_copy_s": max(0.0, together_s - compute_alone_s),
        "load_hidden": bool(together_s <= compute_alone_s * (1 + noise)),
        "slowdown_noise": noise,
    }


def noise_band(*noises: float) -> float:
    """Relative noise of a ratio of independent medians (IQR/median of each, added in quadrature)."""
    return float(math.sqrt(sum(float(n) ** 2 for n in noises if n is not None and math.isfinite(n))))


def pipeline_s(load_s, compute_s, layers):
    """Ideal time of ``layers`` layers where layer l's KV (load_s / layers each, loaded one after another on a
    copy engine) must arrive before its compute (compute_s / layers each): a + (L - 1) max(a, c) + c."""
    L = np.asarray(layers, float)
    a, c = np.asarray(load_s, float) / L, np.asarray(compute_s, float) / L
    return np.where(np.asarray(load_s, float) > 0, a + (L - 1) * np.maximum(a, c) + c, np.asarray(compute_s, float))


def ideal_exposed_s(load_s, compute_s, layers):
    """Load time left on the critical path of the ideal pipeline: max(load / L, load - compute (L - 1) / L)."""
    return pipeline_s(load_s, compute_s, layers) - np.asarray(compute_s, float)


def exposed_with_interference_s(load_s, compute_s, layers, copy_slowdown: float, compute_slowdown: float):
    """Exposed load time when, while both run, loads take (1 + copy_slowdown) and compute (1 + compute_slowdown)
    times as long: the pipeline of the slowed pair, minus the compute alone. The compute is slowed only while a
    load runs, i.e. for min(load', compute) of it."""
    load, comp = np.asarray(load_s, float), np.asarray(compute_s, float)
    load2 = load * (1 + copy_slowdown)
    overlapped = np.minimum(load2, comp)
    comp2 = comp + overlapped * compute_slowdown
    return np.where(load > 0, pipeline_s(load2, comp2, layers) - comp, 0.0)


def fit_interference(load_s, compute_s, together_s, layers, grid: int = 201) -> dict:
    """(copy_slowdown, compute_slowdown) >= 0 that best explain measured layer-wise points (together_s of
    ``layers`` layers loading ``load_s`` while computing ``compute_s``), by least squares over a grid of the
    relative error of the predicted together time (the prefill-with-load time the model uses). Returns both, the
    fit's relative RMS residual, and that of the ideal pipeline (no interference)."""
    load, comp, tog = (np.asarray(v, float) for v in (load_s, compute_s, together_s))
    L = np.asarray(layers, float) * np.ones_like(load)
    alphas = np.linspace(0.0, 2.0, grid)
    betas = np.linspace(0.0, 1.0, (grid + 1) // 2)
    best = (math.inf, 0.0, 0.0)
    for b in betas:  # vectorised over alpha
        pred = comp[None, :] + exposed_with_interference_s(load[None, :], comp[None, :], L[None, :], alphas[:, None], b)
        err = np.sqrt(np.mean(((pred - tog[None, :]) / tog[None, :]) ** 2, axis=1))
        i = int(np.argmin(err))
        if err[i] < best[0] - 1e-12:
            best = (float(err[i]), float(alphas[i]), float(b))
    ideal = comp + ideal_exposed_s(load, comp, L)
    return {"copy_slowdown": best[1], "compute_slowdown": best[2], "rel_rms": best[0],
            "ideal_rel_rms": float(np.sqrt(np.mean(((ideal - tog) / tog) ** 2))), "points": int(load.size)}
