"""Runs compared point by point (`python -m bench compare`, bench.commands.compare): the same points across runs (hardware generations, versions).

Points are matched on benchmark + params. Each metric is the point's headline (gbps, else tflops, else the time,
where lower is better). A difference inside the noise of the two measurements (their IQR/median, at least
``--noise-floor``) is SAME; outside it FASTER or SLOWER; SLOWER by more than ``--threshold`` is a regression
(exit code 1 with ``--fail-on-regression``). Points on one side only are listed, never dropped. Runs whose
configurations differ in what defines a point (model preset, dtypes) are refused unless ``--allow-mismatch``;
different hardware is the point of comparing and is shown side by side.
"""
from __future__ import annotations

import math
from pathlib import Path

from bench.core.units import sig
from bench.core.errors import UserError
from bench.core.stats import SE_MEDIAN, robust_sd
from bench.core.store import (RECORDS, check_numbers, point_key, read_manifest, read_records,
                         run_dirs, run_state)

# config keys that change what a point measures even with equal params
IDENTITY_KEYS = ("model.name", "model.dtype", "ceilings.gemm_dtype", "attention.dtype", "layers.dtype",
                 "storage.direct", "storage.file_bytes")
FINGERPRINT_KEYS = {
    "model": lambda m: _cfg(m, "model.name"),
    "dtype": lambda m: _cfg(m, "model.dtype"),
    "device": lambda m: m.get("device"),
    "gpu": lambda m: _g(m, "gpu", "name"),
    "gpu memory GiB": lambda m: _round(_g(m, "gpu", "memory_bytes"), 2**30),
    "SMs": lambda m: _g(m, "gpu", "sm_count"),
    "L2 MiB": lambda m: _round(_g(m, "gpu", "l2_bytes"), 2**20),
    "PCIe gen x width (max)": lambda m: _pcie(m),
    "driver": lambda m: _g(m, "gpu", "driver"),
    "CUDA": lambda m: _g(m, "gpu", "cuda_runtime"),
    "torch": lambda m: _g(m, "software", "torch"),
    "CPU": lambda m: _g(m, "host", "cpu_model"),
    "CPU cores": lambda m: _g(m, "host", "cpu_cores"),
    "torch threads (timing)": lambda m: ((m.get("machine") or {}).get("threads") or {}).get("torch_threads"),
    "points under contention": lambda m: (m.get("machine") or {}).get("contended_points"),
    "host memory GiB": lambda m: _round(_g(m, "host", "memory_bytes"), 2**30),
    "host": lambda m: _g(m, "host", "hostname"),
    "tool": lambda m: f"{(m.get('tool') or {}).get('version')} {((m.get('tool') or {}).get('git_sha') or '')[:8]}",
}


def _g(m, *path):
    cur = m.get("hardware") or {}
    for p in path:
        cur = (cur or {}).get(p)
    return cur


def _round(v, unit):
    return None if v is None else round(v / unit, 1)


def _pcie(m):
    p = _g(m, "gpu", "pcie") or {}
    return f"gen{p.get('gen_max')} x{p.get('width_max')}" if p.get("gen_max") else None


def _cfg(m, key):
    cur = m.get("config") or {}
    for part in key.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def headline(rec: dict) -> tuple[str, float, bool]:
    """(metric name, value, higher is better) of a record."""
    m = rec.get("metrics") or {}
    for name in ("gbps", "tflops", "tokens_per_s"):
        if m.get(name) is not None:
            return name, float(m[name]), True
    return "median_s", float(m.get("median_s") or math.nan), False


def side(path) -> tuple[str, dict, list]:
    dirs = run_dirs([path])
    if len(dirs) != 1:
        raise UserError(f"{path} holds {len(dirs)} runs; compare run directories one by one (e.g. {dirs[0]})")
    recs = read_records(dirs[0] / RECORDS)
    check_numbers(recs, f"compare {path}")
    return str(dirs[0]), read_manifest(dirs[0]), recs


K_RUN = 3.0  # run-to-run tolerance: this many robust standard deviations of the pair's median log-ratios
MIN_FAMILY_POINTS = 8  # a family with fewer matched points takes the pooled spread of all points


def _interval(rec: dict) -> tuple[float, float, float]:
    """(fast, median, slow) of a point in time-like units (lower is better) from its headline value: nvbench-
    compare-robust's idea of comparing ranges, not medians: the [min, p90] spread of its per-call samples around the
    median, applied to the headline (a point without timing stats: its headline alone)."""
    _, v, higher = headline(rec)
    t = 1.0 / v if higher else v
    m = rec.get("metrics") or {}
    med = m.get("median_s")
    if not med:
        return t, t, t
    return t * float(m.get("min_s") or med) / float(med), t, t * float(m.get("p90_s") or med) / float(med)


def contention_band(rec: dict, man: dict) -> float:
    """Extra tolerance (log scale) for a point timed under contention: the share of the CPUs this run could use
    that other processes took while it was timed, plus the hypervisor's steal (a neighbour using one of two cores
    may have slowed it by up to half). 0 for a point that was not contended."""
    c = rec.get("contention") or {}
    if not c.get("contended"):
        return 0.0
    cpus = ((man.get("machine") or {}).get("threads") or {}).get("cpus_allowed") or \
        ((man.get("hardware") or {}).get("host") or {}).get("cpu_cores") or 1
    return math.log1p(float(c.get("other_processes_cores") or 0) / max(1, int(cpus)) + float(c.get("steal_share") or 0))


CONTENDED = ("exclude", "widen")


def compare(paths, threshold: float = 0.05, noise_floor: float = 0.02, allow_mismatch: bool = False,
            contended: str = "exclude") -> dict:
    """Points matched on benchmark + params. Each point's [min, p90] range of per-call time in the base and the other
    run is compared on a log scale: SAME while the ranges overlap within the run-to-run tolerance (at least
    ``noise_floor``; on the same machine also K_RUN robust standard deviations of all matched points' median
    log-ratios, which is how much this machine varies from run to run), FASTER or SLOWER beyond it, and SLOWER by
    more than ``threshold`` on the median is a REGRESSION. Points timed under contention or whose bandwidth fell
    implausibly within their own sweep (bench.core.store.suspect_points) are EXCLUDED from the verdict, with the reason.
    A family whose points all moved together (median log-ratio beyond its standard error and the threshold) is
    reported as a shift of the machine itself (clocks, contention, driver), not a code change."""
    if len(paths) < 2:
        raise UserError("compare needs at least two runs: python -m bench compare BASE OTHER [...]")
    sides = [side(p) for p in paths]
    names = [s[0] for s in sides]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise UserError(f"compare {dup} with itself: name two different runs (python -m bench compare BASE OTHER)")
    incomplete = {name: run_state(man, len(recs)) for name, man, recs in sides if run_state(man, len(recs))}
    mismatches = identity_mismatches([(name, man) for name, man, _ in sides], allow_mismatch, "compare")
    fingerprint = {k: [f(man) for _, man, _ in sides] for k, f in FINGERPRINT_KEYS.items()}
    differs = {k: v for k, v in fingerprint.items() if len(set(map(str, v))) > 1}
    same_machine = not ({"gpu", "host", "CPU", "driver", "CUDA", "torch", "device"} & set(differs))
    tables = [{point_key(r): r for r in recs} for _, _, recs in sides]
    points, one_sided, both_skipped = match_points(sides, tables, contended)
    shifts: list = []
    for i in range(1, len(sides)):
        tol_of, default_tol, moved = run_tolerances(points, i, threshold, noise_floor, same_machine)
        shifts += [{"run": sides[i][0], **m} for m in moved]
        label_points(points, tables, i, threshold, tol_of, default_tol)
    return {"runs": [s[0] for s in sides], "fingerprint": fingerprint, "fingerprint_differs": sorted(differs),
            "same_machine": same_machine, "mismatches": mismatches, "points": points, "one_sided": one_sided,
            "both_skipped": both_skipped, "incomplete": incomplete, "shifts": shifts,
            "excluded": sum(1 for p in points if "EXCLUDED" in p.get("labels", [])),
            "compared": sum(1 for p in points if any(lab != "EXCLUDED" for lab in p.get("labels", []))),
            "widened": sum(1 for p in points if p.get("widened")), "contended_mode": contended,
            "regressions": sum(1 for p in points if p.get("regression")), "threshold": threshold}


def match_points(sides: list, tables: list, contended: str) -> tuple[list, list, int]:
    """(points present in every run, with their headline metric per run, its ratio and gain against the base and
    why each comparison is excluded; points present in some runs only; points skipped in every run). A point
    timed under contention is excluded, or with ``contended='widen'`` compared with a band widened by it."""
    from bench.core.store import suspect_points

    suspects = [suspect_points(recs, man) for _, man, recs in sides]  # each held to its own hardware's physics
    base = tables[0]
    points, one_sided, both_skipped = [], [], 0
    for key in dict.fromkeys(k for t in tables for k in t):
        present = [key in t for t in tables]
        if not all(present):
            one_sided.append({"point": key, "present_in": [sides[i][0] for i, p in enumerate(present) if p]})
            continue
        rb = base[key]
        statuses = [t[key]["status"] for t in tables]
        entry = {"point": key, "benchmark": rb["benchmark"], "family": rb.get("family"),
                 "params": rb.get("params") or {}, "status": statuses}
        if all(st != "ok" for st in statuses) and len(set(statuses)) == 1:
            both_skipped += 1
            continue
        if any(st != "ok" for st in statuses):
            entry["label"] = "STATUS"
            entry["reasons"] = [t[key].get("reason") for t in tables]
            points.append(entry)
            continue
        metric, vb, higher = headline(rb)
        entry.update(metric=metric, values=[vb], ratios=[], gains=[], labels=[], regression=False, excluded=[])
        for i, t in enumerate(tables[1:], 1):
            _, v, _ = headline(t[key])
            ratio = v / vb if vb else math.nan
            entry["values"].append(v)
            entry["ratios"].append(ratio)
            entry["gains"].append(math.log(ratio) if higher else -math.log(ratio))  # > 0: better
            why = suspects[0].get(key) or suspects[i].get(key)
            band = max(contention_band(rb, sides[0][1]), contention_band(t[key], sides[i][1]))
            if contended == "widen" and why and why.startswith("timed under contention") and \
                    not any(w and not w.startswith("timed under contention")
                            for w in (suspects[0].get(key), suspects[i].get(key))):
                why = None  # compared, with a band widened by the contention it was timed under
                entry.setdefault("widened", {})[i] = band
            entry["excluded"].append(why)
        points.append(entry)
    return points, one_sided, both_skipped


def run_tolerances(points: list, i: int, threshold: float, noise_floor: float,
                   same_machine: bool) -> tuple[dict, float, list]:
    """Run ``i`` against the base: ({family: log-scale tolerance}, the tolerance of a family without points of its
    own, [families whose points all moved together: a shift of the machine]). The tolerance is the noise floor, or
    on the same machine K_RUN robust standard deviations of the family's log-ratios around their median (its own
    when it has MIN_FAMILY_POINTS, else all families' pooled)."""
    import numpy as np

    comparable = [p for p in points if p.get("label") != "STATUS" and not p["excluded"][i - 1]]
    gains = np.array([p["gains"][i - 1] for p in comparable]) if comparable else np.zeros(0)
    fam: dict = {}
    for p, g in zip(comparable, gains):
        fam.setdefault(p["family"], []).append(g)
    centers = {f: float(np.median(v)) for f, v in fam.items()}
    pooled = robust_sd([g - centers[p["family"]] for p, g in zip(comparable, gains)])
    # run-to-run spread per family (attention on a shared CPU varies ~17%, transfers ~4%): its own robust SD when
    # it has enough points, else the pooled one
    sd = {f: (robust_sd(np.array(v) - centers[f]) if len(v) >= MIN_FAMILY_POINTS else pooled) for f, v in fam.items()}
    tol_of = {f: (max(noise_floor, K_RUN * x) if same_machine else noise_floor) for f, x in sd.items()}
    shifts = []
    for f, v in fam.items():
        se = SE_MEDIAN * sd[f] / math.sqrt(len(v)) if len(v) else math.inf
        if len(v) >= 3 and abs(centers[f]) > max(threshold, 3 * se):
            shifts.append({"family": f, "points": len(v), "median_change": math.expm1(centers[f])})
    return tol_of, max(noise_floor, K_RUN * pooled) if same_machine else noise_floor, shifts


def label_points(points: list, tables: list, i: int, threshold: float, tol_of: dict, default_tol: float) -> None:
    """Label each point of run ``i`` against the base (appended to its ``labels``): EXCLUDED, REGRESSION, SLOWER,
    FASTER or SAME, from the gap between their [min, p90] ranges on a log scale and the family's tolerance."""
    for p in points:
        if p.get("label") == "STATUS":
            continue
        b_fast, b_med, b_slow = _interval(tables[0][p["point"]])
        o_fast, o_med, o_slow = _interval(tables[i][p["point"]])
        # gap between the ranges on a log scale: > 0 the other is slower, < 0 faster
        slower_by = math.log(o_fast / b_slow) if o_fast > b_slow else 0.0
        faster_by = math.log(b_fast / o_slow) if o_slow < b_fast else 0.0
        run_tol = tol_of.get(p["family"], default_tol) + (p.get("widened") or {}).get(i, 0.0)
        if p["excluded"][i - 1]:
            label = "EXCLUDED"
        elif slower_by > run_tol:
            label = "REGRESSION" if -p["gains"][i - 1] > math.log1p(threshold) else "SLOWER"
        elif faster_by > run_tol:
            label = "FASTER"
        else:
            label = "SAME"
        if label == "REGRESSION":
            p["regression"] = True
        p["labels"].append(label)
        p.setdefault("tolerance", []).append(run_tol)


def identity_mismatches(runs: list, allow: bool, what: str) -> list[str]:
    """'key: a (run) vs b (run)' for every config key that changes what a point measures (model, dtypes, storage
    file) and differs from the first run's; refused with one line unless ``allow`` (--allow-mismatch)."""
    (base, base_man), out = runs[0], []
    for name, man in runs[1:]:
        for key in IDENTITY_KEYS:
            a, b = _cfg(base_man, key), _cfg(man, key)
            if a is not None and b is not None and a != b:
                out.append(f"{key}: {a} ({base}) vs {b} ({name})")
    if out and not allow:
        raise UserError(f"runs measure different configurations ({'; '.join(out)}): {what} keeps them apart; pass "
                        f"--allow-mismatch to {what} them anyway")
    return out


def _params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items())


def counts_line(res: dict) -> str:
    """The comparison in one line: what was compared and what it found."""
    labels = [lab for p in res["points"] for lab in p.get("labels", [])]
    n = {k: labels.count(k) for k in ("REGRESSION", "SLOWER", "FASTER", "SAME", "EXCLUDED")}
    status = sum(1 for p in res["points"] if p.get("label") == "STATUS")
    widened = f" ({res['widened']} with a band widened by their contention)" if res.get("widened") else ""
    return (f"compared {res['compared']} of {len(res['points'])} matched points{widened}: {n['REGRESSION']} "
            f"regression(s), {n['SLOWER']} slower, {n['FASTER']} faster, {n['SAME']} same; {n['EXCLUDED']} excluded, "
            f"{status} with a different status, {res['both_skipped']} skipped on every side, {len(res['one_sided'])} "
            "on one side only" + ("" if res["same_machine"] else "; different machines: per-point noise only"))


def print_compare(res: dict, show_all: bool = False) -> None:
    """The summary first, then what differs: hardware, the points that are not SAME (every point with
    ``show_all``), exclusions grouped by reason, machine shifts, one-sided points."""
    from rich.table import Table

    from bench.report.console import console

    con = console()
    names = [Path(r).name for r in res["runs"]]
    con.print(f"[bold]{counts_line(res)}[/bold]")
    if not res["compared"]:
        con.print(f"[bold red]compared nothing:[/bold red] {nothing_compared(res)}")
    ft = Table(title="hardware and software" + ("" if show_all else " (rows that differ; --all for every row)"))
    ft.add_column("")
    for n in names:
        ft.add_column(n)
    for k, vals in res["fingerprint"].items():
        if all(v is None for v in vals) or (not show_all and k not in res["fingerprint_differs"]):
            continue
        ft.add_row(k, *["-" if v is None else str(v) for v in vals], style="bold" if k in res["fingerprint_differs"]
                   else None)
    if ft.row_count:
        con.print(ft)
    for m in res["mismatches"]:
        con.print(f"[yellow]warning (--allow-mismatch):[/yellow] {m}")
    for run, state in res["incomplete"].items():
        con.print(f"[bold yellow]incomplete run:[/bold yellow] {run} is {state}: its points are what it holds")
    shown = [p for p in res["points"] if show_all or p.get("label") == "STATUS" or
             any(lab not in ("SAME", "EXCLUDED") for lab in p.get("labels", []))]
    from rich.markup import escape

    if shown:
        t = Table(title=escape(f"points{'' if show_all else ' that differ (--all for every point)'} (ratio = other / "
                               f"{names[0]}; SAME while the [min, p90] ranges overlap within the run-to-run "
                               f"tolerance; regression threshold {res['threshold']:.0%}; * band widened by "
                               "contention)"))
        t.add_column("benchmark", overflow="fold")
        t.add_column("params", overflow="fold")
        t.add_column("metric")
        t.add_column(names[0], justify="right")
        for n in names[1:]:
            t.add_column(n, justify="right")
            t.add_column("ratio", justify="right")
            t.add_column("", justify="left")
        colors = {"SAME": "dim", "FASTER": "green", "SLOWER": "yellow", "REGRESSION": "bold red", "EXCLUDED": "magenta"}
        order = {"REGRESSION": 0, "SLOWER": 1, "STATUS": 2, "FASTER": 3, "EXCLUDED": 4, "SAME": 5}
        shown.sort(key=lambda p: min([order[lab] for lab in p.get("labels", [])] or [order.get(p.get("label"), 6)]))
        for p in shown:
            if p.get("label") == "STATUS":
                t.add_row(p["benchmark"], _params(p), "status", p["status"][0],
                          *sum(([s, "", "STATUS"] for s in p["status"][1:]), []))
                continue
            cells = []
            for i, (v, r, lab) in enumerate(zip(p["values"][1:], p["ratios"], p["labels"]), 1):
                star = "*" if (p.get("widened") or {}).get(i) is not None else ""
                cells += [f"{sig(v, 4)}", sig(r, 4), f"[{colors[lab]}]{lab}{star}[/]"]
            t.add_row(p["benchmark"], _params(p), p["metric"], f"{sig(p['values'][0], 4)}", *cells)
        con.print(t)
    why = {}
    for p in res["points"]:
        for w in (p.get("excluded") or []):
            if w:
                why.setdefault(w.split(":")[0], []).append(f"{p['benchmark']} {_params(p)} ({w})")
    for w, pts in why.items():
        con.print(f"[magenta]excluded[/magenta] {len(pts)} point(s), {w}: e.g. {escape(pts[0])}" +
                  ("" if w != "timed under contention" or res.get("contended_mode") == "widen"
                   else " (--contended widen compares them with a band widened by that contention)"))
    for sh in res["shifts"]:
        con.print(f"[bold yellow]machine shift:[/bold yellow] {Path(sh['run']).name}: all {sh['points']} {sh['family']}"
                  f" points moved together ({sh['median_change']:+.0%} on the median): the machine or its state "
                  "changed (clocks, contention, driver, placement), not one benchmark")
    for o in res["one_sided"][:None if show_all else 5]:
        con.print(f"[yellow]only in {', '.join(Path(x).name for x in o['present_in'])}:[/yellow] {o['point']}")
    if not show_all and len(res["one_sided"]) > 5:
        con.print(f"... and {len(res['one_sided']) - 5} more on one side only (--all lists them)")


def nothing_compared(res: dict) -> str:
    """Why a comparison compared no point (one line)."""
    if not res["points"]:
        return "the runs have no point in common (benchmark + params)"
    excl = sum(1 for p in res["points"] if "EXCLUDED" in p.get("labels", []))
    return (f"every one of the {len(res['points'])} matched points is excluded or of a different status "
            f"({excl} excluded: contention or an implausible fall; on a shared machine --contended widen compares "
            "contended points with a band widened by the measured contention)")
