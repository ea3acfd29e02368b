"""pytest-benchmark benchmarks of tierbench's own host-side hot paths (not of the hardware).

Plain `pytest` runs each once as a smoke test (--benchmark-disable in pyproject). To measure and compare with
the saved baseline:
    python -m pytest tests/benchmarks --benchmark-enable --benchmark-storage=file://tests/benchmarks/baselines \
        --benchmark-compare --benchmark-compare-fail=median:25%
Targets live here, never in timed tests: the cache simulator replays 1M requests in under a minute on one core.
"""
import json
import shutil
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench.config import conf_dir
from bench.model.cachesim import Trace, simulate
from bench.model.workload import Workload, generate
from bench.overrides import compose_checked
from bench.store import load

RUNS = Path(__file__).resolve().parent.parent / "data" / "runs"


def agentic():
    return Workload.from_cfg(OmegaConf.load(conf_dir() / "workload" / "agentic_coding.yaml"))


@pytest.fixture(scope="module")
def trace_small():
    return Trace.from_requests(generate(agentic(), 300, 512, seed=0))


def test_cache_simulator(benchmark, trace_small):
    res = benchmark(simulate, trace_small, 512, (4000, 8000, 40000), 4, "session", 0.02)
    assert res.rates()["hit_rate"] > 0.9


def test_cache_simulator_one_million_requests(benchmark, request):
    if request.config.getoption("benchmark_disable") and not request.config.getoption("benchmark_enable"):
        pytest.skip("1M-request replay runs only with --benchmark-enable (it is the speed target itself)")
    reqs = []
    seed = 0
    while len(reqs) < 1_000_000:
        reqs += generate(agentic(), 2000, 512, seed=seed)
        seed += 1
    tr = Trace.from_requests(reqs[:1_000_000])
    res = benchmark.pedantic(simulate, args=(tr, 512, (200000, 400000, 2000000), 1, "round_robin", 0.02),
                             rounds=1, iterations=1)
    assert len(res.miss_tokens) == 1_000_000


def test_model_evaluation(benchmark, tmp_path):
    from bench.model.analyze import analyze
    run = tmp_path / "cpu_a"
    shutil.copytree(RUNS / "cpu_a", run)
    cfg = compose_checked(["fleet.sessions=200"], config_name="analysis")
    res = benchmark(analyze, run, cfg)
    assert res["baseline"]["amdahl_bound"] >= 1


def test_record_loading(benchmark, tmp_path):
    src = (RUNS / "cpu_a" / "records.jsonl").read_text().splitlines()
    run = tmp_path / "big"
    run.mkdir()
    shutil.copy(RUNS / "cpu_a" / "manifest.json", run)
    with open(run / "records.jsonl", "w") as f:
        for i in range(20_000):
            rec = json.loads(src[i % len(src)])
            rec["params"]["i"] = i
            f.write(json.dumps(rec) + "\n")
    df = benchmark(load, run)
    assert len(df) == 20_000


@pytest.mark.parametrize("args, target_s", [(["--help"], 0.3), (["list"], 1.0)])
def test_cli_answers_at_once(benchmark, args, target_s):
    """`bench --help` and `bench list` as a user starts them (a new interpreter each time); the targets (0.3 s and
    1 s on the 2-core CI machine) are the benchmark's, compared with --benchmark-compare, never asserted."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    def start():
        return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, capture_output=True, text=True)

    benchmark.extra_info["target_s"] = target_s
    r = benchmark.pedantic(start, rounds=3, iterations=1)
    assert r.returncode == 0 and r.stdout


def test_listing_needs_no_torch():
    """What `bench list` shows comes from the benchmarks' source without importing torch, and is exactly what the
    registry holds once they are imported."""
    import subprocess
    import sys

    from bench.registry import catalog, load_all
    from tests.conftest import ROOT

    code = "import sys, bench.cli as c; c.main(['list']); print('torch' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True).stdout
    assert out.strip().endswith("False False"), out[-200:]
    cat = {b["name"]: (b["family"], b["description"]) for b in catalog()}
    reg = {b.name: (b.family, b.description) for b in load_all().values()}
    assert cat == reg
