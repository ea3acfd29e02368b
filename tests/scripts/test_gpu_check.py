"""The GPU check procedure (scripts/gpu_check.sh) as the GPU machine runs it, rehearsed on this machine: both device
commands from a copy of the tree that is only on PYTHONPATH, each into a fresh empty OUT, what would come back held
to the device's limits, the verdict landed and compared against itself, and the summary of CPU stand-ins failing
with "no GPU figure" for each. Plus the pieces that judge: the outbox limits, the figure verdicts, the landing's
target name."""
import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import gpu_check as G  # noqa: E402


def test_rehearsal_runs_both_device_commands_lands_and_fails_the_summary_without_gpu():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "rehearse", "--fast"], capture_output=True,
                       text=True, timeout=900, cwd=ROOT)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "outbox" in out and "within limits" in out and "landed:" in out
    assert out.count("within limits") == 2  # both commands' OUT
    assert "no GPU figure at all" in out


def test_outbox_refuses_what_the_device_would_not_send_back(tmp_path):
    for i in range(9):
        (tmp_path / f"f{i}.txt").write_text("x")
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.txt").write_text("x")
    (tmp_path / "odd name.txt").write_text("x")
    assert G.outbox(tmp_path) == 1
    ok = tmp_path / "ok"
    (ok / "a" / "b").mkdir(parents=True)
    (ok / "a" / "b" / "fine.log").write_text("x")
    assert G.outbox(ok) == 0


@pytest.mark.parametrize("row, verdict", [
    ({"device": "cpu", "suite": 1.0, "raw": 1.0}, "no GPU figure"),
    ({"device": "cuda", "suite": None, "raw": 1.0, "suite_status": "skipped", "suite_reason": "x"}, "missing"),
    ({"device": "cuda", "suite": 1.0, "raw": None, "raw_kernel": "raw reference failed"}, "raw reference missing"),
    ({"device": "cuda", "suite": 60.0, "raw": 60.0, "peak": 50.0, "unit": "GB/s"}, "above the physical peak"),
    ({"device": "cuda", "suite": 1.06, "raw": 1.0, "unit": "GB/s"}, "+6.0% off"),
    ({"device": "cuda", "suite": 1.04, "raw": 1.0, "unit": "GB/s", "peak": 2.0}, ""),
])
def test_each_figure_is_judged_against_its_raw_reference_and_peak(row, verdict):
    got = G.judge(row, 0.05)
    assert (verdict in got) if verdict else got == ""


def test_summary_fails_on_nothing_measured(tmp_path, capsys):
    assert G.summary(tmp_path, 0.05) == 1
    assert capsys.readouterr().out.count("missing: no figure measured") == len(G.FIGURES)


def test_summary_passes_only_when_every_figure_holds(tmp_path, capsys):
    rows = [{"figure": f.name, "unit": f.unit, "device": "cuda", "suite": 10.0, "raw": 10.1} for f in G.FIGURES]
    (tmp_path / "figures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert G.summary(tmp_path, 0.05) == 0
    rows[0]["suite"] = 12.0
    (tmp_path / "figures.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert G.summary(tmp_path, 0.05) == 1


@pytest.mark.parametrize("gpu, device, target", [
    ("NVIDIA H200", "cuda", "h200_141gb"), ("NVIDIA H100 80GB HBM3", "cuda", "h100_80gb"),
    ("NVIDIA GH200 480GB", "cuda", "gh200_96gb"), ("NVIDIA L40S", "cuda", "nvidia_l40s"), (None, "cpu", "cpu"),
])
def test_a_landed_run_is_filed_under_its_gpus_target(gpu, device, target):
    assert G.target_of({"device": device, "hardware": {"gpu": {"name": gpu} if gpu else None}}) == target


def test_the_verdict_step_plans_within_310_s_on_an_h200():
    """Issue 33's bound, 270 s, plus issue 38's handoff points (40 s budget): the verdict step's points, KvikIO's
    and NIXL's included (installed there from carried wheels, not here), <= 310 s; with start-up and packing the
    command stays near 6 minutes, leaving a retry within the session's 15."""
    sh = (ROOT / "scripts" / "gpu_check.sh").read_text()
    block = sh.split("VERDICT_OVERRIDES=(", 1)[1].split(")\n", 1)[0]
    overrides = [w.strip("'") for w in block.split()]
    r = subprocess.run([sys.executable, "-m", "bench", "run", "--plan", "--json", "plan.gpu=h200_141gb", *overrides],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    plan = json.loads(r.stdout)
    assert plan["total_s"] <= 310, plan["total_s"]
    for bench in ("gpu_file_read_kvikio", "handoff_request"):  # planned as the GPU machine will run them
        pts = [p for p in plan["points"] if p["benchmark"] == bench]
        assert pts and all(p["status"] == "run" for p in pts), bench
    assert all("memory=vram" in p["params"] for p in plan["points"] if p["benchmark"] == "handoff_request")
