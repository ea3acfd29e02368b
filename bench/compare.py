"""`python -m bench compare BASE OTHER [...]`: the same points across runs (hardware generations, versions).

Points are matched on benchmark + params. Each metric is the point's headline (gbps, else tflops, else the time,
where lower is better). A difference inside the noise of the two measurements (their IQR/median, at least
``--noise-floor``) is SAME; outside it FASTER or SLOWER; SLOWER by more than ``--threshold`` is a regression
(exit code 1 with ``--fail-on-regression``). Points on one side only are listed, never dropped. Runs whose
configurations differ in what defines a point (model preset, dtypes) are refused unless ``--allow-mismatch``;
different hardware is the point of comparing and is shown side by side.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from bench.errors import UserError
from bench.store import (RECORDS, check_numbers, check_writable_file, point_key, read_manifest, read_records,
                         run_dirs, run_state)

# config keys that change what a point measures even with equal params
IDENTITY_KEYS = ("model.name", "model.dtype", "ceilings.gemm_dtype", "attention.dtype", "layers.dtype",
                 "storage.direct", "storage.file_bytes")
FINGERPRINT_KEYS = {
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


def _robust_sd(x) -> float:
    import numpy as np

    x = np.asarray(list(x), float)
    if len(x) < 3:
        return 0.0
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def compare(paths, threshold: float = 0.05, noise_floor: float = 0.02, allow_mismatch: bool = False) -> dict:
    """Points matched on benchmark + params. Each point's [min, p90] range of per-call time in the base and the other
    run is compared on a log scale: SAME while the ranges overlap within the run-to-run tolerance (at least
    ``noise_floor``; on the same machine also K_RUN robust standard deviations of all matched points' median
    log-ratios, which is how much this machine varies from run to run), FASTER or SLOWER beyond it, and SLOWER by
    more than ``threshold`` on the median is a REGRESSION. Points timed under contention or whose bandwidth fell
    implausibly within their own sweep (bench.store.suspect_points) are EXCLUDED from the verdict, with the reason.
    A family whose points all moved together (median log-ratio beyond its standard error and the threshold) is
    reported as a shift of the machine itself (clocks, contention, driver), not a code change."""
    import numpy as np

    from bench.store import suspect_points

    if len(paths) < 2:
        raise UserError("compare needs at least two runs: python -m bench compare BASE OTHER [...]")
    sides = [side(p) for p in paths]
    names = [s[0] for s in sides]
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise UserError(f"compare {dup} with itself: name two different runs (python -m bench compare BASE OTHER)")
    incomplete = {name: run_state(man) for name, man, _ in sides if run_state(man)}
    base_man = sides[0][1]
    mismatches = []
    for name, man, _ in sides[1:]:
        for key in IDENTITY_KEYS:
            a, b = _cfg(base_man, key), _cfg(man, key)
            if a is not None and b is not None and a != b:
                mismatches.append(f"{key}: {a} ({sides[0][0]}) vs {b} ({name})")
    if mismatches and not allow_mismatch:
        raise UserError("runs measure different configurations (" + "; ".join(mismatches) +
                        "); pass --allow-mismatch to compare anyway")
    fingerprint = {k: [f(man) for _, man, _ in sides] for k, f in FINGERPRINT_KEYS.items()}
    differs = {k: v for k, v in fingerprint.items() if len(set(map(str, v))) > 1}
    same_machine = not ({"gpu", "host", "CPU", "driver", "CUDA", "torch", "device"} & set(differs))

    tables = [{point_key(r): r for r in recs} for _, _, recs in sides]
    suspects = [suspect_points(recs) for _, _, recs in sides]
    base = tables[0]
    points, one_sided, both_skipped = [], [], 0
    all_keys = list(dict.fromkeys(k for t in tables for k in t))
    for key in all_keys:
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
            entry["excluded"].append(why)
        points.append(entry)

    shifts: list = []
    for i in range(1, len(sides)):
        comparable = [p for p in points if p.get("label") != "STATUS" and not p["excluded"][i - 1]]
        gains = np.array([p["gains"][i - 1] for p in comparable]) if comparable else np.zeros(0)
        fam = {}
        for p, g in zip(comparable, gains):
            fam.setdefault(p["family"], []).append(g)
        centers = {f: float(np.median(v)) for f, v in fam.items()}
        resid = [g - centers[p["family"]] for p, g in zip(comparable, gains)]
        pooled = _robust_sd(resid)
        # run-to-run spread per family (attention on a shared CPU varies ~17%, transfers ~4%): its own robust SD when
        # it has enough points, else the pooled one
        sd = {f: (_robust_sd(np.array(v) - centers[f]) if len(v) >= MIN_FAMILY_POINTS else pooled)
              for f, v in fam.items()}
        tol_of = {f: (max(noise_floor, K_RUN * x) if same_machine else noise_floor) for f, x in sd.items()}
        for f, v in fam.items():
            se = 1.2533 * sd[f] / math.sqrt(len(v)) if len(v) else math.inf
            if len(v) >= 3 and abs(centers[f]) > max(threshold, 3 * se):
                shifts.append({"run": sides[i][0], "family": f, "points": len(v),
                               "median_change": math.expm1(centers[f])})
        for p in points:
            if p.get("label") == "STATUS":
                continue
            b_fast, b_med, b_slow = _interval(tables[0][p["point"]])
            o_fast, o_med, o_slow = _interval(tables[i][p["point"]])
            # gap between the ranges on a log scale: > 0 the other is slower, < 0 faster
            slower_by = math.log(o_fast / b_slow) if o_fast > b_slow else 0.0
            faster_by = math.log(b_fast / o_slow) if o_slow < b_fast else 0.0
            run_tol = tol_of.get(p["family"], max(noise_floor, K_RUN * pooled) if same_machine else noise_floor)
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
    return {"runs": [s[0] for s in sides], "fingerprint": fingerprint, "fingerprint_differs": sorted(differs),
            "same_machine": same_machine, "mismatches": mismatches, "points": points, "one_sided": one_sided,
            "both_skipped": both_skipped, "incomplete": incomplete, "shifts": shifts,
            "excluded": sum(1 for p in points if "EXCLUDED" in p.get("labels", [])),
            "regressions": sum(1 for p in points if p.get("regression")), "threshold": threshold}


def _params(p: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in (p.get("params") or {}).items())


def print_compare(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console()
    names = [Path(r).name for r in res["runs"]]
    ft = Table(title="hardware and software (differences in bold)")
    ft.add_column("")
    for n in names:
        ft.add_column(n)
    for k, vals in res["fingerprint"].items():
        if all(v is None for v in vals):
            continue
        style = "bold" if k in res["fingerprint_differs"] else None
        ft.add_row(k, *["-" if v is None else str(v) for v in vals], style=style)
    con.print(ft)
    if res["fingerprint_differs"]:
        con.print(f"[yellow]note:[/yellow] different hardware/software: {', '.join(res['fingerprint_differs'])}")
    for m in res["mismatches"]:
        con.print(f"[yellow]warning (--allow-mismatch):[/yellow] {m}")
    for run, state in res["incomplete"].items():
        con.print(f"[bold yellow]incomplete run:[/bold yellow] {run} is {state}: its points are what it measured "
                  "before it stopped")
    t = Table(title=f"points (ratio = other / {names[0]}; SAME while the [min, p90] ranges overlap within the "
                    f"run-to-run tolerance; regression threshold {res['threshold']:.0%})")
    t.add_column("benchmark", overflow="fold")
    t.add_column("params", overflow="fold")
    t.add_column("metric")
    t.add_column(names[0], justify="right")
    for n in names[1:]:
        t.add_column(n, justify="right")
        t.add_column("ratio", justify="right")
        t.add_column("", justify="left")
    colors = {"SAME": "dim", "FASTER": "green", "SLOWER": "yellow", "REGRESSION": "bold red", "EXCLUDED": "magenta"}
    for p in res["points"]:
        if p.get("label") == "STATUS":
            t.add_row(p["benchmark"], _params(p), "status", p["status"][0],
                      *sum(([s, "", "STATUS"] for s in p["status"][1:]), []))
            continue
        cells = []
        for v, r, lab in zip(p["values"][1:], p["ratios"], p["labels"]):
            cells += [f"{v:.4g}", f"{r:.3f}", f"[{colors[lab]}]{lab}[/]"]
        t.add_row(p["benchmark"], _params(p), p["metric"], f"{p['values'][0]:.4g}", *cells)
    con.print(t)
    for p in res["points"]:
        for i, why in enumerate(p.get("excluded") or []):
            if why:
                con.print(f"[magenta]excluded[/magenta] {p['benchmark']} {_params(p)} ({names[i + 1]} vs "
                          f"{names[0]}): {why}")
    for sh in res["shifts"]:
        con.print(f"[bold yellow]machine shift:[/bold yellow] {Path(sh['run']).name}: all {sh['points']} {sh['family']}"
                  f" points moved together ({sh['median_change']:+.0%} on the median): the machine or its state "
                  "changed (clocks, contention, driver, placement), not one benchmark")
    for o in res["one_sided"]:
        con.print(f"[yellow]only in {', '.join(Path(x).name for x in o['present_in'])}:[/yellow] {o['point']}")
    con.print(f"{len(res['points'])} matched points, {res['both_skipped']} skipped on every side (not listed), "
              f"{len(res['one_sided'])} on one side only, {res['excluded']} excluded, {res['regressions']} "
              "regression(s)" + ("" if res["same_machine"] else "; different machines: per-point noise only"))


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    p.add_argument("--threshold", type=float, default=5.0, help="percent slower that counts as a regression (5)")
    p.add_argument("--noise-floor", type=float, default=2.0, help="smallest noise band in percent (2)")
    p.add_argument("--allow-mismatch", action="store_true", help="compare runs of different model/dtype anyway")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found (CI)")
    p.add_argument("--allow-incomplete", action="store_true",
                   help="let --fail-on-regression gate on interrupted, failed or unfinished runs")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    a = p.parse_args(argv)
    for flag, v, ok in (("--threshold", a.threshold, a.threshold > 0), ("--noise-floor", a.noise_floor,
                                                                         a.noise_floor >= 0)):
        if not (math.isfinite(v) and ok):
            raise UserError(f"{flag}={v:g} is not allowed: a percentage, finite, "
                            f"{'> 0' if flag == '--threshold' else '>= 0'}")
    if a.json:
        check_writable_file(a.json, "--json")
    res = compare(a.runs, a.threshold / 100, a.noise_floor / 100, a.allow_mismatch)
    print_compare(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    if a.fail_on_regression and res["incomplete"] and not a.allow_incomplete:
        which = "; ".join(f"{k}: {v}" for k, v in res["incomplete"].items())
        raise UserError(f"--fail-on-regression on an incomplete run ({which}): a gate needs complete runs "
                        "(or --allow-incomplete)")
    return 1 if (a.fail_on_regression and res["regressions"]) else 0

