"""Pictures of a model result: speedup vs hit rate per tier with the Amdahl bound, GPU split, break-even."""
from __future__ import annotations

from bench.core.units import percent, sig
from bench.report.plotkit import finish, plt, save


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
    finish(ax, "KV hit rate (fraction of input tokens served from cache)", "throughput speedup vs no reuse",
            f"Speedup vs hit rate: {_where(r)}", legend_size=7)
    return save(fig, path)


def gpu_split(r: dict, path) -> str:
    rows = [("no reuse", r["baseline"])] + [(f"reuse: {t}", v) for t, v in r["reuse"].items()]
    rows = [(k, v) for k, v in rows if "prefill_gpus" in v]
    fig, ax = plt.subplots(figsize=(7.5, 0.6 * len(rows) + 1.5))
    for i, (label, v) in enumerate(rows):
        ax.barh(i, v["prefill_gpus"], color="tab:red")
        ax.barh(i, v["decode_gpus"], left=v["prefill_gpus"], color="tab:blue")
        ax.text(r["fleet"]["gpus"] + 0.5, i, f"{sig(v['requests_per_s'])} req/s", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [k for k, _ in rows])
    ax.set_xlabel(f"GPUs (red: prefill, blue: decode) of {r['fleet']['gpus']}")
    ax.set_xlim(0, r["fleet"]["gpus"] * 1.3)
    ax.set_title(f"Best prefill:decode split: {_where(r)}", fontsize=9)
    return save(fig, path)


def disaggregation(r: dict, path):
    """Left: requests/s of the fleet colocated and disaggregated (its best split with the handoff's link) per
    configuration, the ratio of the verdict's with its interval. Right: an unloaded TTFT's mean made of the prefill
    on its instance and the handoff left after it."""
    h, cmp = r.get("handoff"), (r.get("verdict") or {}).get("disaggregation")
    if not h or not cmp:
        return None
    import numpy as np

    names = list(h["configs"])
    cfg = h["configs"]
    g = r["fleet"]["gpus_per_instance"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    x = np.arange(len(names))
    dis = [cfg[n]["requests_per_s"] for n in names]
    col = [d / max(cmp_n, 1e-300) for d, cmp_n in zip(dis, [_dvc(r, n) for n in names])]
    ax.bar(x - 0.2, col, 0.4, label="colocated", color="tab:gray")
    ax.bar(x + 0.2, dis, 0.4, label=f"disaggregated (handoff {h['mode']})", color="tab:blue")
    for i, n in enumerate(names):
        if cfg[n]["link_bound"]:
            ax.text(i + 0.2, dis[i], "link-bound", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(x), [cfg[n]["label"] for n in names], fontsize=7, rotation=15)
    ax.set_ylim(0, 1.3 * max(col + dis))  # room for the legend above the bars
    rr = cmp["ratio"]
    finish(ax, "", "requests/s (fleet)", f"{cfg[cmp['config']]['label']}: disaggregated / colocated {sig(rr['point'])}x "
                                         f"({sig(rr['low'])}-{sig(rr['high'])}x)", legend_size=8)
    ax.title.set_fontsize(9)
    pre = [cfg[n]["prefill_s_mean"] * 1e3 for n in names]
    exp = [cfg[n]["exposed_s_mean"] * 1e3 for n in names]
    bx.bar(x, pre, 0.6, label="prefill (on its instance)", color="tab:red")
    bx.bar(x, exp, 0.6, bottom=pre, label="handoff left after it", color="tab:orange")
    for i, n in enumerate(names):
        bx.text(i, pre[i] + exp[i], percent(cfg[n]["ttft_share"]), ha="center", va="bottom", fontsize=7)
    bx.set_xticks(list(x), [cfg[n]["label"] for n in names], fontsize=7, rotation=15)
    bx.set_ylim(0, 1.3 * max(p + e for p, e in zip(pre, exp)))
    finish(bx, "", "ms (mean, unloaded)", f"TTFT: the handoff's share ({g} GPU(s) per instance)", legend_size=8)
    bx.title.set_fontsize(9)
    return save(fig, path)


def _dvc(r: dict, name: str) -> float:
    """disaggregated / colocated requests/s of configuration ``name`` (model.json's verdict.disaggregation)."""
    return (r["verdict"]["disaggregation"].get("by_config") or {}).get(name, 1.0)


def break_even(r: dict, path) -> str:
    tiers = [t for t, v in r["reuse"].items() if v["measured_gbps"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    x = range(len(tiers))
    ax.bar([i - 0.2 for i in x], [r["reuse"][t]["measured_gbps"] for t in tiers], 0.4, label="measured")
    ax.bar([i + 0.2 for i in x], [min(r["reuse"][t]["break_even_gbps"], 1e6) for t in tiers], 0.4,
           label="break-even (load = recompute)")
    ax.set_xticks(list(x), tiers)
    ax.set_yscale("log")
    finish(ax, "tier", "GB/s", f"Tier bandwidth vs break-even: {_where(r)}", legend_size=8)
    ax.title.set_fontsize(9)
    return save(fig, path)




TIER_NAMES = {"hbm": "HBM for KV", "host": "host DRAM", "storage": "NVMe"}


def capacity(r: dict, path):
    """Per tier (a panel each): hit rate by tier and throughput speedup as that tier's capacity per GPU grows, the
    others as configured; the knee (after which each doubling adds less than fleet.knee_gain) marked."""
    cap = r.get("capacity") or {}
    tiers = cap.get("tiers") or {}
    if not tiers:
        return None
    fig, axes = plt.subplots(1, len(tiers), figsize=(5.2 * len(tiers), 4.4), squeeze=False)
    for ax, (tier, t) in zip(axes[0], tiers.items()):
        pts = t["points"]
        unit = cap["per_gpu_unit"][tier]
        x = [max(p["per_gpu"], 1e-9) for p in pts]
        zero = pts[0]["per_gpu"] == 0
        xs = [x[1] / 2 if (zero and i == 0) else v for i, v in enumerate(x)]  # draw "none" half a step left
        for key, color in (("hit_rate_hbm", "tab:blue"), ("hit_rate_host", "tab:orange"),
                           ("hit_rate_storage", "tab:green"), ("hit_rate", "black")):
            ax.plot(xs, [p[key] for p in pts], marker=".", color=color, lw=1.5 if key == "hit_rate" else 1,
                    label=key.replace("hit_rate_", "hits from ").replace("hit_rate", "hit rate (all tiers)"))
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.02)
        ax2 = ax.twinx()
        ax2.plot(xs, [p["speedup"] for p in pts], color="tab:red", ls="--", marker="s", ms=3, label="speedup")
        ax2.set_ylabel("throughput speedup vs no reuse", color="tab:red")
        k = t["knee"]
        if k.get("per_gpu"):
            ax.axvline(k["per_gpu"], color="tab:red", ls=":", lw=1)
            ax.text(k["per_gpu"], 0.03, f" knee {sig(k['per_gpu'])} {unit}" if k.get("pays", True) else " does not pay",
                    color="tab:red", fontsize=8)
        ticks = xs
        ax.set_xticks(ticks, [("none" if (zero and i == 0) else sig(v)) for i, v in enumerate(x)], fontsize=7,
                      rotation=45)
        ax.set_title(f"{TIER_NAMES[tier]} per GPU ({unit})")
        ax.set_xlabel(f"{TIER_NAMES[tier]} capacity per GPU ({unit})")
        ax.set_ylabel("hit rate (share of input tokens)")
        ax.grid(alpha=0.3)
        if ax is axes[0][0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"Capacity: hit rate and throughput vs tier size ({_where(r)}; "
                 f"{'exact' if cap.get('exact') else 'sampled'}, {cap.get('routing')} routing)")
    return save(fig, path)


def persistence(r: dict, path):
    """How long KV must persist: the share of the hits kept when a block stays N minutes (CDF of the time since a
    hit block was last used), with the 50 / 90 / 99% points."""
    p = r.get("persistence") or {}
    cdf = p.get("cdf") or {}
    if not cdf.get("minutes"):
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    mins = [max(m, 1e-4) for m in cdf["minutes"]]
    ax.plot(mins, cdf["share"], color="tab:purple")
    for share, m in zip(p["shares"], p["minutes"]):
        if m is not None:
            ax.axvline(max(m, 1e-4), color="grey", ls=":", lw=1)
            ax.text(max(m, 1e-4), share, f" {share:.0%}: {m:.3g} min", fontsize=8)
    ax.set_xscale("log")
    finish(ax, "a block kept this long after its last use (minutes)", "share of the hits kept",
            f"How long KV must persist ({_where(r)})")
    return save(fig, path)


def goodput(r: dict, path):
    """Left: share of requests meeting both targets (and each) against the offered rate per GPU, per configuration
    (its goodput split), the attainment target, and each configuration's goodput. Right: the unloaded TTFT
    quantile vs hit rate per tier against the TTFT target (where a tier's loads break it)."""
    gp = r.get("goodput") or {}
    if gp.get("skipped") or not gp.get("configs"):
        return None
    t = gp["targets"]
    br = gp.get("ttft_by_hit_rate")
    fig, axes = plt.subplots(1, 2 if br else 1, figsize=(13 if br else 7.5, 4.8), squeeze=False)
    ax = axes[0][0]
    colors = {"none": "black", "hbm": "tab:blue", "host": "tab:orange", "storage": "tab:green"}
    unit = "device" if r["device"] == "cpu" else "GPU"
    groups: dict = {}  # configurations with the same curve (a tier that served no hit) drawn once, labels joined
    for name, c in gp["configs"].items():
        groups.setdefault((c["goodput_rps"], tuple(c["curve"].get("attainment", []))), []).append((name, c))
    for members in groups.values():
        name, c = members[0]
        label = " = ".join(m[1]["label"] for m in members)
        cv = c["curve"]
        x = [v / gp["gpus"] for v in cv["rate_rps"]]
        ax.plot(x, cv["attainment"], marker=".", color=colors.get(name), label=f"{label}: both targets")
        ax.plot(x, cv["ttft_ok"], ls=":", color=colors.get(name), lw=1, label=f"{label}: TTFT only")
        if c["goodput_rps"] > 0:
            ax.axvline(c["goodput_per_gpu"], color=colors.get(name), ls="--", lw=0.8)
            ax.text(c["goodput_per_gpu"], 0.02, f" {sig(c['goodput_per_gpu'])}", color=colors.get(name), fontsize=7,
                    rotation=90, va="bottom")
    ax.axhline(t["attainment"], color="grey", ls="-.", lw=1, label=f"attainment target {t['attainment']:.0%}")
    ax.set_ylim(0, 1.03)
    tgt = " and ".join(x for x in (t["ttft_ms"] and f"TTFT <= {t['ttft_ms']:g} ms",
                                   t["tpot_ms"] and f"TPOT <= {t['tpot_ms']:g} ms") if x)
    finish(ax, f"offered rate (requests/s per {unit}); dashed: goodput", "share of requests meeting the SLO",
            f"SLO attainment vs rate ({tgt})", legend_size=7)
    if br:
        ax = axes[0][1]
        for tier in ("hbm", "host", "storage"):
            if tier in br:
                ax.plot(br["hit_rate"], br[tier]["ttft_quantile_s"], marker=".", color=colors[tier],
                        label=f"reuse from {tier}" + (f" (breaks from {br[tier]['breaks_at_hit_rate']:.0%})"
                                                       if tier != "hbm" and br[tier].get("breaks_at_hit_rate")
                                                       is not None else ""))
        ax.axhline(t["ttft_ms"] / 1e3, color="grey", ls="-.", lw=1, label=f"TTFT target {t['ttft_ms']:g} ms")
        ax.set_yscale("log")
        finish(ax, "KV hit rate (uniform per request)", f"unloaded p{t['attainment'] * 100:.0f} TTFT (s)",
                "Where tier loads break TTFT (no queueing)", legend_size=7)
    fig.suptitle(f"Goodput at the SLO: {_where(r)}", fontsize=10)
    return save(fig, path)
