import json
import shutil
import sys
from pathlib import Path

import pytest

from bench.compare import compare
from bench.errors import UserError
from bench.store import read_records
from tests.conftest import ROOT, run_cli

RUNS = ROOT / "tests" / "data" / "runs"


@pytest.fixture
def runs(tmp_path):
    a, b = tmp_path / "cpu_a", tmp_path / "cpu_b"
    shutil.copytree(RUNS / "cpu_a", a)
    shutil.copytree(RUNS / "cpu_b", b)
    return a, b


def _rewrite(run: Path, fn):
    recs = read_records(run / "records.jsonl")
    out = [r for r in (fn(r) for r in recs) if r is not None]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


def test_two_recorded_runs_align_point_by_point(runs):
    a, b = runs
    res = compare([a, b])
    n = len(read_records(a / "records.jsonl"))
    assert len(res["points"]) == n and not res["one_sided"]
    labels = {lab for p in res["points"] for lab in p.get("labels", [])}
    assert labels <= {"SAME", "FASTER", "SLOWER", "REGRESSION"}
    gemm = [p for p in res["points"] if p["benchmark"] == "gemm"][0]
    assert gemm["metric"] == "tflops" and gemm["ratios"][0] == pytest.approx(gemm["values"][1] / gemm["values"][0])


def test_regression_beyond_noise_is_flagged_and_fails_ci(runs):
    a, b = runs

    def halve(r):
        if r["benchmark"] == "d2d_copy" and r["status"] == "ok":
            r["metrics"]["gbps"] /= 2
            r["metrics"]["noise"] = 0.01
        return r

    _rewrite(b, halve)
    res = compare([a, b])
    bad = [p for p in res["points"] if p["benchmark"] == "d2d_copy"]
    assert bad and all(p["labels"] == ["REGRESSION"] for p in bad)
    r = run_cli("compare", str(a), str(b), "--fail-on-regression")
    assert r.returncode == 1 and "REGRESSION" in r.stdout
    assert run_cli("compare", str(a), str(b)).returncode == 0


def test_difference_inside_noise_is_not_a_change(runs):
    a, b = runs
    base = {r["params"]["n"]: r["metrics"]["tflops"] for r in read_records(a / "records.jsonl")
            if r["benchmark"] == "gemm"}

    def set_gemm(scale, noise):
        def fn(r):
            if r["benchmark"] == "gemm":
                r["metrics"]["tflops"] = base[r["params"]["n"]] * scale
                r["metrics"]["noise"] = noise
            return r
        return fn

    _rewrite(a, set_gemm(1.0, 0.01))
    _rewrite(b, set_gemm(0.97, 0.05))  # 3% slower, 5% noise: SAME
    assert all(p["labels"] == ["SAME"] for p in compare([a, b])["points"] if p["benchmark"] == "gemm")
    _rewrite(b, set_gemm(0.97, 0.01))  # 3% slower, 1% noise (2% floor): SLOWER, not yet a regression
    assert all(p["labels"] == ["SLOWER"] for p in compare([a, b])["points"] if p["benchmark"] == "gemm")


def test_one_sided_points_are_listed_never_dropped(runs):
    a, b = runs
    _rewrite(b, lambda r: None if r["benchmark"] == "gemm" else r)
    res = compare([a, b])
    gemm_a = [r for r in read_records(a / "records.jsonl") if r["benchmark"] == "gemm"]
    assert len([o for o in res["one_sided"] if o["point"].startswith("gemm ")]) == len(gemm_a) > 0
    out = run_cli("compare", str(a), str(b)).stdout
    assert "only in cpu_a: gemm" in out


def test_mismatched_configuration_is_refused_unless_allowed(runs):
    a, b = runs
    man = json.loads((b / "manifest.json").read_text())
    man["config"]["model"]["name"] = "llama3_8b"
    (b / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UserError, match="model.name: tiny .* vs llama3_8b"):
        compare([a, b])
    r = run_cli("compare", str(a), str(b))
    assert r.returncode == 2 and "--allow-mismatch" in r.stderr and "Traceback" not in r.stderr
    assert compare([a, b], allow_mismatch=True)["mismatches"]


def test_different_hardware_is_shown_side_by_side(runs):
    a, b = runs
    man = json.loads((b / "manifest.json").read_text())
    man["hardware"]["gpu"] = {"name": "NVIDIA H200", "memory_bytes": 150 * 2**30}
    (b / "manifest.json").write_text(json.dumps(man))
    res = compare([a, b])
    assert "gpu" in res["fingerprint_differs"] and res["fingerprint"]["gpu"] == [None, "NVIDIA H200"]


def test_report_produces_the_expected_images(runs, tmp_path):
    a, b = runs
    assert run_cli("model", str(a), "fleet.sessions=50").returncode == 0
    out = tmp_path / "rep"
    r = run_cli("report", str(a), str(b), "--out", str(out))
    assert r.returncode == 0, r.stderr
    imgs = {p.name for p in (out / "img").glob("*.png")}
    assert {"bandwidth_vs_size.png", "paged_methods.png", "storage_vs_queue_depth.png", "roofline.png",
            "speedup_vs_hit_rate_agentic_coding.png"} <= imgs
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(imgs)  # self-contained
    assert "Hardware fingerprint" in html and "AMD" in html or "cpu" in html
    md = (out / "report.md").read_text()
    assert "![" in md and "Verdict" in md


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    import subprocess
    a, _ = runs
    out = tmp_path / "rep"
    assert run_cli("report", str(a), "--out", str(out)).returncode == 0
    png = tmp_path / "shot.png"
    subprocess.run(["bash", str(ROOT / "scripts" / "render_report.sh"), str(out / "report.html"), str(png)],
                   check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000  # plots drawn, not a blank page


def test_slurm_launcher_without_plugin_is_a_clear_error(monkeypatch):
    from bench.overrides import check_launcher
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    with pytest.raises(UserError, match=r"pip install -e '.\[slurm\]'"):
        check_launcher(["hydra/launcher=slurm"])
    with pytest.raises(UserError, match="unknown hydra/launcher 'pbs'"):
        check_launcher(["hydra/launcher=pbs"])


def test_runs_from_different_nodes_never_share_a_directory_and_merge(tmp_path, monkeypatch):
    from bench.config import _host_tag
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert _host_tag().endswith("-j77-t3")
    for node in ("n1", "n2"):
        shutil.copytree(RUNS / "cpu_a", tmp_path / f"2026-{node}")
    r = __import__("subprocess").run([sys.executable, str(ROOT / "scripts" / "merge_results.py"), str(tmp_path),
                                      str(tmp_path / "all.csv")], capture_output=True, text=True,
                                     env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    import pandas as pd
    df = pd.read_csv(tmp_path / "all.csv")
    assert df["run_dir"].nunique() == 2 and len(df) == 2 * len(read_records(RUNS / "cpu_a" / "records.jsonl"))
