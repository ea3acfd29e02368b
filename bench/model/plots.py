"""Pictures of a model result: speedup vs hit rate per tier with the Amdahl bound, GPU split, break-even."""
from __future__ import annotations

from bench.report.plots import _finish, _save, plt


def _where(r: dict) -> str:
    """Model, workload or trace, and device: what every title names."""
    return f"{r['model']}, {r['workload']['kind']} {r['workload']['label']}, on {r['gpu']}"


def verdict_mark(r: dict) -> dict:
    """Where the verdict sits on the speedup-vs-hit-rate plot: its simulated overall hit rate, its speedup and
    interval (the same numbers as model.json's verdict)."""
    v = r["verdict"]
    last = list(v["tiers"])[-1]
    return {"hit_rate": v["tiers"][last]["hit_rate"], "speedup": v["speedup"]["point"],
            "low": v["speedup"]["low"], "high": v["speedup"]["high"], "tiers": "+".join(v["tiers"])}


def speedup_vs_hit_rate(r: dict, path) -> str:
    """Speedup per tier if every request reused the same fraction of its input (the curves), the Amdahl bound,
    the claim, and the verdict itself: the simulated per-request hit distribution at the tiers' capacities, with
    its interval (a point that need not lie on a curve: requests do not all reuse the same fraction)."""
    fig, ax = plt.subplots(figsize=(8, 5.2))
    hits = r["sweep"]["hit_rate"]
    for tier in r["reuse"]:
        ax.plot(hits, r["sweep"][tier], marker=".", label=f"reuse from {tier}, uniform per-request hit rate")
    bound = r["baseline"]["amdahl_bound"]
    ax.axhline(bound, color="black", ls="--", lw=1, label=f"Amdahl bound {bound:.2f}x")
    claim = r["verdict"]["claim"]
    ax.axhline(claim, color="grey", ls=":", lw=1, label=f"the {claim:g}x claim")
    ax.axvline(r["workload"]["ideal_hit_rate"], color="tab:green", ls="-.", lw=1,
               label=f"{r['workload']['label']} reusable {r['workload']['ideal_hit_rate']:.1%}")
    m = verdict_mark(r)
    err = [[max(m["speedup"] - m["low"], 0)], [max(m["high"] - m["speedup"], 0)]]
    ax.errorbar([m["hit_rate"]], [m["speedup"]], yerr=err, fmt="D", color="tab:red", ms=8, capsize=5, zorder=5,
                label=f"verdict ({r['verdict']['outcome'].replace('_', ' ')}): {m['speedup']:.2f}x "
                      f"[{m['low']:.2f}-{m['high']:.2f}], simulated hits, {m['tiers']} tiers")
    top = max([bound, m["high"], claim] + [max(v) for k, v in r["sweep"].items() if k != "hit_rate"])
    if top > 4:
        ax.set_yscale("log")
    _finish(ax, "KV hit rate (fraction of input tokens served from cache)", "throughput speedup vs no reuse",
            f"Speedup vs hit rate: {_where(r)}", legend_size=7)
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
    ax.set_title(f"Best prefill:decode split: {_where(r)}", fontsize=9)
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
    _finish(ax, "tier", "GB/s", f"Tier bandwidth vs break-even: {_where(r)}", legend_size=8)
    ax.title.set_fontsize(9)
    return _save(fig, path)


