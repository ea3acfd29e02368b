import json
import shutil
import sys
from pathlib import Path

import pytest

from bench.report.compare import compare
from bench.core.errors import UserError
from bench.core.store import read_records
from tests.helpers import ROOT, RUNS, run_cli


def _rewrite(run: Path, fn):
    recs = read_records(run / "records.jsonl")
    out = [r for r in (fn(r) for r in recs) if r is not None]
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in out))


def test_two_recorded_runs_align_point_by_point(runs):
    a, b = runs
    res = compare([a, b])
    n = len(read_records(a / "records.jsonl"))
    assert len(res["points"]) + res["both_skipped"] == n and not res["one_sided"]
    labels = {lab for p in res["points"] for lab in p.get("labels", [])}
    assert labels <= {"SAME", "FASTER", "SLOWER", "REGRESSION", "EXCLUDED"}
    gemm = [p for p in res["points"] if p["benchmark"] == "gemm"][0]
    assert gemm["metric"] == "tflops" and gemm["ratios"][0] == pytest.approx(gemm["values"][1] / gemm["values"][0])


def _scaled(rec, f):
    """The record as if every call took ``f`` times as long: times x f, rates / f."""
    m = rec["metrics"]
    for k in list(m):
        v = m[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if k.endswith("_s") and k not in ("wall_s",):
            m[k] = v * f
        elif k in ("gbps", "tflops", "tokens_per_s", "gbps_best") or k.endswith("_per_s"):
            m[k] = v / f
    return rec


def _replica(a, b, seed, slow=()):
    """Run b = run a's samples again with realistic run-to-run noise: every point 3% (log-normal) and every family
    1% together; the points in ``slow`` 20% slower on top."""
    import numpy as np

    rng = np.random.default_rng(seed)
    fam = {}

    def fn(r):
        if r["status"] != "ok":
            return r
        f = float(np.exp(rng.normal(0, 0.03)))
        f *= fam.setdefault(r["family"], float(np.exp(rng.normal(0, 0.01))))
        if (r["benchmark"], json.dumps(r["params"], sort_keys=True)) in slow:
            f *= 1.25  # throughput down 20%
        return _scaled(r, f)

    shutil.rmtree(b)
    shutil.copytree(a, b)
    _rewrite(b, fn)


def _tight(a, k):
    """k ok points of run a whose [min, p90] spread is within 4% (so a 20% slowdown is beyond their own noise)."""
    pts = [(r["benchmark"], json.dumps(r["params"], sort_keys=True)) for r in read_records(a / "records.jsonl")
           if r["status"] == "ok" and r["metrics"].get("p90_s") and
           r["metrics"]["p90_s"] / r["metrics"]["min_s"] < 1.04]
    assert len(pts) >= k
    return set(pts[:k])


def test_identical_runs_with_run_to_run_noise_compare_as_same(runs):
    """The same recorded samples plus realistic run-to-run noise: no point is FASTER, SLOWER or a REGRESSION, the
    gate passes, and skipped-everywhere points are counted, not listed."""
    a, b = runs
    for seed in range(5):
        _replica(a, b, seed)
        res = compare([a, b])
        bad = [(p["benchmark"], p["params"], p["labels"]) for p in res["points"]
               if set(p.get("labels", [])) - {"SAME", "EXCLUDED"}]
        assert not bad and res["regressions"] == 0, (seed, bad)
    r = run_cli("compare", str(a), str(b), "--fail-on-regression")
    assert r.returncode == 0 and "0 regression(s)" in r.stdout
    assert "4 skipped on every side" in r.stdout  # counted, not listed
    skipped_both = [x for x in read_records(a / "records.jsonl") if x["status"] == "skipped"]
    assert skipped_both and not [p for p in compare([a, b])["points"] if p.get("label") == "STATUS"]
    for x in skipped_both:  # not a row of the table
        assert f"{x['benchmark']} " not in r.stdout or x["benchmark"] in {p["benchmark"] for p in res["points"]}


def test_a_real_20_percent_slowdown_is_a_regression(runs):
    a, b = runs
    slow = _tight(a, 3)
    for seed in range(5):
        _replica(a, b, seed, slow)
        res = compare([a, b])
        for p in res["points"]:
            key = (p["benchmark"], json.dumps(p["params"], sort_keys=True))
            if key in slow:
                assert p["labels"] == ["REGRESSION"], (seed, key, p["ratios"], p.get("tolerance"))
            else:
                assert p.get("labels", ["SAME"])[0] in ("SAME", "EXCLUDED"), (seed, key, p["labels"], p["ratios"])
    r = run_cli("compare", str(a), str(b), "--fail-on-regression")
    assert r.returncode == 1 and "REGRESSION" in r.stdout and "3 regression(s)" in r.stdout
    assert "size_bytes=" in r.stdout or "n=" in r.stdout  # params as key=value


def test_overlapping_ranges_are_same_and_small_changes_not_regressions(runs):
    a, b = runs
    key = sorted(_tight(a, 1))[0]
    _replica(a, b, 0)

    def move(f, spread):
        def fn(r):
            if (r["benchmark"], json.dumps(r["params"], sort_keys=True)) == key:
                m = r["metrics"]
                base = [x for x in read_records(a / "records.jsonl") if x["benchmark"] == r["benchmark"] and
                        x["params"] == r["params"]][0]["metrics"]
                for k in ("median_s", "min_s", "p90_s"):
                    m[k] = base["median_s"] * f
                m["min_s"], m["p90_s"] = m["median_s"] * (1 - spread), m["median_s"] * (1 + spread)
                _, v, higher = headline(r)
                name = headline(r)[0]
                m[name] = (headline({"metrics": base})[1] / f) if higher else base[name] * f
            return r
        return fn

    from bench.report.compare import headline

    _rewrite(b, move(1.03, 0.10))  # 3% slower inside a +-10% range: SAME
    assert [p["labels"] for p in compare([a, b])["points"] if p["benchmark"] == key[0] and
            json.dumps(p["params"], sort_keys=True) == key[1]] == [["SAME"]]


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
    for run in (a, b):
        assert run_cli("model", str(run), "plots=false", "fleet.sessions=50").returncode == 0  # the report plots
    out = tmp_path / "rep"
    r = run_cli("report", str(a), str(b), "--out", str(out))
    assert r.returncode == 0, r.stderr
    imgs = {p.name for p in (out / "img").glob("*.png")}
    assert {"bandwidth_vs_size.png", "paged_methods.png", "storage_vs_queue_depth.png", "roofline.png"} <= imgs
    speedups = sorted(i for i in imgs if i.startswith("speedup_vs_hit_rate_"))
    assert len(speedups) == 2 and "cpu_a" in speedups[0] and "cpu_b" in speedups[1]  # one per run, never shared
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(imgs)  # self-contained
    assert "Hardware fingerprint" in html and "cpu" in html
    table = html[html.index("<table>"):html.index("</table>")]
    assert "None" not in table and "CPU cores" in table  # a CPU run shows what it has, no rows of None
    assert "cpu_a: tiny" in html and "cpu_b: tiny" in html and "Caveats (" in html  # each run's verdict, reasons
    top = html[:html.index("<h2>Plots</h2>")]  # the answer before anything else: outcome, number, interval, why
    assert top.count('class="answer"') == 2 and 'class="number"' in top and "interval) vs the 2x claim" in top
    assert html.index("<h2>Plots</h2>") < html.index("Hardware fingerprint") and "Points: {" not in html
    assert html.count("Caveats (") == 2  # once per verdict, never repeated as warnings
    md = (out / "report.md").read_text()
    assert "![" in md and "Verdict" in md and "- caveat:" in md


def test_every_plot_keeps_runs_apart(runs, monkeypatch, tmp_path):
    """Two runs plotted together: every series of every plot belongs to one run (its label names it), no colour
    is shared by two series of a panel."""
    import matplotlib.colors as mcolors

    import importlib

    from bench.benchmarks import load_families
    from bench.core.store import load
    from bench.report.html import plots

    a, b = runs
    df = load(a, b)
    figs = []
    keep = lambda fig, path: figs.append(fig) or str(path)  # noqa: E731
    monkeypatch.setattr(importlib.import_module("bench.report.plotkit"), "save", keep)  # two_panels saves there
    for f in load_families():
        if f.plots:
            monkeypatch.setattr(importlib.import_module(f"{f.package}.plots"), "save", keep, raising=False)
    fns = {name: fn for name, _, fn in plots()}
    for name in ("bandwidth_vs_size", "paged_methods", "storage_vs_queue_depth", "roofline"):
        assert fns[name](df, tmp_path / "x.png")
    # the recorded runs have no interference family: give run b's copy of a CPU interference record set
    recs = [json.loads(x) for x in (ROOT / "tests" / "data" / "interference_cpu.jsonl").read_text().splitlines()] \
        if (ROOT / "tests" / "data" / "interference_cpu.jsonl").exists() else []
    if recs:
        import pandas as pd

        rows = []
        for run in ("cpu_a", "cpu_b"):
            for r in recs:
                row = {"run_id": run, "run_dir": run, "benchmark": r["benchmark"], "status": r["status"],
                       "device": "cpu", "gpu_name": None}
                row.update({f"param.{k}": v for k, v in r["params"].items()})
                row.update({f"metric.{k}": v for k, v in r["metrics"].items()})
                rows.append(row)
        assert fns["interference"](pd.DataFrame(rows), tmp_path / "i.png")
    for fig in figs:
        for ax in fig.axes:
            lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
            points = [c for c in ax.collections if not c.get_label().startswith("_")]
            series = [x for x in lines + points if "roofline" not in x.get_label() and "contiguous" not in
                      x.get_label()]
            for x in series:
                assert ("cpu_a" in x.get_label()) != ("cpu_b" in x.get_label()), x.get_label()
            cols = [mcolors.to_hex(x.get_color() if hasattr(x, "get_color") and not hasattr(x, "get_facecolor")
                                   else x.get_facecolor()[0]) + str(getattr(x, "get_linestyle", lambda: "")())
                    for x in series]
            assert len(cols) == len(set(cols)), [x.get_label() for x in series]


def test_report_renders_in_headless_chromium(runs, tmp_path):
    import subprocess

    from tests.helpers import system_tool

    system_tool("chromium", "chromium")
    a, _ = runs
    out = tmp_path / "rep"
    assert run_cli("report", str(a), "--out", str(out)).returncode == 0
    png = tmp_path / "shot.png"
    subprocess.run(["bash", str(ROOT / "scripts" / "render_report.sh"), str(out / "report.html"), str(png)],
                   check=True, capture_output=True, timeout=120)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000  # plots drawn, not a blank page


def test_slurm_launcher_without_plugin_is_a_clear_error(monkeypatch):
    from bench.commands.overrides import check_launcher
    monkeypatch.setitem(sys.modules, "hydra_plugins.hydra_submitit_launcher", None)
    with pytest.raises(UserError, match=r"pip install -e '.\[slurm\]'"):
        check_launcher(["hydra/launcher=slurm"])
    with pytest.raises(UserError, match="unknown hydra/launcher 'pbs'"):
        check_launcher(["hydra/launcher=pbs"])


def test_runs_from_different_nodes_never_share_a_directory_and_merge(tmp_path, monkeypatch):
    from bench.core.config import _host_tag
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert _host_tag().endswith("-j77-t3")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "11")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "1")
    assert _host_tag().endswith("-j11_1")  # the array task as sacct names it, not the raw job id
    for node in ("n1", "n2"):
        shutil.copytree(RUNS / "cpu_a", tmp_path / f"2026-{node}")
    r = __import__("subprocess").run([sys.executable, str(ROOT / "scripts" / "merge_results.py"), str(tmp_path),
                                      str(tmp_path / "all.csv")], capture_output=True, text=True,
                                     env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    import pandas as pd
    df = pd.read_csv(tmp_path / "all.csv")
    assert df["run_dir"].nunique() == 2 and len(df) == 2 * len(read_records(RUNS / "cpu_a" / "records.jsonl"))


def test_a_figure_above_the_physical_peak_is_flagged_and_never_judges_its_neighbours(runs, tmp_path):
    """An edited record (gbps=1e30) is above what any memory system moves: compare excludes it, naming the peak,
    and its sound neighbours are judged as before (never 'under 10% of 1e30'); the model and the report leave it
    out."""
    a, b = runs
    shutil.rmtree(b)
    shutil.copytree(a, b)
    recs = read_records(b / "records.jsonl")
    sweep = sorted((r for r in recs if r["benchmark"] == "h2d_pinned" and r["status"] == "ok"),
                   key=lambda r: r["params"]["size_bytes"])
    sweep[0]["metrics"]["gbps"] = 1e30  # the smallest size: every larger one would fall "under 10%" of it
    (b / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    res = compare([a, b])
    byp = {p["point"]: p for p in res["points"] if p.get("labels")}
    from bench.core.store import point_key

    bad, after = byp[point_key(sweep[0])], byp[point_key(sweep[1])]
    assert bad["labels"] == ["EXCLUDED"] and "above the physical peak" in bad["excluded"][0]
    assert "2 TB/s" in bad["excluded"][0] and "FASTER" not in bad["labels"]
    assert after["labels"] == ["SAME"] and not after["excluded"][0]  # its neighbour: judged, not excluded
    r = run_cli("compare", str(a), str(b))
    assert r.returncode == 0 and "above the physical peak" in r.stdout and "e+29" not in r.stdout
    r = run_cli("model", str(b), "plots=false", "fleet.sessions=40", "verdict.bootstrap=20", f"out={tmp_path / 'm'}")
    assert r.returncode == 0, r.stderr[-1500:]
    res = json.loads((tmp_path / "m" / "model.json").read_text())
    assert any("above the physical peak left out of every fit" in w for w in res["warnings"])
