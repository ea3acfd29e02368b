"""Measured costs fitted from a run's records: prefill time, decode step time, and tier load time.

prefill  t_p(n, c) = a0 + a1 n + a2 (n c + n(n+1)/2)     from layer_prefill: model_prefill_s
decode   t_d(B, c) = b0 + b1 B + b2 B c                  from layer_decode: model_decode_step_s
load     t_X(bytes) = latency_X + bytes / bandwidth_X    host: paged_onload (best method at the block size),
                                                        storage: gpu_file_read_* or file_read + the host hop
exposed  the part of a load left on the prefill's critical path. Measured (layerwise_load records): the layer
         pipeline with the copy and compute slowdowns fitted to the run's points; else the bandwidth estimate:
         the load overlapped with compute (max) or added to it (sum), per fleet.overlap_load
Coefficients are non-negative (a negative cost is unphysical); fit quality is the relative RMS residual.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

from bench.core.units import sig
from bench.core.errors import UserError
from bench.core.stats import point_noise
from bench.llm.overlap import exposed_with_interference_s, fit_interference
from bench.llm.shapes import causal_pairs
from bench.model.inputs import supply


def nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0 (small active-set loop; a handful of features)."""
    active = list(range(X.shape[1]))
    coef = np.zeros(X.shape[1])
    while active:
        sol, *_ = np.linalg.lstsq(X[:, active], y, rcond=None)
        if (sol >= 0).all():
            coef[:] = 0
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


@dataclass
class Fit:
    name: str
    features: list
    coef: np.ndarray
    rel_rms: float
    n_points: int
    ranges: dict
    notes: list = field(default_factory=list)
    kernel: Optional[str] = None  # the attention kernel of the records fitted (None: not recorded by the run)

    def as_dict(self) -> dict:
        return {"features": self.features, "coef": [float(c) for c in self.coef], "rel_rms_residual": self.rel_rms,
                "points": self.n_points, "measured_ranges": self.ranges, "notes": self.notes,
                "attention_kernel": self.kernel}


def _fit(name, X, y, features, ranges) -> Fit:
    w = 1.0 / y  # relative residuals: small and large points count alike
    coef = nnls(X * w[:, None], y * w)
    pred = X @ coef
    rel = float(np.sqrt(np.mean(((pred - y) / y) ** 2)))
    return Fit(name, features, coef, rel, len(y), ranges)



def ok_records(df: pd.DataFrame, bench: str) -> pd.DataFrame:
    """The run's ok records of one benchmark."""
    if df.empty:
        return df
    return df[(df["benchmark"] == bench) & (df["status"] == "ok")]


@dataclass
class Points:
    """The measured points a fit uses: two axes, the value, and each point's relative measurement noise."""

    bench: str
    axes: tuple
    a: np.ndarray
    b: np.ndarray
    y: np.ndarray
    noise: np.ndarray  # relative standard error of each point's median
    kernel: Optional[str] = None  # the attention kernel every point ran (None: not recorded)


def kernels_of(d: pd.DataFrame) -> dict:
    """{attention kernel: points} of layer records (records that do not say: None)."""
    col = d["attention_kernel"] if "attention_kernel" in d else pd.Series([None] * len(d), index=d.index)
    return {(None if k != k else k): int(n) for k, n in col.value_counts(dropna=False).items()}


def points(df: pd.DataFrame, bench: str, axes: tuple[str, str], y: str, need: str,
           kernel: Optional[str] = None) -> Points:
    """The ok records of ``bench`` as fit points. Records of different attention kernels are never fitted
    together (a no-context prefill on cuDNN and an after-context one on FlashAttention-2 is no cost curve): a run
    that holds several is refused with one line unless ``kernel`` (attention_kernel=) names one."""
    d = ok_records(df, bench)
    if d.empty:
        raise UserError(f"the run has no {bench} records: run `python -m bench run {need}` with the same model first")
    kinds = kernels_of(d)
    if kernel is not None:
        if kernel not in kinds:
            raise UserError(f"attention_kernel={kernel}: no {bench} record ran it; this run's {bench} kernels: "
                            + ", ".join(f"{k} ({n} points)" for k, n in kinds.items()))
        d = d[d["attention_kernel"] == kernel]
    elif len(kinds) > 1:
        raise UserError(f"{bench} records come from {len(kinds)} attention kernels ("
                        + ", ".join(f"{k or 'unrecorded'}: {n} points" for k, n in kinds.items())
                        + "): one cost curve takes one kernel; name it with attention_kernel=NAME, or measure "
                        "with one kernel (layers.attention=best does)")
    a, b = (d[f"param.{ax}"].astype(float).to_numpy() for ax in axes)
    vals = d[f"metric.{y}"].astype(float).to_numpy()
    require_positive(d, bench, y, vals)
    return Points(bench, axes, a, b, vals, point_noise(d), kernel if kernel is not None else next(iter(kinds)))


def require_positive(d: pd.DataFrame, bench: str, metric: str, vals) -> None:
    """A time or bandwidth the model uses must be a finite number > 0: a corrupt record is named, never fitted."""
    bad = ~(np.isfinite(vals) & (np.asarray(vals) > 0))
    if bad.any():
        row = d.iloc[int(np.argmax(bad))]
        params = " ".join(f"{c[6:]}={row[c]}" for c in d.columns if c.startswith("param.") and row[c] == row[c])
        raise UserError(f"{bench} ({params}) has {metric}={vals[int(np.argmax(bad))]!r} in {int(bad.sum())} "
                        f"record(s): a time or bandwidth must be a finite number > 0; the record is corrupt")


PREFILL = ("layer_prefill", ("n_new", "n_ctx"), "model_prefill_s", supply("layer_prefill"))
DECODE = ("layer_decode", ("batch", "ctx"), "model_decode_step_s", supply("layer_decode"))


def fit_points(p: Points, idx: Optional[np.ndarray] = None, jitter: Optional[np.ndarray] = None) -> Fit:
    """Fit a prefill or decode cost on points ``p`` (rows ``idx``, values x (1 + ``jitter``) when resampling)."""
    a, b, y = (p.a, p.b, p.y) if idx is None else (p.a[idx], p.b[idx], p.y[idx])
    if jitter is not None:
        y = y * np.clip(1 + jitter, 0.05, None)
    if p.bench == "layer_prefill":
        feats, names = [np.ones_like(a), a, causal_pairs(a, b)], ["seconds", "per_new_token", "per_attention_pair"]
    else:
        feats, names = [np.ones_like(a), a, a * b], ["seconds", "per_sequence", "per_sequence_context_token"]
    f = _fit(p.bench, np.stack(feats, axis=1), y, names,
             {ax: [float(v.min()), float(v.max())] for ax, v in zip(p.axes, (a, b))})
    f.notes += [f"only one {ax} measured: its term is not separable" for ax, v in zip(p.axes, (a, b))
                if len(np.unique(v)) < 2]
    f.kernel = p.kernel
    return f


def fit_prefill(df: pd.DataFrame, kernel: Optional[str] = None) -> Fit:
    return fit_points(points(df, *PREFILL, kernel=kernel))


def fit_decode(df: pd.DataFrame, kernel: Optional[str] = None) -> Fit:
    return fit_points(points(df, *DECODE, kernel=kernel))


@dataclass
class Tier:
    """Loading KV from a tier into HBM: seconds = latency_s + bytes / (gbps * 1e9). ``serial_gbps`` is the part of
    that path that runs before the prefill starts and cannot overlap it (a storage read into host memory: the
    replay, like a simple engine, reads the file first, then loads layer by layer from host); the rest overlaps
    the prefill layer by layer. The serial part carries the latency."""

    name: str
    gbps: float
    latency_s: float
    source: str
    serial_gbps: Optional[float] = None

    def load_s(self, nbytes):
        return np.where(np.asarray(nbytes) > 0, self.latency_s + np.asarray(nbytes) / (self.gbps * 1e9), 0.0)

    def serial_s(self, nbytes, requests=1):
        """Seconds of the load on the prefill's critical path no matter what overlaps (0 for host loads): one
        latency per read request (``requests`` reads issued one after another) plus the bytes at serial_gbps."""
        if self.serial_gbps is None:
            return np.zeros_like(np.asarray(nbytes, float))
        return np.where(np.asarray(nbytes) > 0,
                        requests * self.latency_s + np.asarray(nbytes) / (self.serial_gbps * 1e9), 0.0)


def host_tier(df: pd.DataFrame, block_tokens: int) -> Tier:
    d = ok_records(df, "paged_onload")
    if d.empty:
        raise UserError("the run has no paged_onload records (host tier): run `python -m bench run "
                        f"{supply('paged_onload')}` with the same model first")
    require_positive(d, "paged_onload", "gbps", d["metric.gbps"].astype(float).to_numpy())
    bt = d["param.block_tokens"].astype(float)
    nearest = d[(bt - block_tokens).abs() == (bt - block_tokens).abs().min()]
    best = nearest.loc[nearest["metric.gbps"].astype(float).idxmax()]
    lat = 0.0
    small = ok_records(df, "h2d_pinned")
    if not small.empty and "metric.latency_us" in small and small["metric.latency_us"].notna().any():
        lat = float(small["metric.latency_us"].dropna().min()) * 1e-6
    return Tier("host", float(best["metric.gbps"]), lat,
                f"paged_onload {best['param.method']}/{best['param.layout']} at {int(best['param.block_tokens'])} "
                f"tokens/block; latency from h2d_pinned")


def storage_tier(df: pd.DataFrame, block_bytes: int, host: Tier) -> Optional[Tier]:
    """GPU <- file: KvikIO if measured, else file_read followed by the host hop (serial, conservative)."""
    for bench in ("gpu_file_read_kvikio", "gpu_file_read_bounce"):
        d = ok_records(df, bench)
        if not d.empty:
            require_positive(d, bench, "gbps", d["metric.gbps"].astype(float).to_numpy())
            best = d.loc[d["metric.gbps"].astype(float).idxmax()]
            return Tier("storage", float(best["metric.gbps"]), 0.0,
                        f"{bench} (request {int(best['param.request_bytes'])} B, qd {int(best['param.queue_depth'])}; "
                        "read before the prefill, not overlapped)", serial_gbps=float(best["metric.gbps"]))
    d = ok_records(df, "file_read")
    if not d.empty and "param.engine" in d:  # tierbench's own engines; fio's records are its reference
        d = d[d["param.engine"].fillna("threads") != "fio"]
    if d.empty:
        return None
    require_positive(d, "file_read", "gbps", d["metric.gbps"].astype(float).to_numpy())
    rb = d["param.request_bytes"].astype(float)
    near = d[(rb - block_bytes).abs() == (rb - block_bytes).abs().min()]
    best = near.loc[near["metric.gbps"].astype(float).idxmax()]
    file_gbps = float(best["metric.gbps"])
    gbps = 1.0 / (1.0 / file_gbps + 1.0 / host.gbps)
    return Tier("storage", gbps, float(best.get("metric.lat_p50_us", 0.0) or 0.0) * 1e-6,
                f"file_read {int(best['param.request_bytes'])} B qd {int(best['param.queue_depth'])} "
                f"({sig(file_gbps)} GB/s, before the prefill) then host hop ({sig(host.gbps)} GB/s, layer by layer)",
                serial_gbps=file_gbps)


@dataclass
class Exposure:
    """Measured layer-wise load/compute overlap: while both run, loads take (1 + copy_slowdown) and compute
    (1 + compute_slowdown) times as long; the rest is the ideal layer pipeline (bench.llm.overlap)."""

    copy_slowdown: float
    compute_slowdown: float
    rel_rms: float
    ideal_rel_rms: float
    points: int
    source: str

    def exposed_s(self, load_s, compute_s, layers: int):
        return exposed_with_interference_s(load_s, compute_s, layers, self.copy_slowdown, self.compute_slowdown)

    def as_dict(self) -> dict:
        return {"copy_slowdown": self.copy_slowdown, "compute_slowdown": self.compute_slowdown,
                "rel_rms_residual": self.rel_rms, "ideal_pipeline_rel_rms": self.ideal_rel_rms,
                "points": self.points, "source": self.source}


def fit_exposure(df: pd.DataFrame) -> Optional[Exposure]:
    """Fit the interference of layer-wise loads from the run's layerwise_load records (None without them)."""
    d = ok_records(df, "layerwise_load")
    if d.empty:
        return None
    col = lambda m: d[f"metric.{m}"].astype(float).to_numpy()  # noqa: E731
    f = fit_interference(col("load_s_alone"), col("compute_s_alone"), col("together_s"), col("layers_run"))
    tiers = sorted({str(v) for v in d["param.tier_gbps"]})
    return Exposure(f["copy_slowdown"], f["compute_slowdown"], f["rel_rms"], f["ideal_rel_rms"], f["points"],
                    f"layerwise_load: {f['points']} points, {int(col('layers_run').max())} layers, tiers "
                    f"{', '.join(tiers)} GB/s")


def combine(compute_s, load_s, overlap: bool):
    """Bandwidth estimate of a prefill that also loads cached KV: overlapped layer by layer (max) or serial (sum)."""
    return np.maximum(compute_s, load_s) if overlap else compute_s + load_s


@dataclass
class Costs:
    prefill: Fit
    decode: Fit
    tiers: dict  # name -> Tier ("hbm" has no load cost)
    kv_bytes_per_token: int
    exposure: Optional[Exposure] = None  # measured layer-wise overlap; None = bandwidth estimate
    layers: int = 1  # model layers the load pipeline spans

    def prefill_with_load_s(self, n_new, n_ctx, load_s, overlap: bool = True, scale: float = 1.0, layers=None,
                            serial_s=0.0):
        """Prefill GPU-seconds (x ``scale``, e.g. the share of layers run) while ``load_s`` of cached KV loads
        layer by layer: compute + measured exposed load when the run measured it, else :func:`combine`; plus
        ``serial_s``, the part of a load that precedes the prefill (a storage read) and overlaps nothing."""
        compute = self.prefill_s(n_new, n_ctx) * scale
        if self.exposure is not None:
            return compute + self.exposure.exposed_s(load_s, compute, layers or self.layers) + serial_s
        return combine(compute, load_s, overlap) + serial_s

    def load_split(self, tier: str, tokens, requests: int = 1):
        """(layer-wise overlappable seconds, serial seconds) of loading ``tokens`` of KV from ``tier``; the serial
        part (a storage read before the prefill) is ``requests`` reads issued one after another."""
        t = np.asarray(tokens, float)
        if tier == "hbm":
            z = np.zeros_like(t)
            return z, z
        tr = self.tiers[tier]
        nbytes = t * self.kv_bytes_per_token
        return np.maximum(tr.load_s(nbytes) - tr.serial_s(nbytes), 0.0), tr.serial_s(nbytes, requests)

    def load_cost_used(self) -> dict:
        if self.exposure is not None:
            return {"used": "measured_exposed", "detail": self.exposure.source, **self.exposure.as_dict()}
        return {"used": "bandwidth", "detail": "bytes / measured tier GB/s, overlapped with compute (max) or added "
                                               "(sum) per fleet.overlap_load; no layerwise_load records used"}

    def prefill_s(self, n_new, n_ctx):
        n, c = np.asarray(n_new, float), np.asarray(n_ctx, float)
        a = self.prefill.coef
        return np.where(n > 0, a[0] + a[1] * n + a[2] * causal_pairs(n, c), 0.0)

    def decode_step_s(self, batch, ctx):
        b, c = np.asarray(batch, float), np.asarray(ctx, float)
        d = self.decode.coef
        return d[0] + d[1] * b + d[2] * b * c

