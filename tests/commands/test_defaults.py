"""What users get by default is what the suite claims (issue 30): the seed's case labelled, gates and runs that
cannot pass on nothing, steady-state storage passes, a huge file refused at once, legible logs, truncated records
seen as such, a what-if that changes the answer, reports that keep models apart."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.helpers import RUNS, run_cli



@pytest.fixture(scope="module")
def model_a(tmp_path_factory):
    """bench model on the recorded run cpu_a (stdout redirected, as in a job log), and its model.json."""
    out = tmp_path_factory.mktemp("m")
    r = run_cli("model", str(RUNS / "cpu_a"), "plots=false", f"out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    return r, json.loads((out / "model.json").read_text())


def test_the_seeds_case_is_labelled_as_written_and_on_the_measured_costs(model_a):
    _, res = model_a
    sc = res["verdict"]["seed_case"]
    w, m = sc["as_written"], sc["measured"]
    # the seed's arithmetic, from the fleet model itself: 64 GPUs balanced 32:32, prefill removed -> 2x, and no more
    assert (w["gpus"], w["prefill_gpus"], w["decode_gpus"]) == (64, 32, 32)
    assert w["speedup"] == pytest.approx(2.0) and w["amdahl_bound"] == pytest.approx(2.0)
    # the same arithmetic on these costs, each figure with its interval
    for k in ("prefill_share", "amdahl_bound", "speedup", "share_of_bound_gain"):
        assert m[k]["low"] <= m[k]["point"] <= m[k]["high"], k
    share = m["prefill_share"]["point"]
    assert m["amdahl_bound"]["point"] == pytest.approx(1 / (1 - share))
    bs = m["balanced_split"]
    assert bs["prefill_gpus"] + bs["decode_gpus"] == 64 and bs["prefill_gpus"] == max(1, min(63, round(64 * share)))
    assert m["speedup"]["point"] == res["verdict"]["speedup"]["point"]
    assert "The seed's arithmetic as written: 64 GPUs balanced 32:32, prefill removed: 2.00x" in \
        res["verdict"]["sentence"]


def test_the_verdict_leads_with_its_answer_and_a_redirected_log_shows_every_number(model_a):
    r, res = model_a
    v = res["verdict"]
    top = " ".join(r.stdout[:r.stdout.index("┏")].split())  # what comes before the first table
    assert top.startswith(v["headline"]) and f"{v['speedup']['point']:.2f}x" in top
    assert len(v["headline"]) < 400 and v["details"] and v["sentence"].startswith(v["headline"])
    assert "…" not in r.stdout  # no cell cut to an ellipsis in a file: a long cell wraps
    words = "paged_onload uva_kernel/block_major at 64 tokens/block".split()
    assert all(w in r.stdout for w in words)  # a long cell, whole (wrapped within its column)
    assert max(map(len, r.stdout.splitlines())) <= 120  # a log a person can read: $COLUMNS or 120


def test_a_what_if_changes_the_verdict(tmp_path):
    got = {}
    for h in ("0.5", "1.0"):
        r = run_cli("model", str(RUNS / "cpu_a"), "plots=false", f"hit_rate={h}", f"out={tmp_path / h}", "fleet.sessions=300",
                    "verdict.bootstrap=40", "fleet.slo_requests=2000")
        assert r.returncode == 0, r.stderr[-1000:]
        v = json.loads((tmp_path / h / "model.json").read_text())["verdict"]
        assert v["what_if_hit_rate"] == float(h) and "what-if" in v["headline"]
        assert v["tiers"]["hbm"]["hit_rate"] == pytest.approx(float(h), abs=0.01)
        got[h] = v["speedup"]["point"]
    assert got["1.0"] > 3 * got["0.5"] > 0


def _edit_records(run, fn):
    p = run / "records.jsonl"
    recs = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    p.write_text("".join(json.dumps(x) + "\n" for x in fn(recs)))


def test_compare_that_compared_nothing_exits_3_and_widen_compares_contended_points(runs):
    a, b = runs

    def contend(recs):
        for x in recs:
            x["contention"] = {"contended": True, "other_processes_cores": 0.9, "steal_share": 0.0,
                               "reasons": ["other processes used 0.90 CPU cores"]}
        return recs

    _edit_records(b, contend)
    for args in ((), ("--fail-on-regression",)):
        r = run_cli("compare", str(a), str(b), *args)
        assert r.returncode == 3, (r.stdout[-500:], r.stderr[-500:])
        assert "compared nothing" in r.stderr and r.stderr.count("\n") == 1
        assert r.stdout.startswith("compared 0 of")
    r = run_cli("compare", str(a), str(b), "--contended", "widen")
    assert r.returncode == 0 and "compared 67 of 67 matched points (67 with a band widened" in r.stdout


def test_a_run_that_measured_nothing_exits_3_with_the_reasons(tmp_path):
    shm = "/dev/shm"
    if not (os.path.isdir(shm) and os.access(shm, os.W_OK)):
        pytest.skip("no writable /dev/shm here")
    d = tempfile_dir(shm)
    try:
        r = run_cli("run", "benchmark=storage", "only=[file_read]", "suite=quick", f"storage.path={d}",
                    f"run.root={tmp_path}", "run.id=nothing", "harness.progress=false")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if "tmpfs" not in r.stderr and "ramfs" not in r.stderr:
        pytest.skip("/dev/shm is not memory-backed here")
    assert r.returncode == 3
    line = [x for x in r.stderr.splitlines() if x.startswith("error: no point was measured")]
    assert len(line) == 1 and "x storage.path" in line[0] and "(exit 3)" in line[0]


def tempfile_dir(root):
    import tempfile

    return tempfile.mkdtemp(dir=root, prefix="tierbench-test-")


def test_a_file_larger_than_the_disk_is_refused_before_anything_runs_plan_and_run(tmp_path):
    for cmd in (("run",), ("run", "--plan")):
        r = run_cli(*cmd, "benchmark=storage", "storage.file_bytes=10995116277760", f"run.root={tmp_path}")
        assert r.returncode == 2
        assert r.stderr.strip().count("\n") == 0 and "storage.file_bytes=10995116277760" in r.stderr
        assert "free space" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_offsets_of_a_huge_file_are_drawn_in_memory_of_the_pass_not_the_file():
    from bench.hw.fileio import offsets

    offs = offsets("random", 4096, 16384, 10995116277760, 7)  # 2.7e9 slots: a permutation of them is 21 GB
    assert len(set(offs.tolist())) == 16384 and (offs % 4096 == 0).all() and offs.max() < 10995116277760


def test_storage_passes_are_steady_state_by_construction():
    from bench.hw.fileio import pass_bounds, pass_requests

    fewest, most = pass_bounds("random", 4096, 16, 1 << 30, 32, 1 << 30)
    assert (fewest, most) == (512, 262144)  # >= 32 requests per queue slot; at most the file's slots
    assert pass_requests(100_000, 0.2, fewest, most) == 20000  # ~0.2 s at the probe's rate
    assert pass_requests(1_000, 0.2, fewest, most) == 512  # never fewer than 32 per slot
    assert pass_bounds("sequential", 64 << 20, 16, 1 << 30, 32, 1 << 30) == (16, 16)  # capped by the file
    assert pass_bounds("repeat", 4096, 1, 1 << 20, 32, 1 << 30)[1] == (1 << 30) // 4096  # repeat: no file cap


def test_a_storage_point_times_a_probed_steady_state_pass(tmp_path):
    from tests.helpers import run_benchmarks

    recs = run_benchmarks(["file_read"], ["suite=quick", "model=tiny", f"storage.path={tmp_path}",
                                          "storage.file_bytes=16777216", "storage.request_bytes=[4096]",
                                          "storage.kv_block_tokens=[]", "storage.queue_depths=[4]",
                                          "storage.patterns=[random]", "storage.engines=[aio,threads]",
                                          "harness.time_budget_s=0.05"], tmp_path)
    assert recs and all(r["status"] == "ok" for r in recs)
    for r in recs:
        ps = r["info"]["pass_sizing"]
        assert r["info"]["requests_per_pass"] == ps["requests"] >= 32 * 4 and ps["probe_requests"] == 32 * 4
        assert 2 <= len(ps["probe_passes_s"]) <= 5
    assert len({r["info"]["requests_per_pass"] for r in recs}) == 1  # every engine times the same requests


def test_a_truncated_records_file_makes_the_run_incomplete_everywhere(runs, tmp_path):
    a, _ = runs
    _edit_records(a, lambda recs: [x for x in recs if x["benchmark"] not in ("file_read", "file_write")])
    st = run_cli("status", str(a))
    assert st.returncode == 1 and "truncated: records.jsonl holds" in st.stdout
    m = run_cli("model", str(a), "plots=false", f"out={tmp_path / 'm'}", "fleet.sessions=300", "verdict.bootstrap=20",
                "fleet.slo_requests=2000")
    assert m.returncode == 0
    v = json.loads((tmp_path / "m" / "model.json").read_text())["verdict"]
    assert v["reasons"][0].startswith("incomplete run (truncated: records.jsonl holds")
    rep = run_cli("report", str(a), "--out", str(tmp_path / "rep"))
    assert rep.returncode == 0 and "truncated: records.jsonl holds" in rep.stdout
    assert "truncated: records.jsonl holds" in (tmp_path / "rep" / "report.html").read_text()


def test_report_keeps_runs_of_different_models_apart_and_shows_model_and_dtype(runs, tmp_path):
    a, b = runs
    man = json.loads((b / "manifest.json").read_text())
    man["config"]["model"]["name"] = "llama3_8b"
    (b / "manifest.json").write_text(json.dumps(man))
    r = run_cli("report", str(a), str(b), "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and "model.name: tiny" in r.stderr and "--allow-mismatch" in r.stderr
    r = run_cli("report", str(a), str(b), "--out", str(tmp_path / "r"), "--allow-mismatch")
    assert r.returncode == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "| model | tiny | llama3_8b |" in md and "| dtype |" in md and "different configurations" in md


def test_compare_prints_its_answer_first_and_only_what_differs(runs):
    a, b = runs
    r = run_cli("compare", str(a), str(b))
    lines = r.stdout.splitlines()
    assert lines[0].startswith("compared ") and "regression(s)" in lines[0]
    full = run_cli("compare", str(a), str(b), "--all")
    assert len(full.stdout.splitlines()) > len(lines) + 30  # the SAME points only with --all
