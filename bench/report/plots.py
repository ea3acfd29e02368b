"""Plots from a records DataFrame (bench.core.store.load). Each function draws one figure into ``path`` (PNG) and
returns the path, or None when the run has no data for it. Titles carry the device so a picture stays
readable outside its report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def _ok(df: pd.DataFrame, benchmarks) -> pd.DataFrame:
    if df.empty or "benchmark" not in df:
        return df.iloc[0:0]
    d = df[(df["benchmark"].isin(list(benchmarks))) & (df["status"] == "ok")]
    return d


def _label(df: pd.DataFrame) -> str:
    names = df["gpu_name"].dropna().unique() if "gpu_name" in df else []
    devs = df["device"].dropna().unique() if "device" in df else []
    return ", ".join(map(str, names)) or ", ".join(map(str, devs)) or "?"


def _finish(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 7, grid_which: str = "major") -> None:
    """Labels, title, grid and legend: the same closing steps of every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which=grid_which)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)


def _save(fig, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _series_key(df: pd.DataFrame) -> pd.Series:
    """Tells runs apart when several are plotted together (e.g. H100 vs H200): GPU name (or device) + run id."""
    if df["run_dir"].nunique() > 1 if "run_dir" in df else df["run_id"].nunique() > 1:
        return df["gpu_name"].fillna(df["device"]).astype(str) + " " + df["run_id"].astype(str)
    return pd.Series([""] * len(df), index=df.index)


def colors(n: int) -> list:
    """n distinct colours: tab10 up to 10 series, tab20 up to 20, then evenly spaced hues (never a reused colour)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("hsv")(i / n) for i in range(n)]


RUN_STYLES = ["-", "--", ":", "-."]


def bandwidth_vs_size(df: pd.DataFrame, path) -> Optional[str]:
    """GB/s of the contiguous copies against transfer size (log x), one line per benchmark (and run)."""
    d = _ok(df, ["h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable", "bidir_pinned", "d2d"])
    if d.empty or "param.size_bytes" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    key = _series_key(d)
    groups = list(d.groupby([d["benchmark"], key]))
    for c, ((name, run), g) in zip(colors(len(groups)), groups):
        g = g.sort_values("param.size_bytes")
        ax.plot(g["param.size_bytes"], g["metric.gbps"], marker="o", color=c, label=f"{name} {run}".strip())
    peak = d.get("metric.gbps_peak")
    if peak is not None and peak.notna().any():
        for p in sorted(peak.dropna().unique()):
            ax.axhline(p, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    _finish(ax, "transfer size (bytes)", "GB/s (1e9 B/s)", f"Host <-> device copy bandwidth ({_label(d)})")
    return _save(fig, path)


def _two_panels(d: pd.DataFrame, names, groups, x: str, label, xlabel: str, ylabel: str, title: str, path,
                extra=None) -> str:
    """One panel per benchmark in ``names``: metric.gbps against ``x``, one line per ``groups`` value."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    d = d.assign(run=_series_key(d))
    runs = list(dict.fromkeys(d["run"]))
    for ax, name in zip(axes, names):
        g0 = d[d["benchmark"] == name]
        series = list(g0.groupby(groups + ["run"]))
        for c, (key, g) in zip(colors(len(series)), series):
            g = g.sort_values(x)
            run = key[-1]
            ax.plot(g[x], g["metric.gbps"], marker="o", color=c, ls=RUN_STYLES[runs.index(run) % len(RUN_STYLES)],
                    label=f"{label(key[:-1])} {run}".strip())
        if extra is not None and not g0.empty:
            extra(ax, g0)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{title} ({_label(d)})")
    return _save(fig, path)


def paged_methods(df: pd.DataFrame, path) -> Optional[str]:
    """Paged KV offload/onload GB/s against block size, per method and layout, with the contiguous figure."""
    d = _ok(df, ["paged_offload", "paged_onload"])
    if d.empty:
        return None

    def contiguous(ax, g0):
        for i, (run, g) in enumerate(g0.groupby("run")):
            ax.axhline(g["metric.contiguous_gbps"].median(), color="black", ls=RUN_STYLES[i % len(RUN_STYLES)], lw=1,
                       label=f"contiguous copy {run}".strip())

    return _two_panels(d, ["paged_offload", "paged_onload"], ["param.method", "param.layout"], "param.block_tokens",
                       lambda k: f"{k[0]} / {k[1]}", "block size (tokens)", "GB/s of KV bytes",
                       "Paged KV transfer methods", path, extra=contiguous)


def storage_vs_queue_depth(df: pd.DataFrame, path) -> Optional[str]:
    """Storage GB/s against queue depth, per engine (aio, threads, fio beside them), request size and pattern,
    read and write."""
    d = _ok(df, ["file_read", "file_write"])
    if d.empty:
        return None
    d = d.assign(**{"param.engine": d["param.engine"].fillna("threads") if "param.engine" in d else "threads"})
    return _two_panels(d, ["file_read", "file_write"], ["param.engine", "param.request_bytes", "param.pattern"],
                       "param.queue_depth", lambda k: f"{k[0]} {int(k[1]) >> 10} KiB {k[2]}",
                       "queue depth (requests in flight)", "GB/s", "Storage bandwidth: tierbench's engines and fio",
                       path)


def roofline(df: pd.DataFrame, path) -> Optional[str]:
    """Prefill vs decode points (attention kernels and whole layers) on the run's measured roofline."""
    d = _ok(df, ["attn_prefill", "attn_decode", "layer_prefill", "layer_decode"])
    if d.empty or "metric.intensity_flop_per_byte" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    d = d.assign(run=_series_key(d))
    x = np.logspace(np.log10(max(d["metric.intensity_flop_per_byte"].min() / 4, 1e-2)),
                    np.log10(d["metric.intensity_flop_per_byte"].max() * 4), 200)
    runs = list(dict.fromkeys(d["run"]))
    markers = {"attn_prefill": "o", "layer_prefill": "s", "attn_decode": "^", "layer_decode": "D"}
    kind = {"attn_prefill": "prefill", "layer_prefill": "prefill", "attn_decode": "decode", "layer_decode": "decode"}
    shades = {"prefill": plt.get_cmap("Reds"), "decode": plt.get_cmap("Blues")}
    for i, run in enumerate(runs):  # each run its own measured roofline and its own shade of red / blue
        g_run = d[d["run"] == run]
        peak = float(g_run["metric.ceiling_tflops"].median())
        bw = float(g_run["metric.ceiling_gbps"].median())
        ax.plot(x, np.minimum(peak, x * bw / 1e3), color="black", lw=1.5, ls=RUN_STYLES[i % len(RUN_STYLES)],
                label=f"roofline {run}: {peak:.3g} TFLOP/s, {bw:.4g} GB/s (measured)".replace("  ", " "))
        tone = 0.85 - 0.5 * i / max(1, len(runs) - 1) if len(runs) > 1 else 0.7
        for name, g in g_run.groupby("benchmark"):
            ax.scatter(g["metric.intensity_flop_per_byte"], g["metric.tflops"], color=shades[kind[name]](tone),
                       marker=markers[name], label=f"{name} {run}".strip(), alpha=0.85, edgecolors="black",
                       linewidths=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _finish(ax, "arithmetic intensity (FLOP / byte)", "TFLOP/s",
            f"Prefill (red) vs decode (blue) on the roofline ({_label(d)})", grid_which="both")
    return _save(fig, path)


def interference(df: pd.DataFrame, path) -> Optional[str]:
    """Left: copy bandwidth kept under compute and compute slowdown per transfer method (copy_under_compute).
    Right: exposed load time per layer against hit tokens, one line per tier bandwidth (layerwise_load)."""
    cu, lw = _ok(df, ["copy_under_compute"]), _ok(df, ["layerwise_load"])
    if cu.empty and lw.empty:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    if not cu.empty:
        cu = cu.assign(run=_series_key(cu))
        keys = cu.groupby(["param.method", "param.direction", "param.compute", "run"], sort=True)
        labels, kept, slow = [], [], []
        for (m, d, c, run), g in keys:
            labels.append(f"{m}\n{d} / {c}" + (f"\n{run}" if run else ""))
            kept.append(float(g["metric.copy_bw_retained"].median()))
            slow.append(float(g["metric.compute_slowdown"].median()))
        x = np.arange(len(labels))
        a1.bar(x - 0.2, kept, 0.4, label="copy GB/s under compute / alone")
        a1.bar(x + 0.2, slow, 0.4, label="compute slowdown (fraction)")
        a1.axhline(1.0, color="grey", ls=":", lw=1)
        a1.set_xticks(x, labels, fontsize=6, rotation=60, ha="right")
        _finish(a1, "", "ratio", "Copy under compute")
    if not lw.empty:
        lw = lw.assign(run=_series_key(lw))
        series = list(lw.groupby([lw["param.tier_gbps"].astype(str), "param.n_new", "run"]))
        for col, ((tier, n_new, run), h) in zip(colors(len(series)), series):
            h = h.sort_values("param.hit_tokens")
            name = "host link" if tier == "link" else f"{tier} GB/s (emulated)"
            a2.plot(h["param.hit_tokens"], h["metric.exposed_per_layer_s"] * 1e6, marker="o", color=col,
                    label=f"{name}, {int(n_new)} new {run}".strip())
            a2.plot(h["param.hit_tokens"], h["metric.ideal_exposed_s"] / h["metric.layers_run"] * 1e6, ls=":",
                    color=col, lw=1)
        a2.set_xscale("log", base=2)
        _finish(a2, "hit tokens (cached KV loaded)", "exposed load per layer (us)",
                "Layer-wise load: exposed time (dotted: ideal pipeline)")
    fig.suptitle(f"KV transfers under load ({_label(pd.concat([cu, lw]))})")
    return _save(fig, path)


def _stand_in(d: pd.DataFrame) -> str:
    """A title's note that CPU points are the GPU paths' host-memory stand-ins."""
    return "; CPU stand-ins, not GPU figures" if "device" in d and (d["device"] == "cpu").all() else ""


def _uniform(d: pd.DataFrame) -> pd.DataFrame:
    return d[d["param.locality"].fillna("uniform") == "uniform"] if "param.locality" in d else d


def warm_bandwidth(df: pd.DataFrame, path) -> Optional[str]:
    """Warm-tier fetch on demand: useful GB/s (the rows a step delivers; at uniform locality every one crossed the
    link) against row size (log-log), one line per method (and run), at
    each row size's largest rows per step (uniform locality); the link's peak drawn where the fingerprint gives
    it, and the contiguous pinned copy of the same bytes measured in the run."""
    d = _uniform(_ok(df, ["warm_fetch", "warm_peer"]))
    if d.empty or "param.row_bytes" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    d = d.assign(run=_series_key(d))
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
    _finish(ax, "row size (bytes)", "useful GB/s (1e9 B/s of rows delivered per step)",
            f"Warm tier read on demand: bandwidth vs access granularity\n({_label(d)}{_stand_in(d)})")
    return _save(fig, path)


def warm_step_latency(df: pd.DataFrame, path) -> Optional[str]:
    """Per-step latency of fetching k rows against k (log-log), one panel per method: p50 of single steps (line)
    and p99 (dashed), one colour per row size (uniform locality)."""
    d = _uniform(_ok(df, ["warm_fetch"]))
    if d.empty or "metric.step_us_p50" not in d:
        return None
    methods = sorted(d["param.method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.4), sharey=True, squeeze=False)
    d = d.assign(run=_series_key(d))
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
        _finish(ax, "rows per step (k)", "step latency (us): p50 solid, p99 dashed" if method == methods[0] else "",
                method, legend_size=6)
    fig.suptitle(f"Warm tier: step latency vs rows per step ({_label(d)}{_stand_in(d)})")
    return _save(fig, path)
