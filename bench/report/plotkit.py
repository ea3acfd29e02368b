"""What every plot of the suite shares (bench/benchmarks/<family>/plots.py draw them; bench.report.html lays them out):
the ok records of some benchmarks, a label naming the runs' devices, series keys that tell runs apart, distinct
colours and line styles, one closing step (labels, title, grid, legend) and one save (PNG). Sizes in bytes, rates
in GB/s (1e9 B/s) or TFLOP/s, times as their axis says."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (plt: the family plots draw with it, Agg set first)
import pandas as pd  # noqa: E402


def ok_records(df: pd.DataFrame, benchmarks) -> pd.DataFrame:
    if df.empty or "benchmark" not in df:
        return df.iloc[0:0]
    d = df[(df["benchmark"].isin(list(benchmarks))) & (df["status"] == "ok")]
    return d


def device_label(df: pd.DataFrame) -> str:
    names = df["gpu_name"].dropna().unique() if "gpu_name" in df else []
    devs = df["device"].dropna().unique() if "device" in df else []
    return ", ".join(map(str, names)) or ", ".join(map(str, devs)) or "?"


def finish(ax, xlabel: str, ylabel: str, title: str, legend_size: int = 7, grid_which: str = "major") -> None:
    """Labels, title, grid and legend: the same closing steps of every plot."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which=grid_which)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=legend_size)


def save(fig, path) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def series_key(df: pd.DataFrame) -> pd.Series:
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


def two_panels(d: pd.DataFrame, names, groups, x: str, label, xlabel: str, ylabel: str, title: str, path,
                extra=None) -> str:
    """One panel per benchmark in ``names``: metric.gbps against ``x``, one line per ``groups`` value."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    d = d.assign(run=series_key(d))
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
    fig.suptitle(f"{title} ({device_label(d)})")
    return save(fig, path)


def stand_in_note(d: pd.DataFrame) -> str:
    """A title's note that CPU points are the GPU paths' host-memory stand-ins."""
    return "; CPU stand-ins, not GPU figures" if "device" in d and (d["device"] == "cpu").all() else ""


def uniform_locality(d: pd.DataFrame) -> pd.DataFrame:
    return d[d["param.locality"].fillna("uniform") == "uniform"] if "param.locality" in d else d
