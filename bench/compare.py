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

from bench.cli import register
from bench.errors import UserError
from bench.store import RECORDS, read_manifest, read_records, run_dirs

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


def point_key(rec: dict) -> str:
    return rec["benchmark"] + " " + json.dumps(rec.get("params") or {}, sort_keys=True, default=str)


def side(path) -> tuple[str, dict, list]:
    dirs = run_dirs([path])
    if len(dirs) != 1:
        raise UserError(f"{path} holds {len(dirs)} runs; compare run directories one by one (e.g. {dirs[0]})")
    return str(dirs[0]), read_manifest(dirs[0]), read_records(dirs[0] / RECORDS)


def compare(paths, threshold: float = 0.05, noise_floor: float = 0.02, allow_mismatch: bool = False) -> dict:
    if len(paths) < 2:
        raise UserError("compare needs at least two runs: python -m bench compare BASE OTHER [...]")
    sides = [side(p) for p in paths]
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

    tables = [{point_key(r): r for r in recs} for _, _, recs in sides]
    base = tables[0]
    points, one_sided = [], []
    all_keys = list(dict.fromkeys(k for t in tables for k in t))
    for key in all_keys:
        present = [key in t for t in tables]
        if not all(present):
            one_sided.append({"point": key, "present_in": [sides[i][0] for i, p in enumerate(present) if p]})
            continue
        rb = base[key]
        entry = {"point": key, "benchmark": rb["benchmark"], "status": [t[key]["status"] for t in tables]}
        if any(s != "ok" for s in entry["status"]):
            entry["label"] = "STATUS"
            entry["reasons"] = [t[key].get("reason") for t in tables]
            points.append(entry)
            continue
        metric, vb, higher = headline(rb)
        nb = max(float(rb["metrics"].get("noise") or 0), noise_floor)
        entry.update(metric=metric, values=[vb], ratios=[], labels=[], regression=False)
        for t in tables[1:]:
            r = t[key]
            _, v, _ = headline(r)
            noise = max(nb, float(r["metrics"].get("noise") or 0), noise_floor)
            ratio = v / vb if vb else math.nan
            gain = ratio - 1 if higher else (1 / ratio - 1 if ratio else math.nan)  # > 0 means better
            label = "SAME" if abs(gain) <= noise else ("FASTER" if gain > 0 else "SLOWER")
            if label == "SLOWER" and -gain > threshold:
                label = "REGRESSION"
                entry["regression"] = True
            entry["values"].append(v)
            entry["ratios"].append(ratio)
            entry["labels"].append(label)
            entry.setdefault("noise", []).append(noise)
        points.append(entry)
    return {"runs": [s[0] for s in sides], "fingerprint": fingerprint, "fingerprint_differs": sorted(differs),
            "mismatches": mismatches, "points": points, "one_sided": one_sided,
            "regressions": sum(1 for p in points if p.get("regression")), "threshold": threshold}


def print_compare(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    names = [Path(r).name for r in res["runs"]]
    ft = Table(title="hardware and software (differences in bold)")
    ft.add_column("")
    for n in names:
        ft.add_column(n)
    for k, vals in res["fingerprint"].items():
        style = "bold" if k in res["fingerprint_differs"] else None
        ft.add_row(k, *[str(v) for v in vals], style=style)
    con.print(ft)
    if res["fingerprint_differs"]:
        con.print(f"[yellow]note:[/yellow] different hardware/software: {', '.join(res['fingerprint_differs'])}")
    for m in res["mismatches"]:
        con.print(f"[yellow]warning (--allow-mismatch):[/yellow] {m}")
    t = Table(title=f"points (ratio = other / {names[0]}; regression threshold {res['threshold']:.0%})")
    t.add_column("benchmark / params", overflow="fold", max_width=70)
    t.add_column("metric")
    t.add_column(names[0], justify="right")
    for n in names[1:]:
        t.add_column(n, justify="right")
        t.add_column("ratio", justify="right")
        t.add_column("", justify="left")
    colors = {"SAME": "dim", "FASTER": "green", "SLOWER": "yellow", "REGRESSION": "bold red"}
    for p in res["points"]:
        if p.get("label") == "STATUS":
            t.add_row(p["point"], "status", *[f"{s}" for s in p["status"][:1]],
                      *sum(([s, "", "STATUS"] for s in p["status"][1:]), []))
            continue
        cells = []
        for v, r, lab in zip(p["values"][1:], p["ratios"], p["labels"]):
            cells += [f"{v:.4g}", f"{r:.3f}", f"[{colors[lab]}]{lab}[/]"]
        t.add_row(p["point"], p["metric"], f"{p['values'][0]:.4g}", *cells)
    con.print(t)
    for o in res["one_sided"]:
        con.print(f"[yellow]only in {', '.join(Path(x).name for x in o['present_in'])}:[/yellow] {o['point']}")
    con.print(f"{len(res['points'])} matched points, {len(res['one_sided'])} on one side only, "
              f"{res['regressions']} regression(s)")


def cmd_compare(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories; the first is the baseline")
    p.add_argument("--threshold", type=float, default=5.0, help="percent slower that counts as a regression (5)")
    p.add_argument("--noise-floor", type=float, default=2.0, help="smallest noise band in percent (2)")
    p.add_argument("--allow-mismatch", action="store_true", help="compare runs of different model/dtype anyway")
    p.add_argument("--fail-on-regression", action="store_true", help="exit 1 when a regression is found (CI)")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    a = p.parse_args(argv)
    if a.threshold <= 0 or a.noise_floor < 0:
        raise UserError(f"--threshold={a.threshold} / --noise-floor={a.noise_floor}: percentages, threshold > 0")
    res = compare(a.runs, a.threshold / 100, a.noise_floor / 100, a.allow_mismatch)
    print_compare(res)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 1 if (a.fail_on_regression and res["regressions"]) else 0


register("compare", cmd_compare, "compare runs point by point (noise-aware; hardware shown side by side)")
