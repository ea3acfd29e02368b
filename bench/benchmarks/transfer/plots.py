"""The transfer family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.report.plotkit import colors, device_label, finish, ok_records, RUN_STYLES, save, series_key, two_panels, plt


def bandwidth_vs_size(df: pd.DataFrame, path) -> Optional[str]:
    """GB/s of the contiguous copies against transfer size (log x), one line per benchmark (and run)."""
    d = ok_records(df, ["h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable", "bidir_pinned", "d2d"])
    if d.empty or "param.size_bytes" not in d:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.8))
    key = series_key(d)
    groups = list(d.groupby([d["benchmark"], key]))
    for c, ((name, run), g) in zip(colors(len(groups)), groups):
        g = g.sort_values("param.size_bytes")
        ax.plot(g["param.size_bytes"], g["metric.gbps"], marker="o", color=c, label=f"{name} {run}".strip())
    peak = d.get("metric.gbps_peak")
    if peak is not None and peak.notna().any():
        for p in sorted(peak.dropna().unique()):
            ax.axhline(p, color="grey", ls=":", lw=1)
    ax.set_xscale("log", base=2)
    finish(ax, "transfer size (bytes)", "GB/s (1e9 B/s)", f"Host <-> device copy bandwidth ({device_label(d)})")
    return save(fig, path)


def paged_methods(df: pd.DataFrame, path) -> Optional[str]:
    """Paged KV offload/onload GB/s against block size, per method and layout, with the contiguous figure."""
    d = ok_records(df, ["paged_offload", "paged_onload"])
    if d.empty:
        return None

    def contiguous(ax, g0):
        for i, (run, g) in enumerate(g0.groupby("run")):
            ax.axhline(g["metric.contiguous_gbps"].median(), color="black", ls=RUN_STYLES[i % len(RUN_STYLES)], lw=1,
                       label=f"contiguous copy {run}".strip())

    return two_panels(d, ["paged_offload", "paged_onload"], ["param.method", "param.layout"], "param.block_tokens",
                       lambda k: f"{k[0]} / {k[1]}", "block size (tokens)", "GB/s of KV bytes",
                       "Paged KV transfer methods", path, extra=contiguous)
