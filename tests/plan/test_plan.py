"""The planner (bench run --plan): bytes from the benchmarks' declared needs, targets, budgets, JSON."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from tests.helpers import run_cli


def _plan(overrides):
    from bench.commands.plan import plan_jobs

    (job, plan, added), = plan_jobs(overrides)
    return plan, added


def test_plan_memory_verdicts_match_the_skips_of_a_cpu_run(tmp_path):
    """At a 4 MiB harness.cpu_max_bytes, the points the plan says do not fit are exactly the points a real CPU run
    skips for harness.cpu_max_bytes (every other point runs)."""
    from bench.core.store import read_records

    ov = ["suite=quick", "model=tiny", "benchmark=[ceilings,transfer,layers,validate]", "harness.cpu_max_bytes=4194304",
          "harness.time_budget_s=0.02", "harness.warmup_s=0"]
    r = run_cli("run", *ov, f"run.root={tmp_path}", "run.id=m", "harness.progress=false", "run.analyze=false")
    assert r.returncode == 0, r.stderr[-2000:]
    plan, _ = _plan(ov + ["harness.device=cpu"])
    axes_of = {p.benchmark: list(p.params) for p in plan.points}
    no_fit = {(p.benchmark, json.dumps(p.params, sort_keys=True)) for p in plan.points if p.status == "no_fit"}
    skipped = set()
    recs = read_records(tmp_path / "m" / "records.jsonl")
    for rec in recs:
        key = (rec["benchmark"], json.dumps({k: rec["params"][k] for k in axes_of[rec["benchmark"]]}, sort_keys=True))
        if rec["status"] == "skipped" and "harness.cpu_max_bytes" in (rec["reason"] or ""):
            skipped.add(key)
    assert no_fit and no_fit == skipped, (no_fit ^ skipped)
    assert len(recs) == len(plan.points)


def test_every_target_and_suite_plans_without_errors():
    """Every target with the default suite, every suite on the H100, every model preset on the H100: each point is
    planned (run, skip with a reason, no fit, over budget), none 'cannot plan'; the default suite fits 10 minutes
    on one H100."""
    from bench.plan.targets import names

    combos = [["plan.gpu=" + t] for t in names()] + \
        [["plan.gpu=h100_80gb", f"suite={s}"] for s in ("quick", "full")] + \
        [["plan.gpu=h100_80gb", f"model={m}"] for m in ("llama3_70b", "qwen2_5_32b", "mixtral_8x7b", "deepseek_v3",
                                                        "tiny")]
    for ov in combos:
        plan, _ = _plan(ov)
        bad = [(p.benchmark, p.params, p.reason) for p in plan.points if p.reason.startswith("cannot plan")]
        assert not bad, (ov, bad[:3])
        assert plan.total_s > 0
    h100, _ = _plan(["plan.gpu=h100_80gb"])
    assert h100.total_s <= 600, h100.families
    full, _ = _plan(["plan.gpu=h100_80gb", "suite=full"])
    assert full.total_s > h100.total_s
    ds, _ = _plan(["plan.gpu=h100_80gb", "model=deepseek_v3"])
    assert any(p.status == "no_fit" for p in ds.points)  # a 671B MoE's big points do not fit 80 GB: said before


def test_plan_cli_table_json_and_errors(tmp_path):
    r = run_cli("run", "--plan", "plan.gpu=h100_80gb")
    assert r.returncode == 0, r.stderr
    assert "planned total:" in r.stdout and "h100_80gb" in r.stdout and "per family" in r.stdout
    j = run_cli("run", "--plan", "--json", "plan.gpu=h200_141gb", "-m", "model=llama3_8b,tiny")
    assert j.returncode == 0, j.stderr
    doc = json.loads(j.stdout)
    df = pd.DataFrame(doc["points"])
    assert set(df["job"]) == {0, 1} and {"benchmark", "family", "params", "device_bytes", "host_bytes",
                                          "file_bytes", "status", "est_s"} <= set(df.columns)
    assert doc["total_s"] == pytest.approx(sum(job["total_s"] for job in doc["jobs"]), rel=1e-3)
    assert pd.read_json(io.StringIO(json.dumps(doc["points"]))).shape[0] == len(df)
    bad = run_cli("run", "--plan", "plan.gpu=a100")
    assert bad.returncode == 2 and "plan.gpu='a100'" in bad.stderr and "h100_80gb" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written anywhere by a plan (run dirs go under results/)


def test_family_budget_skips_points_and_manifest_keeps_planned_vs_actual(tmp_path):
    """A family whose budget cannot hold its points: the points that would overrun it are skipped with the
    budget as the reason, the others run, and the manifest has planned vs actual time per family."""
    r = run_cli("run", "suite=quick", "model=tiny", "benchmark=transfer", "only=[h2d_pinned,d2h_pinned]",
                "transfer.budget_s=0.6", f"run.root={tmp_path}", "run.id=b", "harness.progress=false",
                "run.analyze=false")
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in (tmp_path / "b" / "records.jsonl").read_text().splitlines()]
    over = [x for x in recs if x["status"] == "skipped" and "family budget" in (x["reason"] or "")]
    ran = [x for x in recs if x["status"] == "ok"]
    assert over and ran, [(x["status"], x["reason"]) for x in recs]
    assert "transfer.budget_s=0.6" in over[0]["reason"]
    fam = json.loads((tmp_path / "b" / "manifest.json").read_text())["families"]["transfer"]
    assert fam["budget_s"] == 0.6 and fam["skipped_for_budget"] == len(over)
    assert fam["actual_s"] <= 0.6 + max(x["wall_s"] for x in ran) and fam["planned_s"] > 0
    assert all(x["planned_s"] is not None for x in recs)
    assert "family budgets:" in r.stdout


@pytest.mark.parametrize("gpu", ["h200_141gb", "h100_80gb"])
def test_default_plan_runs_the_warm_tier_within_its_budget(gpu):
    """On one GPU the default suite plans the warm family's fetch sweep (row sizes 64 B .. 64 KiB and the model's
    row, every method), the search and the cold flows inside warm's budget; the neighbour-GPU points are skipped
    with why, and copy_per_run where a step would need more copies than warm.max_copy_calls."""
    plan, _ = _plan(["plan.gpu=" + gpu])
    warm = [p for p in plan.points if p.family == "warm"]
    runs = [p for p in warm if p.status == "run"]
    fetch = [p for p in runs if p.benchmark == "warm_fetch"]
    assert {p.params["method"] for p in fetch} == {"uva_kernel", "cpu_gather", "copy_per_run"}
    sizes = {p.params["row_bytes"] for p in fetch}
    assert min(sizes) <= 64 and max(sizes) >= 65536
    assert {p.benchmark for p in runs} >= {"warm_fetch", "warm_search", "cold_read_under_decode"}
    assert not [p for p in warm if p.status == "over_budget"], plan.families["warm"]
    peer = [p for p in warm if p.benchmark == "warm_peer"]
    assert peer and all(p.status == "skip" and "two or more GPUs" in p.reason for p in peer)
    copies = [p for p in warm if p.status == "skip" and p.params.get("method") == "copy_per_run"]
    assert all("max_copy_calls" in p.reason for p in copies)
    assert sum(p.est_s for p in runs) <= plan.families["warm"]["budget_s"]


def test_plan_titles_show_the_sweep_values_as_typed():
    """A job's title names its overrides as typed: rich must not read [uniform] as markup and drop it."""
    from tests.helpers import run_main

    r = run_main("run", "--plan", "plan.gpu=h200_141gb", "benchmark=warm", "-m",
                 "warm.locality=[uniform],[runs_16,repeat_0.6]")
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())  # a long title folds at the console's width (never cut)
    assert "warm.locality=[uniform] on h200_141gb" in out
    assert "warm.locality=[runs_16,repeat_0.6] on h200_141gb" in out


def _replay_s(model, monkeypatch=None, refuse=None):
    """(planned seconds of a reuse_hbm replay point through 4 layers on the H200, decode steps it replays)."""
    from bench.commands.overrides import compose_checked
    from bench.llm import replay
    from bench.llm.workload import Workload
    from bench.benchmarks import load_all
    from bench.harness.cost import Ctx
    from bench.plan import _state_for
    from bench.plan.targets import load

    if refuse is not None:
        monkeypatch.setattr(replay, "graph_refusal", lambda shape: refuse)
    cfg = compose_checked(["plan.gpu=h200_141gb", f"model={model}", "benchmark=validate", "validate.layers=4"])
    bench, t, params = load_all()["e2e_agentic_replay"], load("h200_141gb"), {"mode": "reuse_hbm"}
    c = Ctx(cfg, params, t, None, bench.name, state=lambda: _state_for(bench, params, cfg, t))
    v = cfg.validate
    sessions = replay.make_sessions(Workload.from_cfg(v.workload), int(v.sessions), int(v.turns),
                                    float(v.scale_tokens), int(v.vocab_rows), int(v.seed))
    steps = sum(len(t.out_ids) for t in sessions[0].turns) + \
        int(v.repeats) * sum(len(t.out_ids) for s in sessions for t in s.turns)  # warm-up session + repeats
    return bench.cost(c).setup_s, steps, c


def test_replay_plan_prices_eager_decode_where_no_graph_can_hold_a_step(monkeypatch):
    """Decode steps are priced as the engine runs them (bench.llm.replay.graph_refusal): CUDA graphs for a dense
    model; eager (every op of a layer issued from Python at issue_us) where a graph cannot hold the step (MoE, or
    the rule refusing), which costs at least steps x layers x ops x issue_us more."""
    from bench.benchmarks.layers.cost import layer_ops

    graphs_s, steps, c = _replay_s("llama3_8b")
    eager_s, steps2, _ = _replay_s("llama3_8b", monkeypatch, refuse="refused for the test")
    issue = steps * 4 * layer_ops(c.shape, 1) * c.t.issue_us * 1e-6
    assert steps == steps2 and steps > 100
    assert eager_s >= issue  # every eager step takes at least its ops' issue
    assert 0.5 * issue <= eager_s - graphs_s <= issue  # in place of the GPU's time for the step (here < half)
    monkeypatch.undo()
    moe_s, moe_steps, mc = _replay_s("mixtral_8x7b")
    assert layer_ops(mc.shape, 1) == layer_ops(c.shape, 1) + 5 * 2  # the two experts a token is routed to
    assert moe_s >= moe_steps * 4 * layer_ops(mc.shape, 1) * mc.t.issue_us * 1e-6
