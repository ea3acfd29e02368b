"""A real single-node SLURM (Debian's slurm-wlm + munge, started by scripts/slurm_local.sh): a submitit sweep, an
sbatch array, scancel, a time limit, a job that fails before its first point, and the pre-submit check.

Skipped, with the reason, where the cluster cannot be installed or started (not root, no apt, no packages).
Accounting is off (no slurmdbd): submitit asks sacct for job states, so $SLURM_LAB/bin/sacct (first on PATH)
answers from slurmctld's own job table (squeue -t all) when the real sacct says accounting is disabled.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT

LAB = Path(os.environ.get("SLURM_LAB", "/tmp/slurm-lab"))
FAST = ["benchmark=ceilings", "only=[gemm]", "run.analyze=false", "harness.progress=false"]
pytestmark = pytest.mark.slurm


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("a local SLURM needs root (munged, slurmctld, slurmd)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no apt-get to install slurm-wlm and munge, and SLURM is not installed")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed")
    p = subprocess.run(["bash", str(ROOT / "scripts" / "slurm_local.sh"), "start"], capture_output=True, text=True,
                       timeout=600)
    if p.returncode != 0:
        pytest.skip(f"local SLURM did not start: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    env = dict(os.environ, PATH=f"{LAB / 'bin'}:{os.environ['PATH']}")
    return env


def bench(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=ROOT)


def _sweep_dir(out: str) -> Path:
    line = next(x for x in out.splitlines() if x.startswith("sweep directory: "))
    return Path(line.split(": ", 1)[1].split(" (", 1)[0])


def _man(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _records(d: Path) -> list:
    f = d / "records.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_sweep_lands_where_the_console_says(cluster, tmp_path):
    """A 2-job sweep on the CPU preset: both jobs write <printed dir>/job<N>, the submitter lists them."""
    p = bench(cluster, "run", "-m", "hydra/launcher=slurm_cpu", "run.notes=a,b", *FAST, f"run.root={tmp_path}")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    sweep = _sweep_dir(p.stdout)
    assert sweep.parent == tmp_path
    for n in (0, 1):
        d = sweep / f"job{n}"
        assert _man(d)["status"] == "complete" and len(_records(d)) == 2
        assert _man(d)["slurm"]["id"].endswith(f"_{n}") and _man(d)["slurm"]["partition"] == "debug"
        assert re.search(rf"job{n} \(SLURM \d+_{n}\): complete, 2 record\(s\)", p.stdout), p.stdout
    assert [x.name for x in tmp_path.iterdir()] == [sweep.name]  # nothing written elsewhere
    assert "merge:   python scripts/merge_results.py" in p.stdout and "python -m bench compare" in p.stdout
    jobid = _man(sweep / "job0")["slurm"]["job_id"]
    show = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True, env=cluster).stdout
    assert "OverSubscribe=NO" in show  # --exclusive
    st = bench(cluster, "status", str(sweep))
    assert st.returncode == 0 and re.search(r"job1 \(SLURM \d+_1\): complete", st.stdout)
    m = subprocess.run([sys.executable, "scripts/merge_results.py", str(sweep), str(tmp_path / "m.parquet")],
                       capture_output=True, text=True, cwd=ROOT, env=cluster)
    assert m.returncode == 0, m.stderr
    import pandas as pd

    df = pd.read_parquet(tmp_path / "m.parquet")
    assert set(df["run_status"]) == {"complete"} and df["slurm_job_id"].str.contains("_").all()


def test_presubmit_check_refuses_what_the_partition_cannot_run(cluster, tmp_path):
    p = bench(cluster, "run", "-m", "hydra/launcher=slurm", "run.notes=a,b", f"run.root={tmp_path}")
    assert p.returncode == 2 and "hydra.launcher.gpus_per_node=1 is not allowed" in p.stderr
    assert "slurm_cpu" in p.stderr and "Traceback" not in p.stderr
    p = bench(cluster, "run", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=100000", "run.notes=a",
              f"run.root={tmp_path}")
    assert p.returncode == 2 and "hydra.launcher.mem_gb=100000 is not allowed" in p.stderr
    assert not list(tmp_path.iterdir())  # nothing submitted, nothing written


def test_job_failing_before_its_first_point_says_so(cluster, tmp_path):
    """The jobs' node lacks storage.path (their setup removes it before python starts: a path that exists on the
    login node only): each job leaves a manifest that says failed and why; the submitter lists them, exit 1."""
    node_local = tmp_path / "nvme"
    node_local.mkdir()
    p = bench(cluster, "run", "-m", "hydra/launcher=slurm_cpu", f"hydra.launcher.setup=[\"rm -rf {node_local}\"]",
              f"storage.path={node_local}", "run.notes=x,y", "benchmark=storage", "only=[file_read]",
              "run.analyze=false", "harness.progress=false", f"run.root={tmp_path}")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    sweep = _sweep_dir(p.stdout)
    for n in range(2):
        m = _man(sweep / f"job{n}")
        assert m["status"] == "failed" and m.get("before_first_point"), m
        assert "storage.path" in m["error"] and m["slurm"]["id"].endswith(f"_{n}")
        assert f"job{n}" in p.stdout
    assert "before its first point" in p.stdout and "Traceback" not in p.stdout + p.stderr
    m = subprocess.run([sys.executable, "scripts/merge_results.py", str(sweep), str(tmp_path / "m.csv")],
                       capture_output=True, text=True, cwd=ROOT, env=cluster)
    assert m.returncode == 2 and "no records" in m.stdout + m.stderr and "Traceback" not in m.stderr


def test_submitit_time_limit_stops_the_run_cleanly(cluster, tmp_path):
    """submitit asks SLURM for SIGUSR2 signal_delay_s before the limit: the run stops there, its manifest says
    interrupted (not complete), the points measured are kept, none is a fake skipped point. (slurmctld checks time
    limits every 30 s and signals up to that much early: 10 s before a 1 min limit arrives 20-50 s in.)"""
    p = bench(cluster, "run", "-m", "hydra/launcher=slurm_cpu", "hydra.launcher.timeout_min=1",
              "hydra.launcher.signal_delay_s=10", "run.notes=t", "benchmark=[ceilings,transfer]",
              "run.analyze=false", "harness.progress=false", "harness.warmup_s=4", f"run.root={tmp_path}",
              timeout=200)
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]
    d = _sweep_dir(p.stdout) / "job0"
    m = _man(d)
    assert m["status"] == "interrupted" and "SIGUSR2" in m["reason"], m
    recs = _records(d)
    assert recs and all(r["status"] == "ok" for r in recs)
    assert "job0" in p.stdout and "interrupted" in p.stdout


def test_sbatch_array_runs_exclusive_and_scancel_stops_cleanly(cluster, tmp_path):
    """sbatch array through scripts/sbatch_example.sh (arguments forwarded to bench run): each task's run id carries
    <array job>_<task>, the tasks run exclusive; task 0 is scancelled after its first point: manifest interrupted
    (SIGTERM), its points kept, no fake skipped point. (The time limit is the submitit test's.)"""
    env = dict(cluster, TIERBENCH_ROOT=str(tmp_path), TIERBENCH_SRC=str(ROOT))
    sub = subprocess.run(["sbatch", "--parsable", "--array=0-1", "--partition=debug", "--gpus-per-node=0",
                          "--cpus-per-task=1", "--mem=2G", "--time=5", f"--output={tmp_path}/%A_%a.out",
                          str(ROOT / "scripts" / "sbatch_example.sh"), "harness.device=cpu", "model=tiny",
                          "suite=quick", "benchmark=ceilings", "run.analyze=false", "harness.warmup_s=4"],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    assert sub.returncode == 0, sub.stderr
    arr = sub.stdout.strip().split(";")[0]
    t0 = time.time()

    def run_of(task):
        found = [d for d in tmp_path.glob(f"*-j{arr}_{task}") if (d / "manifest.json").exists()]
        return found[0] if found else None

    show = ""
    while time.time() - t0 < 120:  # task 0: cancel once its first point is recorded
        d = run_of(0)
        if not show:
            show = subprocess.run(["scontrol", "show", "job", f"{arr}_0"], capture_output=True, text=True,
                                  env=env).stdout
        if d is not None and _records(d):
            subprocess.run(["scancel", f"{arr}_0"], env=env, check=True)
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"task 0 recorded no point in 120 s: {list(tmp_path.iterdir())}")
    assert "OverSubscribe=NO" in show  # #SBATCH --exclusive
    while time.time() - t0 < 170:
        q = subprocess.run(["squeue", "-h", "-j", arr], capture_output=True, text=True, env=env).stdout.strip()
        if not q:
            break
        time.sleep(1)
    m0, m1 = _man(run_of(0)), _man(run_of(1))
    assert m0["status"] == "interrupted" and "SIGTERM" in m0["reason"], m0
    assert m1["status"] == "complete", m1
    for task, m in ((0, m0), (1, m1)):
        assert m["slurm"]["id"] == f"{arr}_{task}" and m["slurm"]["array_task_id"] == str(task)
        recs = _records(run_of(task))
        assert recs and all(r["status"] == "ok" for r in recs), recs  # no fake skipped point
    st = bench(env, "status", str(tmp_path))
    assert st.returncode == 1 and f"j{arr}_0 (SLURM {arr}_0): interrupted (SIGTERM" in st.stdout, st.stdout
    assert f"(SLURM {arr}_1): complete" in st.stdout


def test_handoff_pair_runs_as_two_srun_tasks(cluster, tmp_path):
    """benchmark=handoff as two SLURM tasks (scripts/handoff_srun.sh under srun --ntasks=2: two nodes on a cluster,
    one here): task 0 runs, times and records, task 1 is the peer; they meet through a file in a shared directory,
    which is gone after the run."""
    from bench.benchmarks.handoff.wire import nixl_api

    try:
        nixl_api()
    except ImportError as e:
        pytest.skip(str(e))
    env = dict(cluster, TIERBENCH_RENDEZVOUS=str(tmp_path), TIERBENCH_ROOT=str(tmp_path / "res"),
               TIERBENCH_SRC=str(ROOT))
    p = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--mem-per-cpu=1G", "--time=5", "--wait=30",
                        str(ROOT / "scripts" / "handoff_srun.sh"), "harness.device=cpu", "model=tiny", "suite=quick",
                        "only=[handoff_request,handoff_fit]", "handoff.ops=[read]", "handoff.block_tokens=[16,64,256]",
                        "handoff.context_tokens=[1024,4096]", "harness.time_budget_s=0.05", "run.analyze=false"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    (run,) = (tmp_path / "res").iterdir()
    assert re.search(r"-j\d+-t0$", run.name) and _man(run)["slurm"]["job_id"]
    recs = _records(run)
    assert [r["benchmark"] for r in recs] == ["handoff_request"] * 6 + ["handoff_fit"]
    assert all(r["status"] == "ok" and r["verified"] is not False for r in recs), [r["reason"] for r in recs]
    for r in recs[:6]:
        assert r["info"]["peer"].startswith("rendezvous ") and r["info"]["peer_host"] == r["info"]["local_host"]
    assert recs[-1]["metrics"]["us_per_descriptor"] > 0
    assert not list(tmp_path.glob(".tierbench-handoff-*"))


# -- no cluster needed ------------------------------------------------------------------------------------------
def test_sinfo_parsing_and_request_check():
    from bench.core.errors import UserError
    from bench.commands.slurm import check_request, parse_gpus, parse_time_min

    assert parse_time_min("infinite") is None and parse_time_min("1-02:03:00") == 1440 + 123
    assert parse_time_min("30:00") == 30 and parse_time_min("45") == 45
    assert parse_gpus("(null)") == 0 and parse_gpus("gpu:h100:8(S:0-1)") == 8 and parse_gpus("gpu:a:2,gpu:b:2") == 4
    nodes = [{"node": "n1", "cpus": 64, "mem_mb": 512000, "gpus": 8, "time_min": 2880},
             {"node": "n2", "cpus": 128, "mem_mb": 256000, "gpus": 0, "time_min": 2880}]
    ok = {"cpus_per_task": 16, "tasks_per_node": 1, "mem_gb": 96, "gpus_per_node": 1, "timeout_min": 120}
    check_request(ok, "gpu", nodes)
    for bad, msg in ((dict(ok, gpus_per_node=9), "hydra.launcher.gpus_per_node=9 is not allowed"),
                     (dict(ok, mem_gb=1000), "hydra.launcher.mem_gb=1000 is not allowed"),
                     (dict(ok, timeout_min=5000), "hydra.launcher.timeout_min=5000 is not allowed"),
                     (dict(ok, cpus_per_task=100), "fits no single node")):  # 100 CPUs only on the GPU-less node
        with pytest.raises(UserError, match=msg):
            check_request(bad, "gpu", nodes)


def test_slurm_launcher_needs_a_sweep(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "run", "hydra/launcher=slurm_cpu", f"run.root={tmp_path}"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2 and "add -m" in p.stderr and not list(tmp_path.iterdir())
