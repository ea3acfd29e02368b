"""The statistics of measured evidence, in one module: the noise of a measured point, robust spread, bootstrap
resampling and central intervals. Used by the model's fits and verdict (bench.model) and by run comparison
(bench.report.compare); imports nothing of bench."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

SE_MEDIAN = 1.2533  # standard error of a median = 1.2533 x sd / sqrt(n) (normal samples)
IQR_TO_SD = 1.349  # sd = IQR / 1.349 (normal samples)
MAD_TO_SD = 1.4826  # sd = 1.4826 x median absolute deviation (normal samples)


def point_noise(d: pd.DataFrame) -> np.ndarray:
    """Relative standard error of each record's median from its IQR/median and sample count (0 where unknown)."""
    noise = pd.to_numeric(d.get("metric.noise", pd.Series(0.0, index=d.index)), errors="coerce").fillna(0.0)
    n = pd.to_numeric(d.get("metric.n", pd.Series(1, index=d.index)), errors="coerce").fillna(1).clip(lower=1)
    rel = SE_MEDIAN * noise.to_numpy(float) / IQR_TO_SD / np.sqrt(n.to_numpy(float))
    return np.where(np.isfinite(rel), rel, 0.0)


def robust_sd(x) -> float:
    """The standard deviation a normal sample of ``x``'s median absolute deviation has (0 for fewer than 3)."""
    x = np.asarray(list(x), float)
    if len(x) < 3:
        return 0.0
    return float(MAD_TO_SD * np.median(np.abs(x - np.median(x))))


def interval(values, level: float) -> tuple[float, float]:
    """The central ``level`` interval (percentiles) of the finite ``values``; (nan, nan) when none is finite."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if not v.size:
        return math.nan, math.nan
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def resample(p, rng: np.random.Generator):
    """Bootstrap rows of fit points ``p`` (bench.model.costs.Points) and a jitter by each row's noise."""
    idx = rng.integers(0, len(p.y), len(p.y))
    return idx, p.noise[idx] * rng.standard_normal(len(idx))


def bootstrap(evaluate: Callable[[np.random.Generator, bool, bool], dict], n: int, seed: int,
              prefill: bool = True, decode: bool = True) -> dict[str, list]:
    """``evaluate(rng, resample_prefill, resample_decode)`` over ``n`` resamples: {quantity: [values]}."""
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {}
    for _ in range(n):
        for k, v in evaluate(rng, prefill, decode).items():
            out.setdefault(k, []).append(v)
    return out
