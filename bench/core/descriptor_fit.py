"""The cost of a handoff request fitted across measured points (light: numpy only; the handoff family's
handoff_fit record and plot and the throughput model's bench.model.handoff use it):

    t = t0 + n_desc x c + bytes / BW

t0 (s): what a request costs whatever it moves (the list made, posted, completed, released); c (s): each descriptor's
cost; BW (GB/s = 1e9 B/s): the rate of the bytes. Least squares on relative residuals (small and large requests count
alike) with t0, c, 1/BW >= 0. The block sizes vary n_desc at one request size; only several request sizes (context
lengths) tell t0 from bytes / BW: with one, BW is not fitted and t0 holds both.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class DescriptorFit:
    t0_s: float
    s_per_descriptor: float
    gbps: Optional[float]  # None: one request size measured (t0 includes bytes / BW at that size)
    rel_rms: float
    points: int
    descriptors: tuple  # (min, max) measured
    bytes: tuple  # (min, max) measured
    note: str = ""  # why BW is not fitted, where it is not
    gbps_rel_se: Optional[float] = None  # relative standard error of BW (from the fit's covariance), None: not fitted

    def predict_s(self, descriptors, nbytes):
        bw = 0.0 if self.gbps is None else np.asarray(nbytes, float) / (self.gbps * 1e9)
        return self.t0_s + np.asarray(descriptors, float) * self.s_per_descriptor + bw

    def as_metrics(self) -> dict:
        """The handoff_fit record's metrics: t0_us, us_per_descriptor, fit_gbps (absent when not separable),
        rel_rms_residual, points, and the measured ranges."""
        out = {"t0_us": self.t0_s * 1e6, "us_per_descriptor": self.s_per_descriptor * 1e6,
               "rel_rms_residual": self.rel_rms, "points": self.points,
               "descriptors_min": int(self.descriptors[0]), "descriptors_max": int(self.descriptors[1]),
               "bytes_min": int(self.bytes[0]), "bytes_max": int(self.bytes[1])}
        if self.gbps is not None:
            out["fit_gbps"] = self.gbps
        if self.gbps_rel_se is not None:
            out["fit_gbps_rel_se"] = self.gbps_rel_se
        return out


def _nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with every coefficient >= 0, exactly: the best of the feasible solutions over every subset of
    columns (three columns at most here)."""
    best, best_err = np.zeros(X.shape[1]), float(np.sum(y ** 2))
    for k in range(1, X.shape[1] + 1):
        for cols in itertools.combinations(range(X.shape[1]), k):
            sol, *_ = np.linalg.lstsq(X[:, cols], y, rcond=None)
            if (sol < 0).any():
                continue
            err = float(np.sum((X[:, cols] @ sol - y) ** 2))
            if err < best_err:
                best, best_err = np.zeros(X.shape[1]), err
                best[list(cols)] = sol
    return best


def fit_descriptor_cost(descriptors, nbytes, seconds) -> DescriptorFit:
    """Fit t = t0 + n_desc x c + bytes / BW to measured requests (median seconds each). Raises ValueError with why
    when the points cannot determine it (fewer than three, or one descriptor count)."""
    n, b, t = (np.asarray(v, dtype=float) for v in (descriptors, nbytes, seconds))
    if len(t) < 3:
        raise ValueError(f"{len(t)} point(s): the fit needs three or more")
    if len(np.unique(n)) < 2:
        raise ValueError("one descriptor count measured: the per-descriptor cost needs two or more block sizes")
    if not (np.isfinite(t).all() and (t > 0).all()):
        raise ValueError("a time that is not a finite number > 0")
    separable = len(np.unique(b)) >= 2
    X = np.stack([np.ones_like(t), n] + ([b] if separable else []), axis=1)
    w = 1.0 / t
    coef = _nnls(X * w[:, None], t * w)
    rel = float(np.sqrt(np.mean(((X @ coef - t) / t) ** 2)))
    gbps = 1.0 / coef[2] / 1e9 if (separable and coef[2] > 0) else None
    se = _rel_se(X * w[:, None], (X @ coef - t) * w, coef, 2) if gbps is not None else None
    note = "" if gbps is not None else ("one request size measured: t0 includes bytes / BW at that size (measure "
                                        "two or more context lengths)" if not separable else
                                        "the time does not grow with the bytes over the measured range: no BW")
    return DescriptorFit(float(coef[0]), float(coef[1]), gbps, rel, len(t), (n.min(), n.max()), (b.min(), b.max()),
                         note, se)


def _rel_se(Xw: np.ndarray, resid_w: np.ndarray, coef: np.ndarray, k: int) -> Optional[float]:
    """Relative standard error of coefficient ``k`` of a weighted least-squares fit: s^2 (Xw' Xw)^-1 with s^2 the
    residuals' variance over the degrees of freedom (a coefficient clamped at 0 has none: None). The relative error
    of BW = 1 / coef[k] is the same as coef[k]'s."""
    dof = len(resid_w) - Xw.shape[1]
    if dof < 1 or coef[k] <= 0:
        return None
    cov = float(np.sum(resid_w ** 2)) / dof * np.linalg.pinv(Xw.T @ Xw)
    return float(np.sqrt(max(cov[k, k], 0.0)) / coef[k])
