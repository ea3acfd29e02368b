import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "tests" / "data" / "runs"  # two recorded CPU runs (cpu_a, cpu_b) of the same points


def run_cli(*args, cwd=None, timeout=300, env=None):
    """Run `python -m bench ...` as a user would; returns CompletedProcess with text output."""
    e = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=timeout, env=e)


def system_tool(cmd: str, package: str) -> str:
    """The path of a system tool the tests use for real (chromium, fio): installed with apt-get when missing on a
    root Debian/Ubuntu machine (CI's clean one), else the test is skipped with the reason."""
    found = shutil.which(cmd)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip(f"{cmd} not installed (apt-get install {package}) and this machine cannot install it")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = None
    for update in (False, True):
        if update:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                           capture_output=True, text=True, env=env, timeout=900)
        if r.returncode == 0 and shutil.which(cmd):
            return shutil.which(cmd)
    pytest.skip(f"{cmd}: apt-get install {package} failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]}")


@pytest.fixture
def runs(tmp_path):
    """Writable copies of the two recorded runs: (cpu_a, cpu_b) under tmp_path."""
    a, b = tmp_path / "cpu_a", tmp_path / "cpu_b"
    shutil.copytree(RUNS / "cpu_a", a)
    shutil.copytree(RUNS / "cpu_b", b)
    return a, b


@pytest.fixture
def harness_cfg():
    """A minimal resolved config for driving the harness directly."""
    return OmegaConf.create({
        "harness": {"device": "cpu", "device_index": 0, "warmup_s": 0.0, "min_samples": 3, "max_samples": 20,
                    "noise_target": 0.5, "time_budget_s": 0.2, "l2_flush": False, "progress": False,
                    "cpu_max_bytes": 1 << 26, "gpu_mem_fraction": 0.8},
    })


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One `suite=quick` run in CPU mode, shared by the tests that read its output."""
    root = tmp_path_factory.mktemp("results")
    r = run_cli("run", "suite=quick", f"run.root={root}", "run.id=quick", "harness.progress=false")
    assert r.returncode == 0, r.stderr[-2000:]
    return root / "quick"


@pytest.fixture
def registered():
    """Register throw-away benchmarks for a test and remove them afterwards."""
    from bench.benchmarks import load_all
    from bench.core.registry import REGISTRY

    load_all()
    before = set(REGISTRY)
    yield REGISTRY
    for k in set(REGISTRY) - before:
        del REGISTRY[k]


def run_benchmarks(names, overrides, tmp_path, cpu_sized: bool = False):
    """Compose the config with ``overrides`` and run ``names`` in-process on the CPU; returns the records."""
    from bench.core.config import apply_cpu_overrides
    from bench.hw.device import Device
    from bench.plan.suite import run_suite
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all
    from bench.core.store import RunStore, read_records

    cfg = compose_checked(["harness.progress=false", "harness.device=cpu", *overrides])
    if cpu_sized:
        from bench.commands.overrides import keys_of

        apply_cpu_overrides(cfg, keys_of(overrides))
    reg = load_all()
    store = RunStore(tmp_path / "run", "t")
    run_suite([reg[n] for n in names], cfg, Device("cpu"), store)
    store.finish("complete")
    return read_records(tmp_path / "run" / "records.jsonl")
