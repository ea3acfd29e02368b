"""The verdict in words, built from the result's fields only (never from the model's objects): the headline, its
details (by tier, the seed's case, kernels, the SLO, capacity, sparse decode, what would decide it, caveats), the
whole sentence, the one line `bench run` ends with, and the units each figure is printed in."""
from __future__ import annotations

from bench.core.units import bytes_decimal, millis, percent, rate, seconds, sig
from bench.model.warm import clause as sparse_clause


def headline(r: dict) -> str:
    """The answer in one line: outcome, the speedup with its interval, against the claim, for what, and the one
    reason for the outcome (why it is undetermined, when it is)."""
    v, s = r["verdict"], r["verdict"]["speedup"]
    head = "CPU rehearsal, not a hardware verdict: " if r["device"] == "cpu" else ""
    outcome = {"supported": f"the {v['claim']:g}x claim is supported",
               "not_supported": f"the {v['claim']:g}x claim is not supported",
               "undetermined": f"whether {v['claim']:g}x holds is undetermined"}[v["outcome"]]
    what_if = f" at the what-if hit rate {v['what_if_hit_rate']:.0%}" if v.get("what_if_hit_rate") is not None \
        else ""
    why = f": {v['why']}" if v.get("why") else ""
    return (f"{head}{outcome[0].upper() + outcome[1:]}{why}. KV reuse gives {s['point']:.2f}x ({s['low']:.2f}-"
            f"{s['high']:.2f}x, {v['interval']:.0%} interval) on {r['gpu']} with {r['model']} serving "
            f"{r['workload']['label']}{what_if}.")

def details(r: dict, with_caveats: bool = True) -> list[str]:
    """The verdict's sentences after the headline, each built from the result's fields only (``with_caveats``:
    the caveats as the last sentence; a console lists them apart)."""
    v, b = r["verdict"], r["baseline"]
    tiers = v["tiers"]
    gains = [f"HBM only {tiers['hbm']['speedup']:.2f}x ({tiers['hbm']['hit_rate']:.0%} hits)"]
    prev = tiers["hbm"]["speedup"]
    for t, name in (("host", "host DRAM"), ("storage", "NVMe")):
        if t in tiers:
            gains.append(f"adding {name} {tiers[t]['speedup']:.2f}x ({tiers[t]['speedup'] - prev:+.2f}x, "
                         f"{tiers[t]['hit_rate']:.0%} hits)")
            prev = tiers[t]["speedup"]
    how = f"simulated {v['routing']} routing" if v.get("what_if_hit_rate") is None else \
        f"every request reusing {v['what_if_hit_rate']:.0%} of its input (what-if), from the tiers in the simulated shares"
    out = [f"By tier: {'; '.join(gains)} ({how})."]
    seed = seed_clause(r)
    if seed:
        out.append(seed)
    else:
        unit = "CPU" if r["device"] == "cpu" else "GPU"
        out.append(f"The Amdahl bound is {b['amdahl_bound']:.2f}x (prefill is {b['prefill_share']:.0%} of {unit} time "
                   "without reuse).")
    k = kernel_clause(r)
    if k:
        out.append(k)
    for clause in (handoff_clause(r), slo_clause(r), capacity_clause(r), sparse_clause(r.get("sparse_decode"),
                                                                    "CPU" if r["device"] == "cpu" else "GPU")):
        if clause:
            out.append(clause)
    if v["decide_by"]:
        out.append(f"It would be decided by {v['decide_by']}.")
    if v["reasons"] and with_caveats:
        out.append("Caveats: " + "; ".join(v["reasons"]) + ".")
    return out


def sentence(r: dict) -> str:
    """The whole verdict: the headline, then its details, built from ``r['verdict']`` and the result's fields."""
    return " ".join([headline(r), *details(r)])


def seed_clause(r: dict) -> str:
    """The seed's case, labelled: its arithmetic as written, then on these costs, each figure with its interval."""
    sc = (r.get("verdict") or {}).get("seed_case") or {}
    w, m = sc.get("as_written"), sc.get("measured")
    if not (w and m):
        return ""
    unit = "CPU" if r["device"] == "cpu" else "GPU"
    iv = lambda d, f: f"{f(d['point'])} ({f(d['low'])}-{f(d['high'])})"  # noqa: E731
    pct = lambda x: f"{x:.0%}" if x == x else "n/a"  # noqa: E731
    x2 = lambda x: f"{x:.2f}x" if x == x else "n/a"  # noqa: E731
    bs = m["balanced_split"]
    return (f"The seed's arithmetic as written: {w['gpus']} GPUs balanced {w['prefill_gpus']}:{w['decode_gpus']}, "
            f"prefill removed: {w['speedup']:.2f}x (its Amdahl bound {w['amdahl_bound']:.2f}x). On these costs prefill "
            f"is {iv(m['prefill_share'], pct)} of the {unit} time without reuse: a balanced {bs['gpus']}-GPU fleet "
            f"splits {bs['prefill_gpus']}:{bs['decode_gpus']}, its Amdahl bound is {iv(m['amdahl_bound'], x2)}, and "
            f"the workload's {m['hit_rate']:.0%} hits reach {iv(m['speedup'], x2)}, "
            f"{iv(m['share_of_bound_gain'], pct)} of the bound's gain.")


def handoff_clause(r: dict) -> str:
    """The disaggregated handoff (what moves, its cost, the part in TTFT, the link's load, the seed's 50:50 with it)
    and which mode the measured costs favour, colocated or disaggregated, by how much, with the interval."""
    h, cmp = r.get("handoff"), (r.get("verdict") or {}).get("disaggregation")
    if not h or not cmp:
        return ""
    c = h["configs"][h["verdict_config"]]
    how = "measured" if h["cost"]["measured"] else "an estimate"
    out = (f"The handoff ({h['mode']}, {how}) moves {bytes_decimal(h['moved']['bytes_mean'])} of KV per request "
           f"({percent(h['moved']['share_of_input'])} of its input) from prefill to decode in {seconds(h['request_s']['mean'])} "
           f"on average; {seconds(c['exposed_s_mean'])} of it is left in TTFT ({percent(c['ttft_share'])} of an unloaded "
           f"TTFT, {percent(c['hidden_fraction'])} hidden behind the prefill) and the fleet's rate loads each GPU's link "
           f"at {percent(c['link_utilization'])} of {rate(h['link_capacity_gbps'])}"
           + (" (the link bounds the rate)" if c["link_bound"] else "") + ".")
    s50 = h.get("seed_50_50") or {}
    if s50:
        out += (f" The seed's {s50['prefill_gpus']}:{s50['decode_gpus']} split with its handoff gives "
                f"{s50['speedup']:.2f}x ({s50['speedup_without_handoff']:.2f}x without it"
                + ("; link-bound" if s50["link_bound"] else "") + ").")
    x = cmp["ratio"]
    iv = f"{sig(x['point'])}x ({sig(x['low'])}-{sig(x['high'])}x)"
    by = lambda f: f"{sig(f)}x" if f >= 2 else percent(f - 1)  # noqa: E731  (a factor, or a share when small)
    words = {"disaggregated": f"favour disaggregation by {by(x['point'])}",
             "colocated": f"favour colocation by {by(1 / x['point'])}" if x["point"] > 0 else "favour colocation",
             "neither": "favour neither clearly (the interval spans 1x)"}[cmp["favours"]]
    out += f" Disaggregated over colocated, same GPUs: {iv} of the requests/s: the measured costs {words}"
    gp = cmp.get("goodput")
    if gp:
        ratio = gp["ratio"]
        ratio = "n/a" if ratio != ratio else ("inf" if ratio == float("inf") else f"{sig(ratio)}x")
        out += (f"; goodput at the SLO {sig(gp['disaggregated']['goodput_rps'])} vs "
                f"{sig(gp['colocated']['goodput_rps'])} req/s ({ratio})")
    return out + "."


def kernel_clause(r: dict) -> str:
    """Which attention kernels the prefill and decode costs come from (as the layer records name them)."""
    k = r.get("kernels") or {}
    if not (k.get("prefill") or k.get("decode")):
        return ""
    pre, dec = k.get("prefill") or "unrecorded", k.get("decode") or "unrecorded"
    if pre == dec:
        return f"Prefill and decode are both priced with the {pre} attention kernel."
    return f"Prefill is priced with the {pre} attention kernel, decode with the {dec} one."


TIER_NAMES = {"hbm": "HBM", "host": "host DRAM", "storage": "NVMe"}


def slo_clause(r: dict) -> str:
    """Goodput at the TTFT/TPOT targets: the speedup there beside the unconstrained one, what misses, and the tier
    whose loads break TTFT first; from the result's fields only."""
    v = (r.get("verdict") or {}).get("slo")
    if not v or v.get("skipped"):
        return f"Not evaluated at a latency SLO: {v['skipped']}." if v else ""
    t = v["targets"]
    targets = " and ".join(x for x in (t["ttft_ms"] and f"TTFT <= {millis(t['ttft_ms'])}",
                                       t["tpot_ms"] and f"TPOT <= {millis(t['tpot_ms'])}") if x)
    unit = "device" if r["device"] == "cpu" else "GPU"
    g = r["goodput"]
    head = f"At the SLO ({targets} for {t['attainment']:.0%} of requests"
    head += f"; {r['goodput']['requests_replayed']} requests replayed per rate, {g['arrivals']})"
    cfg = r["goodput"]["configs"][v["config"]]
    per = cfg["goodput_per_gpu"]
    if v["goodput_rps"] <= 0:
        text = f"{head} no rate meets it even with every tier: {v['reason']}"
    elif v["base_goodput_rps"] <= 0:
        text = (f"{head} no rate meets it without reuse ({v['base_reason']}), while {cfg['label']} serves {sig(per)} "
                f"requests/s per {unit} within it (unconstrained, reuse gives {v['unconstrained']:.2f}x): reuse is "
                "what makes the SLO reachable")
    else:
        text = (f"{head} KV reuse gives {v['speedup']:.2f}x in goodput ({sig(per)} requests/s per {unit} with "
                f"{cfg['label']}, {cfg['ttft_miss']:.0%} of requests missing TTFT and {cfg['tpot_miss']:.0%} TPOT "
                f"there)" + (f", against {v['unconstrained']:.2f}x unconstrained"
                             if abs(v['speedup'] - v['unconstrained']) > 0.005 * v['unconstrained'] else
                             ", the same as unconstrained: the SLO does not bind"))
    text += " (a point estimate from the fitted costs: their uncertainty is in the interval above)"
    if "ttft_breaks_first" in v:
        b = v["ttft_breaks_first"]
        if b:
            text += (f"; {TIER_NAMES[b['tier']]} loads break the TTFT target first, from a {b['hit_rate']:.0%} hit "
                     f"rate (unloaded p{t['attainment'] * 100:.0f} TTFT over target where HBM reuse meets it)")
        else:
            text += "; no tier's loads break the TTFT target at any hit rate"
    return text + "."


def capacity_clause(r: dict) -> str:
    """Where more of each tier stops paying (the knee) and how long KV must persist, from the result's fields."""
    parts = []
    names = {"hbm": "HBM for KV", "host": "host DRAM", "storage": "NVMe"}
    for tier, k in (r.get("verdict", {}).get("capacity") or {}).items():
        if k.get("per_gpu") and not k.get("pays", True):
            parts.append(f"{names[tier]} does not pay at its measured bandwidth ({k['speedup']:.2f}x with it, "
                         f"{k['without']:.2f}x with the least of it)")
        elif k.get("per_gpu"):
            parts.append(f"{names[tier]} pays up to ~{sig(k['per_gpu'])} {k['unit']} per GPU ({k['speedup']:.2f}x, "
                         f"{k['hit_rate']:.0%} hits; each doubling beyond adds under {r['fleet']['knee_gain']:.0%})")
        elif k.get("note"):
            parts.append(f"{names[tier]} {k['note']}")
    p = r.get("verdict", {}).get("persistence_minutes") or {}
    if p.get("p90") is not None:
        parts.append(f"to keep 90% of the hits a block must stay {seconds(60 * (p['p90']))} (50%: "
                     f"{seconds(60 * (p['p50']))}, 99%: {seconds(60 * (p['p99']))})")
    return ("Capacity: " + "; ".join(parts) + ".") if parts else ""


def short(r: dict) -> str:
    """The answer in one line for a console's last line (the end of `bench run` and `bench model`): the outcome, the
    speedup with its interval against the claim, for what, and the one reason for the outcome."""
    v = r["verdict"]
    s = v["speedup"]
    head = " (CPU rehearsal)" if r["device"] == "cpu" else ""
    what_if = f" at hit rate {v['what_if_hit_rate']:.0%} (what-if)" if v.get("what_if_hit_rate") is not None else ""
    why = f": {v['why']}" if v.get("why") else ""
    n = len(v["reasons"])
    return (f"{v['outcome'].replace('_', ' ').upper()}{head}: {s['point']:.2f}x ({s['low']:.2f}-{s['high']:.2f}x, "
            f"{v['interval']:.0%} interval) vs the {v['claim']:g}x claim for {r['model']} / {r['workload']['label']}"
            f"{what_if}{why} ({n} caveat{'s' if n != 1 else ''})")
