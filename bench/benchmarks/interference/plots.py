"""The interference family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd

from bench.report.plotkit import colors, device_label, finish, ok_records, save, series_key, plt


def interference(df: pd.DataFrame, path) -> Optional[str]:
    """Left: copy bandwidth kept under compute and compute slowdown per transfer method (copy_under_compute).
    Right: exposed load time per layer against hit tokens, one line per tier bandwidth (layerwise_load)."""
    cu, lw = ok_records(df, ["copy_under_compute"]), ok_records(df, ["layerwise_load"])
    if cu.empty and lw.empty:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.6))
    if not cu.empty:
        cu = cu.assign(run=series_key(cu))
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
        finish(a1, "", "ratio", "Copy under compute")
    if not lw.empty:
        lw = lw.assign(run=series_key(lw))
        series = list(lw.groupby([lw["param.tier_gbps"].astype(str), "param.n_new", "run"]))
        for col, ((tier, n_new, run), h) in zip(colors(len(series)), series):
            h = h.sort_values("param.hit_tokens")
            name = "host link" if tier == "link" else f"{tier} GB/s (emulated)"
            a2.plot(h["param.hit_tokens"], h["metric.exposed_per_layer_s"] * 1e6, marker="o", color=col,
                    label=f"{name}, {int(n_new)} new {run}".strip())
            a2.plot(h["param.hit_tokens"], h["metric.ideal_exposed_s"] / h["metric.layers_run"] * 1e6, ls=":",
                    color=col, lw=1)
        a2.set_xscale("log", base=2)
        finish(a2, "hit tokens (cached KV loaded)", "exposed load per layer (us)",
                "Layer-wise load: exposed time (dotted: ideal pipeline)")
    fig.suptitle(f"KV transfers under load ({device_label(pd.concat([cu, lw]))})")
    return save(fig, path)
