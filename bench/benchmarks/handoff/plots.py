"""The handoff family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.core.descriptor_fit import DescriptorFit, fit_descriptor_cost
from bench.report.plotkit import RUN_STYLES, colors, device_label, finish, ok_records, plt, save, series_key

SERIES = ["param.op", "param.memory", "param.backend"]


def _series_fit(d: pd.DataFrame, fits: pd.DataFrame, key: tuple) -> Optional[DescriptorFit]:
    """The series' fit: its handoff_fit record of the run, else fitted here from the series' points (the same rule,
    bench.core.descriptor_fit); None where no fit holds."""
    if not fits.empty:
        m = fits[(fits[SERIES].astype(str) == [str(k) for k in key[:3]]).all(axis=1) & (fits["run"] == key[3])]
        if len(m):
            r = m.iloc[0]
            gbps = r.get("metric.fit_gbps")
            return DescriptorFit(r["metric.t0_us"] * 1e-6, r["metric.us_per_descriptor"] * 1e-6,
                                 None if gbps is None or gbps != gbps else float(gbps), r["metric.rel_rms_residual"],
                                 int(r["metric.points"]), (), ())
    try:
        return fit_descriptor_cost(d["metric.descriptors"], d["metric.bytes"], d["metric.median_s"])
    except ValueError:
        return None


def _fit_label(f: Optional[DescriptorFit]) -> str:
    if f is None:
        return ""
    bw = f", {f.gbps:.3g} GB/s" if f.gbps is not None else ""
    return (f"c = {f.s_per_descriptor * 1e6:.2f} us/descriptor, t0 = {f.t0_s * 1e6:.0f} us{bw} "
            f"(residual {f.rel_rms:.0%})")


def handoff_bandwidth(df: pd.DataFrame, path) -> Optional[str]:
    """GB/s of KV bytes of one request against block size (log x), one colour per op, memory kind and backend (and
    run), a line style per context length; each series labelled with its fit t = t0 + n_desc x c + bytes / BW (the
    per-descriptor cost c: what small blocks pay) and the fit's GB/s drawn thin beside the measured points."""
    d = ok_records(df, ["handoff_request"])
    if d.empty or "param.block_tokens" not in d:
        return None
    fits = ok_records(df, ["handoff_fit"])
    d = d.assign(run=series_key(d))
    if not fits.empty:
        fits = fits.assign(run=series_key(fits))
    fig, ax = plt.subplots(figsize=(9, 5.2))
    groups = list(d.groupby(SERIES + ["run"]))
    ctxs = sorted(d["param.context_tokens"].unique())
    for c, (key, g) in zip(colors(len(groups)), groups):
        label = f"{key[0]} {key[1]} {key[2]} {key[3]}".strip()
        fit = _series_fit(g, fits, key)
        labelled = False
        for i, ctx in enumerate(ctxs):
            s = g[g["param.context_tokens"] == ctx].sort_values("param.block_tokens")
            if s.empty:
                continue
            ls = RUN_STYLES[i % len(RUN_STYLES)]
            ax.plot(s["param.block_tokens"], s["metric.gbps"], marker="o", color=c, ls=ls,
                    label=None if labelled else (f"{label}: {_fit_label(fit)}" if fit else label))
            labelled = True
            if fit is not None and fit.gbps is not None:
                pred = s["metric.bytes"] / fit.predict_s(s["metric.descriptors"], s["metric.bytes"]) / 1e9
                ax.plot(s["param.block_tokens"], pred, color=c, ls=ls, lw=0.7, alpha=0.5)
    ax.set_xscale("log", base=2)
    styles = ", ".join(f"'{RUN_STYLES[i % len(RUN_STYLES)]}' {int(x)} tokens" for i, x in enumerate(ctxs))
    finish(ax, "block size (tokens)", "GB/s of KV bytes (1e9 B/s) per request",
           f"Disaggregated handoff through NIXL, one request ({device_label(d)})\n"
           f"thin: the fit t = t0 + n_desc x c + bytes / BW; context {styles}")
    return save(fig, path)


def handoff_layerwise(df: pd.DataFrame, path) -> Optional[str]:
    """Layer by layer: the time exposed after the last layer's compute (median, p99 dashed) against block size, one
    line per op, memory kind and backend (and run), beside the whole request alone (dotted)."""
    d = ok_records(df, ["handoff_layerwise"])
    if d.empty or "metric.exposed_ms" not in d:
        return None
    d = d.assign(run=series_key(d))
    fig, ax = plt.subplots(figsize=(8.5, 5))
    groups = list(d.groupby(SERIES + ["param.context_tokens", "run"]))
    for c, (key, g) in zip(colors(len(groups)), groups):
        g = g.sort_values("param.block_tokens")
        label = f"{key[0]} {key[1]} {key[2]} {int(key[3])} tokens {key[4]}".strip()
        ax.plot(g["param.block_tokens"], g["metric.exposed_ms"], marker="o", color=c, label=f"{label}: exposed")
        ax.plot(g["param.block_tokens"], g["metric.exposed_ms_p99"], ls="--", color=c, lw=0.8)
        ax.plot(g["param.block_tokens"], g["metric.whole_request_ms"], ls=":", color=c, lw=1,
                label=f"{label}: whole request alone")
    ax.set_xscale("log", base=2)
    compute = ", ".join(f"{v:.3g}" for v in sorted(d["metric.compute_ms"].unique()))
    finish(ax, "block size (tokens)", "ms after the last layer's compute (p99 dashed)",
           f"Handoff layer by layer: what compute does not hide ({device_label(d)})\nprefill compute {compute} ms")
    return save(fig, path)
