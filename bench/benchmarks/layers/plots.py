"""The layers family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from bench.report.plotkit import device_label, finish, ok_records, RUN_STYLES, save, series_key, plt


def roofline(df: pd.DataFrame, path) -> Optional[str]:
    """Prefill vs decode points (attention kernels and whole layers) on the run's measured roofline."""
    d = ok_records(df, ["attn_prefill", "attn_decode", "layer_prefill", "layer_decode"])
    if d.empty or "metric.intensity_flop_per_byte" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    d = d.assign(run=series_key(d))
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
    finish(ax, "arithmetic intensity (FLOP / byte)", "TFLOP/s",
            f"Prefill (red) vs decode (blue) on the roofline ({device_label(d)})", grid_which="both")
    return save(fig, path)
