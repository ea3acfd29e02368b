"""Behaviour kept across the change of structure (issue 28): the throughput model's figures for the recorded fixture
runs (verdict point and interval, hit rates, capacity knees, seed case, goodput) are pinned in
tests/data/pinned_model.json, computed before the move, and must come out identical after it."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from tests.helpers import ROOT, RUNS, run_cli

PINNED = ROOT / "tests" / "data" / "pinned_model.json"
CASES = {"cpu_a": ("cpu_a", []), "cpu_b_what_if": ("cpu_b", ["hit_rate=0.9", "workload=customer_support"])}


def figures_of(case: str) -> dict:
    run, extra = CASES[case]
    with tempfile.TemporaryDirectory() as out:
        r = run_cli("model", str(RUNS / run), "plots=false", f"out={out}", *extra)
        assert r.returncode == 0, r.stderr[-2000:]
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


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_figures_of_the_fixture_runs_are_unchanged(case):
    pinned = json.loads(PINNED.read_text())[case]
    assert _same(figures_of(case), pinned), case


def _same(got, want, path="") -> bool:
    """Equal, numbers to 1e-9 relative (another CPU's SIMD paths move the 14th digit, nothing of the model's)."""
    if isinstance(want, dict) and isinstance(got, dict):
        assert set(got) == set(want), (path, set(got) ^ set(want))
        return all(_same(got[k], want[k], f"{path}/{k}") for k in want)
    if isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), path
        return all(_same(g, w, f"{path}/{i}") for i, (g, w) in enumerate(zip(got, want)))
    if isinstance(want, float) or isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-9, nan_ok=True), (path, got, want)
        return True
    assert got == want, (path, got, want)
    return True
