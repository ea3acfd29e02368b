"""The warm tier in the throughput model: what a sparse-attention decode gets when each step reads its selected rows
from memory below HBM (host DRAM, a neighbour GPU) at the rate the run measured.

Fits (per tier and method, on the run's warm_fetch / warm_peer records at the preset's row size, uniform locality):
a step of ``rows`` rows takes t = t0 + rows x row_bytes / bandwidth; least squares with t0 >= 0 over the measured
rows axis, the relative RMS residual reported beside it.

Sparse decode (``sparse.top_k``): a decode step attends to top-k rows of each sequence's context per layer (plus
``sparse.local_tokens`` recent ones kept in HBM). HBM holds per sequence only those rows; the full KV lives in the
warm tier. Of the k rows, ``sparse.repeat_fraction`` were selected by the previous step and stay in HBM; the rest is
fetched, one call per layer for the instance's batch, its bytes split over the instance's GPUs. The step is the
measured decode step at a context of k + local tokens plus the fetch (exposed, or hidden behind the compute with
``sparse.overlap``). The batch is the largest HBM allows (and fleet.max_batch), capped by the warm tier's capacity
(fleet.host_bytes_per_gpu). Selecting the rows is priced separately when warm_search was measured: scoring every
context key in place at the measured keys/s.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from bench.core.units import bytes_binary, sig
from bench.model import fleet as F
from bench.model.costs import ok_records

TIERS = (("host", "warm_fetch", "host DRAM"), ("peer", "warm_peer", "a neighbour GPU's HBM"))


@dataclass
class WarmFit:
    """t(rows) = t0_s + rows x row_bytes / (gbps x 1e9) for one tier and method; ``row_bytes`` is the preset's row,
    ``fitted_row_bytes`` the row size the points were measured at (0: several, the peer's bytes axis)."""

    tier: str
    method: str
    row_bytes: int
    fitted_row_bytes: int
    t0_s: float
    gbps: float
    rel_rms: float
    points: int
    bytes_measured: tuple
    note: str = ""

    def step_s(self, rows) -> np.ndarray:
        return self.t0_s + np.asarray(rows, float) * self.row_bytes / (self.gbps * 1e9)

    def rows_measured_max(self) -> float:
        return self.bytes_measured[1] / self.row_bytes

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bytes_measured"] = list(self.bytes_measured)
        return d


def _uniform_ok(df, bench: str):
    """The ok records of ``bench`` at uniform locality (the fits' points)."""
    d = ok_records(df, bench)
    if "param.locality" in d:
        d = d[d["param.locality"].fillna("uniform") == "uniform"]
    return d


def fit_line(x: np.ndarray, t: np.ndarray) -> tuple[float, float, float]:
    """(t0_s, gbps, rel_rms) of t = t0 + x / bw over bytes ``x``, least squares with t0 >= 0 and bw > 0."""
    x, t = np.asarray(x, float), np.asarray(t, float)
    A = np.stack([np.ones_like(x), x], axis=1)
    (t0, slope), *_ = np.linalg.lstsq(A, t, rcond=None)
    if t0 < 0:  # through the origin
        t0, slope = 0.0, float(x @ t / (x @ x))
    if not slope > 0:
        raise ValueError("step time does not grow with the bytes fetched")
    rel = float(np.sqrt(np.mean(((t0 + slope * x - t) / t) ** 2)))
    return float(t0), float(1.0 / slope / 1e9), rel


def fit_warm(df, row_bytes: int) -> dict:
    """{"fits": {tier: {method: WarmFit}}, "notes": [...]}: warm_fetch at the measured row size nearest the preset's
    ``row_bytes`` that has >= 2 rows values (the rows axis); warm_peer over its row sizes (a fixed rows count, the
    bytes vary). A method without two distinct byte counts is left out with a note."""
    out, notes = {}, []
    for tier, bench, _ in TIERS:
        d = _uniform_ok(df, bench)
        if d.empty:
            continue
        for method, dm in d.groupby("param.method"):
            sizes = dm["param.row_bytes"].astype(int)
            if bench == "warm_fetch":
                usable = [s for s in sorted(set(sizes)) if dm.loc[sizes == s, "param.rows"].nunique() >= 2]
                if not usable:
                    notes.append(f"{bench} {method}: fewer than two rows values at any row size (no fit)")
                    continue
                rb = min(usable, key=lambda v: (abs(math.log(v / row_bytes)), v))
                sel, fitted = dm[sizes == rb], int(rb)
            else:
                sel, fitted = dm, (int(sizes.iloc[0]) if sizes.nunique() == 1 else 0)
            x = sel["metric.bytes"].astype(float).to_numpy()
            if len(set(x)) < 2:
                notes.append(f"{bench} {method}: one byte count measured (no fit)")
                continue
            try:
                t0, gbps, rel = fit_line(x, sel["metric.median_s"].astype(float).to_numpy())
            except ValueError as e:
                notes.append(f"{bench} {method}: {e}")
                continue
            note = "" if fitted == row_bytes else (f"fitted at {fitted} B rows" if fitted else
                                                   "fitted over the measured row sizes") + \
                f" (the preset's row is {row_bytes} B)"
            out.setdefault(tier, {})[method] = WarmFit(tier, str(method), int(row_bytes), fitted, t0, gbps, rel,
                                                       len(sel), (float(x.min()), float(x.max())), note)
    return {"fits": out, "notes": notes}


def search_rate(df) -> dict | None:
    """The fastest measured way to score host-resident keys: {method, keys_per_s, tokens} at the most tokens."""
    d = ok_records(df, "warm_search")
    if d.empty or "metric.keys_per_s" not in d:
        return None
    top = d[d["param.tokens"].astype(float) == d["param.tokens"].astype(float).max()]
    best = top.loc[top["metric.keys_per_s"].astype(float).idxmax()]
    return {"method": str(best["param.method"]), "keys_per_s": float(best["metric.keys_per_s"]),
            "tokens": int(best["param.tokens"])}


def sparse_decode(df, costs, shape, fl, sp, sizing) -> dict:
    """The sparse-decode mode's figures per tier and k (module docstring), beside the dense decode of the same
    fleet (``sizing``: bench.model.steps.FleetSizing), or ``skipped`` with why."""
    hbm, weights, g = sizing.hbm_bytes_per_gpu, sizing.weight_bytes, sizing.gpus_per_instance
    ctx, dense_batch = sizing.mean_decode_context, sizing.decode_batch
    row = int(shape.kv_bytes_per_token_per_layer)
    fitted = fit_warm(df, row)
    if not fitted["fits"]:
        return {"skipped": "no warm_fetch records with two or more rows values (run `python -m bench run "
                           "benchmark=warm`)", "notes": fitted["notes"]}
    kvb, layers = shape.kv_bytes_per_token, shape.layers
    local, rep = int(sp.local_tokens), float(sp.repeat_fraction)
    dense_step = float(costs.decode_step_s(dense_batch, ctx)) / g
    dense = {"batch": int(dense_batch), "step_s": dense_step, "tokens_per_s_per_gpu": dense_batch / dense_step / g,
             "context_tokens_per_gpu": dense_batch * ctx / g, "hbm_kv_bytes_per_gpu": dense_batch * ctx * kvb / g}
    search = search_rate(df)
    rows_out = []
    for tier, methods in fitted["fits"].items():
        for k in sorted(int(v) for v in sp.top_k):
            resident = k + local
            if resident >= ctx:
                rows_out.append({"tier": tier, "k": k, "skipped": f"k + local = {resident} >= the decode context "
                                                                  f"({ctx:.0f} tokens): nothing left out"})
                continue
            step_fn = lambda b: float(costs.decode_step_s(b, resident))  # noqa: E731
            b_hbm, why = F.decode_batch(g * hbm, weights, resident * kvb, fl.reserve_fraction, None, step_fn,
                                        int(fl.max_batch), g)
            b_warm = int(fl.host_bytes_per_gpu * g // (ctx * kvb)) if tier == "host" else b_hbm
            b = min(b_hbm, b_warm)
            if b < 1:
                rows_out.append({"tier": tier, "k": k, "skipped": why if b_hbm < 1 else
                                 f"the warm tier ({fl.host_bytes_per_gpu / 2**30:.0f} GiB per GPU) holds no sequence "
                                 f"of {ctx:.0f} tokens"})
                continue
            limit = why if b == b_hbm else "warm-tier capacity (fleet.host_bytes_per_gpu)"
            fetch_rows = b * k * (1 - rep) / g  # per GPU and layer
            best = min(methods.values(), key=lambda f: float(f.step_s(fetch_rows)))
            fetch = layers * float(best.step_s(fetch_rows))
            compute = float(costs.decode_step_s(b, resident)) / g
            step = max(compute, fetch) if sp.overlap else compute + fetch
            r = {"tier": tier, "k": k, "batch": int(b), "batch_limit": limit, "method": best.method,
                 "compute_s": compute, "fetch_s": fetch, "step_s": step, "tokens_per_s_per_gpu": b / step / g,
                 "speedup_vs_dense": (b / step) / (dense_batch / dense_step),
                 "context_tokens_per_gpu": b * ctx / g,
                 "hbm_kv_bytes_per_gpu": b * resident * kvb / g,
                 "hbm_freed_bytes_per_gpu": max(0.0, dense_batch * (ctx - resident) * kvb / g),
                 "warm_bytes_per_gpu": b * ctx * kvb / g,
                 "fetch_rows_per_layer_per_gpu": fetch_rows,
                 "extrapolation": max(1.0, fetch_rows / best.rows_measured_max())}
            if search:
                sel = b * ctx * layers / g / search["keys_per_s"]
                r["selection_s"] = sel
                r["tokens_per_s_per_gpu_with_selection"] = b / (step + sel) / g
            rows_out.append(r)
    return {"row_bytes": row, "context_tokens": ctx, "repeat_fraction": rep, "local_tokens": local,
            "overlap": bool(sp.overlap), "dense": dense, "search": search, "rows": rows_out,
            "fits": {t: {m: f.as_dict() for m, f in ms.items()} for t, ms in fitted["fits"].items()},
            "notes": fitted["notes"]}


def fit_quality(f: dict) -> str:
    """How firm a warm fit is: its residual, or that two points determine it exactly (no residual to show)."""
    if f["points"] <= 2:
        return f"a line through {f['points']} points, no residual to judge it by"
    return f"fit residual {f['rel_rms']:.0%} over {f['points']} points"


def clause(sd: dict | None, unit: str = "GPU") -> str:
    """The verdict's sparse-decode sentence: per tier, the best k's decode rate against dense, the context it
    holds, the HBM it frees and the warm-tier bytes it needs (with the fit it rests on)."""
    if not sd or sd.get("skipped"):
        return ""
    parts = []
    names = {t: n for t, _, n in TIERS}
    for tier, fits in sd["fits"].items():
        rows = [r for r in sd["rows"] if r["tier"] == tier and "step_s" in r]
        if not rows:
            continue
        best = max(rows, key=lambda r: r["tokens_per_s_per_gpu"])
        f = fits[best["method"]]
        parts.append(
            f"from {names[tier]} at top-{best['k']} ({best['method']}: {sig(f['t0_s'] * 1e6)} us + bytes / "
            f"{sig(f['gbps'])} GB/s, {fit_quality(f)}) decode gives {sig(best['tokens_per_s_per_gpu'], 4)} "
            f"tokens/s per {unit} ({best['speedup_vs_dense']:.2f}x dense, batch {best['batch']} by "
            f"{best['batch_limit']}), holds {sig(best['context_tokens_per_gpu'] / 1e6)}M tokens of context per {unit} "
            f"(dense {sig(sd['dense']['context_tokens_per_gpu'] / 1e6)}M), frees {bytes_binary(best['hbm_freed_bytes_per_gpu'])} "
            f"of HBM per {unit} at the dense batch and needs {bytes_binary(best['warm_bytes_per_gpu'])} of warm tier per "
            f"{unit}" + (f"; selecting in place ({sd['search']['method']}, {sig(sd['search']['keys_per_s'])} keys/s) "
                         f"brings it to {sig(best['tokens_per_s_per_gpu_with_selection'], 4)}"
                         if "tokens_per_s_per_gpu_with_selection" in best else "")
            + (f" (fetch extrapolated {sig(best['extrapolation'])}x beyond the measured rows)"
               if best["extrapolation"] > 1.5 else ""))
    if not parts:
        return ""
    return (f"Sparse decode ({sd['repeat_fraction']:.0%} of rows kept between steps, fetch "
            f"{'overlapped' if sd['overlap'] else 'exposed'}): " + "; ".join(parts) + ".")
