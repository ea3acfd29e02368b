"""Fixtures shared by every test package (helpers that are not fixtures: tests/helpers.py)."""
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.helpers import RUNS, o_direct_refusal, run_cli


@pytest.fixture
def runs(tmp_path):
    """Writable copies of the two recorded runs: (cpu_a, cpu_b) under tmp_path."""
    a, b = tmp_path / "cpu_a", tmp_path / "cpu_b"
    shutil.copytree(RUNS / "cpu_a", a)
    shutil.copytree(RUNS / "cpu_b", b)
    return a, b


@pytest.fixture
def o_direct_dir(tmp_path):
    """A directory for the storage tests' files on a disk that takes O_DIRECT (tests.helpers.o_direct_refusal):
    tmp_path, else a fresh directory under /var/tmp or the working directory (removed after); the test is skipped
    with each one's reason where none does (/tmp on tmpfs, some overlay and network filesystems)."""
    why = o_direct_refusal(tmp_path)
    if why is None:
        yield tmp_path
        return
    reasons = [why]
    for base in ("/var/tmp", os.getcwd()):
        try:
            d = tempfile.mkdtemp(prefix="tierbench-test-", dir=base)
        except OSError as e:
            reasons.append(f"{base}: {e.strerror}")
            continue
        why = o_direct_refusal(d)
        if why is None:
            try:
                yield Path(d)
            finally:
                shutil.rmtree(d, ignore_errors=True)
            return
        shutil.rmtree(d, ignore_errors=True)
        reasons.append(why)
    pytest.skip("no directory takes O_DIRECT for the storage test's files: " + "; ".join(reasons))


@pytest.fixture
def harness_cfg():
    """A minimal resolved config for driving the harness directly."""
    return OmegaConf.create({
        "harness": {"device": "cpu", "device_index": 0, "warmup_s": 0.0, "min_samples": 3, "max_samples": 20,
                    "noise_target": 0.5, "time_budget_s": 0.2, "l2_flush": False, "progress": False,
                    "cpu_max_bytes": 1 << 26, "gpu_mem_fraction": 0.8},
    })


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, worker_id):
    """One `suite=quick` run in CPU mode, shared by the tests that read its output: made once for the whole
    session, also under pytest -n (the first worker to need it runs it under a file lock, the others read it)."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "quick_results"
    with FileLock(str(shared / "quick_run.lock")):
        if not (root / "quick").exists():
            r = run_cli("run", "suite=quick", f"run.root={root}", "run.id=quick", "harness.progress=false")
            assert r.returncode == 0, r.stderr[-2000:]
    status = json.loads((root / "quick" / "manifest.json").read_text())["status"]
    assert status == "complete", f"the shared quick run is {status}: {root / 'quick'}"
    return root / "quick"


@pytest.fixture
def registered():
    """Register throw-away benchmarks for a test (family "test", registered here with a config section of its own)
    and remove them, and that family, afterwards."""
    from dataclasses import dataclass
    from typing import Optional

    from bench.benchmarks import load_all, load_families
    from bench.core.family import FAMILIES, Family, family
    from bench.core.registry import REGISTRY

    @dataclass
    class TestFamilyConfig:
        budget_s: Optional[float] = None

    load_all()
    family(Family("test", order=10 ** 6, config=TestFamilyConfig, package="tests", modules=()))
    before = set(REGISTRY)
    yield REGISTRY
    for k in set(REGISTRY) - before:
        del REGISTRY[k]
    del FAMILIES["test"]
    load_families()  # the root config again without the test family
