"""The warm tier family on a CPU node (bench.benchmarks.warm.benchmarks): localities fetch what they say, a wrong row fails the
point, bad values are refused in one line (the quick suite's warm records: tests/test_quick_suite.py)."""
import re

import pytest

from bench.benchmarks.warm import benchmarks as W
from bench.commands.overrides import compose_checked
from bench.benchmarks import validate_run
from bench.core.errors import UserError
from tests.helpers import run_benchmarks, run_cli


@pytest.fixture(scope="module")
def localities(tmp_path_factory):
    return run_benchmarks(["warm_fetch"], ["benchmark=warm", "suite=quick", "harness.time_budget_s=0.02",
                                           "warm.row_bytes=[256]", "warm.rows=[64]", "warm.latency_samples=10",
                                           "warm.locality=[runs_16,repeat_0.5]",
                                           "warm.methods=[uva_kernel,copy_per_run]"],
                          tmp_path_factory.mktemp("warm"), cpu_sized=True)


def test_localities_fetch_what_they_say(localities):
    by = {(r["params"]["method"], r["params"]["locality"]): r for r in localities}
    assert all(r["status"] == "ok" and r["verified"] for r in by.values()), [r["reason"] for r in localities]
    rep = by[("uva_kernel", "repeat_0.5")]
    assert rep["metrics"]["rows_fetched"] == 32 and rep["metrics"]["bytes"] == 32 * 256  # half kept in HBM
    assert rep["info"]["rows_kept"] == 32
    assert by[("copy_per_run", "runs_16")]["info"]["copy_calls_per_step"] <= 4  # 64 rows in runs of 16


def test_a_wrong_row_fails_the_point_loudly(tmp_path, monkeypatch):
    real = W.RowFetch.step

    def corrupt(self):
        real(self)
        self.bufs[(self.i - 1) % len(self.plan.steps) % 2][3, 0] ^= 0xFF

    monkeypatch.setattr(W.RowFetch, "step", corrupt)
    recs = run_benchmarks(["warm_fetch"], ["benchmark=warm", "suite=quick", "warm.row_bytes=[64]", "warm.rows=[64]",
                                           "warm.methods=[cpu_gather]"], tmp_path, cpu_sized=True)
    (r,) = recs
    assert r["status"] == "error" and r["verified"] is False
    assert "before timing: step 0 row 3" in r["reason"] and "differs from the pool" in r["reason"]


@pytest.mark.parametrize("arg, expect", [
    ("warm.locality=[random]", "warm.locality='random' is not allowed"),
    ("warm.row_bytes=[100]", "warm.row_bytes=100 is not allowed: byte sizes that are multiples of 16"),
    ("warm.methods=[dma]", "warm.methods='dma' is not allowed: each one of uva_kernel"),
    ("warm.cold_request_bytes=[1000]", "warm.cold_request_bytes=1000 is not allowed: multiples of 4096"),
])
def test_bad_warm_values_are_refused_by_name(arg, expect):
    with pytest.raises(UserError, match=re.escape(expect)):
        validate_run(compose_checked(["benchmark=warm", arg]))


def test_bad_warm_value_is_one_line_exit_2():
    r = run_cli("run", "benchmark=warm", "warm.locality=[random]")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "warm.locality='random' is not allowed" in lines[0], r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_warm_family_on_gpu(tmp_path):
    """Every GPU path of the family verified on a GPU: the UVA kernel, the CPU gather and the copies per run, each
    locality; the search kernel's top-k; GB/s below the link's peak."""
    pytest.importorskip("cupy")
    recs = run_benchmarks(["warm_fetch", "warm_search"], [
        "benchmark=warm", "suite=quick", "model=llama3_8b", "warm.pool_bytes=1073741824",
        "warm.row_bytes=[64,4096,model]", "warm.rows=[256,2048]", "warm.locality=[uniform,runs_16,repeat_0.6]",
        "warm.search_tokens=[1048576]", "warm.search_methods=[uva_kernel,cpu,copy_first]"], tmp_path, device="cuda")
    bad = [(r["benchmark"], r["params"], r["reason"]) for r in recs if r["status"] != "ok"]
    assert not bad, bad
    for r in recs:
        assert r["verified"] and "stand_in" not in r["info"]
        peak = r["metrics"].get("gbps_peak")
        if peak:
            assert r["metrics"]["gbps"] <= 1.05 * peak, r
