"""Pictures of a model result: speedup vs hit rate per tier with the Amdahl bound, GPU split, break-even."""
from __future__ import annotations

from bench.report.plots import _finish, _save, plt


def speedup_vs_hit_rate(r: dict, path) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    hits = r["sweep"]["hit_rate"]
    for tier in r["reuse"]:
        ax.plot(hits, r["sweep"][tier], marker=".", label=f"reuse from {tier}")
    bound = r["baseline"]["amdahl_bound"]
    ax.axhline(bound, color="black", ls="--", lw=1, label=f"Amdahl bound {bound:.2f}x")
    ax.axhline(2.0, color="grey", ls=":", lw=1, label="the 2x claim")
    ax.axvline(r["workload"]["ideal_hit_rate"], color="tab:green", ls="-.", lw=1,
               label=f"{r['workload']['name']} reuse {r['workload']['ideal_hit_rate']:.1%}")
    _finish(ax, "KV hit rate (fraction of input tokens served from cache)", "throughput speedup vs no reuse",
            f"{r['model']} on {r['gpu']}: speedup vs hit rate", legend_size=8)
    return _save(fig, path)


def gpu_split(r: dict, path) -> str:
    rows = [("no reuse", r["baseline"])] + [(f"reuse: {t}", v) for t, v in r["reuse"].items()]
    rows = [(k, v) for k, v in rows if "prefill_gpus" in v]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(rows) + 1.5))
    for i, (label, v) in enumerate(rows):
        ax.barh(i, v["prefill_gpus"], color="tab:red")
        ax.barh(i, v["decode_gpus"], left=v["prefill_gpus"], color="tab:blue")
        ax.text(r["fleet"]["gpus"] + 0.5, i, f"{v['requests_per_s']:.3g} req/s", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [k for k, _ in rows])
    ax.set_xlabel(f"GPUs (red: prefill, blue: decode) of {r['fleet']['gpus']}")
    ax.set_xlim(0, r["fleet"]["gpus"] * 1.3)
    ax.set_title("Best prefill:decode split")
    return _save(fig, path)


def break_even(r: dict, path) -> str:
    tiers = [t for t, v in r["reuse"].items() if v["measured_gbps"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = range(len(tiers))
    ax.bar([i - 0.2 for i in x], [r["reuse"][t]["measured_gbps"] for t in tiers], 0.4, label="measured")
    ax.bar([i + 0.2 for i in x], [min(r["reuse"][t]["break_even_gbps"], 1e6) for t in tiers], 0.4,
           label="break-even (load = recompute)")
    ax.set_xticks(list(x), tiers)
    ax.set_yscale("log")
    _finish(ax, "tier", "GB/s", "Tier bandwidth vs break-even", legend_size=8)
    return _save(fig, path)


