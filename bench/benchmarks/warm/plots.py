"""The warm family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.report.plotkit import colors, device_label, finish, ok_records, RUN_STYLES, save, series_key, stand_in_note, uniform_locality, plt


def warm_bandwidth(df: pd.DataFrame, path) -> Optional[str]:
    """Warm-tier fetch on demand: useful GB/s (the rows a step delivers; at uniform locality every one crossed the
    link) against row size (log-log), one line per method (and run), at
    each row size's largest rows per step (uniform locality); the link's peak drawn where the fingerprint gives
    it, and the contiguous pinned copy of the same bytes measured in the run."""
    d = uniform_locality(ok_records(df, ["warm_fetch", "warm_peer"]))
    if d.empty or "param.row_bytes" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    d = d.assign(run=series_key(d))
    if "param.rows" in d:
        d = d.assign(rows=d["param.rows"].fillna(-1))
        d = d[d["rows"] == d.groupby(["benchmark", "param.method", "param.row_bytes", "run"])["rows"].transform("max")]
    groups = list(d.groupby(["benchmark", "param.method", "run"]))
    for c, ((bench, method, run), g) in zip(colors(len(groups)), groups):
        g = g.sort_values("param.row_bytes")
        tier = "peer HBM" if bench == "warm_peer" else "host"
        y = g["metric.useful_gbps"].fillna(g["metric.gbps"]) if "metric.useful_gbps" in g else g["metric.gbps"]
        ax.plot(g["param.row_bytes"], y, marker="o", color=c, label=f"{method} ({tier}) {run}".strip())
    peak = d.get("metric.gbps_peak")
    if peak is not None and peak.notna().any():
        for p in sorted(peak.dropna().unique()):
            ax.axhline(p, color="black", ls=":", lw=1.2, label=f"link peak {p:.3g} GB/s")
    if "metric.contiguous_gbps" in d and d["metric.contiguous_gbps"].notna().any():
        ax.axhline(float(d["metric.contiguous_gbps"].max()), color="grey", ls="--", lw=1,
                   label="contiguous pinned copy (measured)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    finish(ax, "row size (bytes)", "useful GB/s (1e9 B/s of rows delivered per step)",
            f"Warm tier read on demand: bandwidth vs access granularity\n({device_label(d)}{stand_in_note(d)})")
    return save(fig, path)


def warm_step_latency(df: pd.DataFrame, path) -> Optional[str]:
    """Per-step latency of fetching k rows against k (log-log), one panel per method: p50 of single steps (line)
    and p99 (dashed), one colour per row size (uniform locality)."""
    d = uniform_locality(ok_records(df, ["warm_fetch"]))
    if d.empty or "metric.step_us_p50" not in d:
        return None
    methods = sorted(d["param.method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.4), sharey=True, squeeze=False)
    d = d.assign(run=series_key(d))
    sizes = sorted(d["param.row_bytes"].unique())
    palette = dict(zip(sizes, colors(len(sizes))))
    runs = list(dict.fromkeys(d["run"]))
    for ax, method in zip(axes[0], methods):
        for (rb, run), g in d[d["param.method"] == method].groupby(["param.row_bytes", "run"]):
            g = g.sort_values("param.rows")
            ls = RUN_STYLES[runs.index(run) % len(RUN_STYLES)]
            ax.plot(g["param.rows"], g["metric.step_us_p50"], marker="o", color=palette[rb], ls=ls,
                    label=f"{int(rb)} B p50 {run}".strip())
            ax.plot(g["param.rows"], g["metric.step_us_p99"], marker=".", color=palette[rb], ls="--", lw=0.8,
                    alpha=0.7)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        finish(ax, "rows per step (k)", "step latency (us): p50 solid, p99 dashed" if method == methods[0] else "",
                method, legend_size=6)
    fig.suptitle(f"Warm tier: step latency vs rows per step ({device_label(d)}{stand_in_note(d)})")
    return save(fig, path)
