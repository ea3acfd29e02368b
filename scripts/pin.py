"""Pinned behaviour across a change of structure: the throughput model's figures for the recorded fixture runs and the
planner's verdict on every point of the shipped suites on the GPU targets, computed now and held against
tests/data/pinned_model.json and tests/data/pinned_plan.json.

    python scripts/pin.py            # compute, say what moved (every changed figure with its path), exit 1 if any
    python scripts/pin.py --write    # re-pin: write the current figures (after a change that is meant to move them)

tests/model/test_pinned_figures.py and tests/plan/test_pinned_plan.py run the same comparison (the composed configs
and the benchmarks' run order too: tests/data/pinned_config.json).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))
RUNS = ROOT / "tests" / "data" / "runs"
PINNED_MODEL = ROOT / "tests" / "data" / "pinned_model.json"
PINNED_PLAN = ROOT / "tests" / "data" / "pinned_plan.json"
PINNED_CONFIG = ROOT / "tests" / "data" / "pinned_config.json"
CONFIG_CASES = {"default": [], "quick": ["suite=quick"], "full": ["suite=full"], "analysis": None}
MODEL_CASES = {"cpu_a": ("cpu_a", []), "cpu_b_what_if": ("cpu_b", ["hit_rate=0.9", "workload=customer_support"])}
PLAN_CASES = {"h200_default": ["plan.gpu=h200_141gb"], "h100_default": ["plan.gpu=h100_80gb"],
              "h200_full": ["plan.gpu=h200_141gb", "suite=full"], "b200_quick": ["plan.gpu=b200_192gb", "suite=quick"]}
REL = 1e-9  # another CPU's SIMD paths move the 14th digit, nothing of the model's


def model_figures(case: str) -> dict:
    """The verdict, intervals, hit rates, capacity knees, seed case and goodput of one fixture case."""
    run, extra = MODEL_CASES[case]
    with tempfile.TemporaryDirectory() as out:
        r = subprocess.run([sys.executable, "-m", "bench", "model", str(RUNS / run), "plots=false", f"out={out}",
                            *extra], capture_output=True, text=True, cwd=ROOT,
                           env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
        if r.returncode:
            raise SystemExit(f"bench model {run} failed: {r.stderr[-2000:]}")
        res = json.loads((Path(out) / "model.json").read_text())
    v = res["verdict"]
    fig = {"outcome": v["outcome"], "speedup": v["speedup"], "amdahl_bound": v["amdahl_bound"],
           "routing": v["routing"], "decide_by": v["decide_by"], "reasons": v["reasons"],
           "tiers": v["tiers"], "capacity": v["capacity"], "persistence_minutes": v["persistence_minutes"],
           "seed_measured": v["seed_case"]["measured"], "baseline": res["baseline"],
           "simulated": {k: {"hit_rate": s["hit_rate"], "speedup": s["speedup"]} for k, s in res["simulated"].items()},
           "reuse": {k: r["speedup"] for k, r in res["reuse"].items()},
           "goodput": {k: c.get("speedup") for k, c in (res.get("goodput") or {}).get("configs", {}).items()},
           "headline": v["headline"]}
    return json.loads(json.dumps(fig, default=float))


def plan_figures(case: str) -> dict:
    """Every planned point of a shipped suite on a GPU target: its status, reason, bytes and estimated seconds."""
    from bench.commands.plan import plan_jobs

    ((_, plan, _),) = plan_jobs(PLAN_CASES[case])
    return {"total_s": plan.total_s,
            "points": {f"{p.benchmark} {json.dumps(p.params, sort_keys=True)}":
                       {"family": p.family, "status": p.status, "reason": p.reason, "device_bytes": p.device_bytes,
                        "host_bytes": p.host_bytes, "file_bytes": p.file_bytes, "est_s": p.est_s}
                       for p in plan.points}}


def config_figures(case: str) -> dict:
    """The composed config of a shipped suite (or the analysis config) and the benchmarks in run order."""
    from omegaconf import OmegaConf

    from bench.benchmarks import load_all
    from bench.commands.overrides import compose_checked

    ovs = CONFIG_CASES[case]
    cfg = compose_checked([], config_name="analysis") if ovs is None else compose_checked(ovs)
    doc = OmegaConf.to_container(cfg, resolve=False)
    doc.get("run", {}).pop("id", None)  # the time of composing
    return {"config": doc, "benchmarks": [f"{b.family}/{b.name}" for b in load_all().values()]}


def moved(got, want, path="") -> list[str]:
    """Every place ``got`` differs from ``want`` (numbers to ``REL`` relative)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = [f"{path}/{k}: only {'now' if k in got else 'pinned'}" for k in sorted(set(got) ^ set(want))]
        return out + [m for k in want if k in got for m in moved(got[k], want[k], f"{path}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            return [f"{path}: {len(want)} items pinned, {len(got)} now"]
        return [m for i, (g, w) in enumerate(zip(got, want)) for m in moved(g, w, f"{path}/{i}")]
    if isinstance(want, float) or isinstance(got, float):
        try:
            g, w = float(got), float(want)
        except (TypeError, ValueError):
            return [f"{path}: pinned {want!r}, now {got!r}"]
        same = (math.isnan(g) and math.isnan(w)) or g == w or abs(g - w) <= REL * max(abs(g), abs(w))
        return [] if same else [f"{path}: pinned {w!r}, now {g!r}"]
    return [] if got == want else [f"{path}: pinned {want!r}, now {got!r}"]


def compute() -> dict:
    return {"model": {c: model_figures(c) for c in sorted(MODEL_CASES)},
            "plan": {c: plan_figures(c) for c in sorted(PLAN_CASES)},
            "config": {c: config_figures(c) for c in sorted(CONFIG_CASES)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help="re-pin: write the current figures")
    a = p.parse_args(argv)
    now = compute()
    if a.write:
        PINNED_MODEL.write_text(json.dumps(now["model"], indent=1, sort_keys=True) + "\n")
        PINNED_PLAN.write_text(json.dumps(now["plan"], indent=1, sort_keys=True) + "\n")
        PINNED_CONFIG.write_text(json.dumps(now["config"], indent=1) + "\n")
        print(f"pinned: {', '.join(str(p.relative_to(ROOT)) for p in (PINNED_MODEL, PINNED_PLAN, PINNED_CONFIG))}")
        return 0
    changes = []
    for what, path in (("model", PINNED_MODEL), ("plan", PINNED_PLAN), ("config", PINNED_CONFIG)):
        pinned = json.loads(path.read_text()) if path.exists() else {}
        changes += [f"{what}{m}" for m in moved(now[what], pinned)]
    for c in changes:
        print(c)
    print(f"{len(changes)} figure(s) moved" if changes else "nothing moved")
    return 1 if changes else 0


if __name__ == "__main__":
    sys.exit(main())
