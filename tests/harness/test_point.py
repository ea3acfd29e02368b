import json

import pytest
import torch

from bench.hw.device import Device
from bench.plan.suite import run_suite
from bench.core.registry import benchmark
from bench.core.store import RunStore, load, read_records
from tests.helpers import NO_COST


def _run(names, cfg, tmp_path, registry):
    store = RunStore(tmp_path / "run", "t")
    counts = run_suite([registry[n] for n in names], cfg, Device("cpu"), store)
    store.finish("complete")
    return counts, read_records(tmp_path / "run" / "records.jsonl")


def test_injected_oom_at_one_point_leaves_later_points_recorded(harness_cfg, tmp_path, registered):
    released = []

    @benchmark("t_oom", family="test", cost=NO_COST, axes=lambda c: {"i": [0, 1, 2, 3]})
    def t_oom(state):
        buf = torch.ones(1024)
        if state.params["i"] == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
        state.add_bytes(buf.numel() * 4)
        state.exec(lambda: buf.sum(), work="host")
        released.append(state.params["i"])

    counts, recs = _run(["t_oom"], harness_cfg, tmp_path, registered)
    assert counts == {"ok": 3, "skipped": 1, "error": 0}
    assert [r["params"]["i"] for r in recs] == [0, 1, 2, 3]
    bad = recs[1]
    assert bad["status"] == "skipped" and bad["reason"].startswith("out of memory")
    assert bad["metrics"] == {}
    assert all(r["status"] == "ok" and r["metrics"]["gbps"] > 0 for r in recs[2:])


def test_verification_failure_is_an_error_never_a_number(harness_cfg, tmp_path, registered):
    @benchmark("t_bad", family="test", cost=NO_COST, axes=lambda c: {"i": [0]})
    def t_bad(state):
        state.add_bytes(100)
        state.exec(lambda: None, work="host")
        state.verify(False, "block 3 differs at byte 17")

    _, recs = _run(["t_bad"], harness_cfg, tmp_path, registered)
    assert recs[0]["status"] == "error"
    assert "block 3 differs" in recs[0]["reason"]
    assert "gbps" not in recs[0]["metrics"] and recs[0]["verified"] is False


def test_skip_and_memory_budget_are_recorded_with_reason(harness_cfg, tmp_path, registered):
    from bench.harness import need

    @benchmark("t_big", family="test", cost=NO_COST, axes=lambda c: {"n": [10, 1 << 40]},
               needs=lambda state: need(state.params["n"], "buffer"))
    def t_big(state):
        assert state.need.device_bytes == state.params["n"]  # checked before the function runs
        state.exec(lambda: None, work="host")

    @benchmark("t_cuda_only", family="test", cost=NO_COST, axes=lambda c: {"n": [1]},
               supports=lambda d: None if d.is_cuda else "needs a CUDA device")
    def t_cuda_only(state):
        raise AssertionError("must not be called on the CPU")

    counts, recs = _run(["t_big", "t_cuda_only"], harness_cfg, tmp_path, registered)
    assert [r["status"] for r in recs] == ["ok", "skipped", "skipped"]
    assert "harness.cpu_max_bytes" in recs[1]["reason"]
    assert recs[2]["reason"] == "needs a CUDA device"


def test_result_above_physical_peak_is_flagged(harness_cfg, tmp_path, registered):
    @benchmark("t_fast", family="test", cost=NO_COST, axes=lambda c: {"i": [0]})
    def t_fast(state):
        state.add_bytes(10**12)  # a terabyte "moved" by a no-op: impossible
        state.set_peak("gbps", 64.0)
        state.exec(lambda: None, work="host")

    _, recs = _run(["t_fast"], harness_cfg, tmp_path, registered)
    assert "exceeds theoretical peak" in recs[0]["info"]["implausible"]
    assert recs[0]["metrics"]["gbps_fraction_of_peak"] > 1


def test_records_load_into_one_tidy_frame(harness_cfg, tmp_path, registered):
    @benchmark("t_ok", family="test", cost=NO_COST, axes=lambda c: {"size_bytes": [8, 16], "mode": ["a"]})
    def t_ok(state):
        state.add_bytes(state.params["size_bytes"])
        state.exec(lambda: None, work="host")

    _run(["t_ok"], harness_cfg, tmp_path, registered)
    df = load(tmp_path / "run")
    assert list(df["param.size_bytes"]) == [8, 16]
    assert {"metric.median_s", "metric.gbps", "metric.converged", "status", "device"} <= set(df.columns)
    assert (df["device"] == "cpu").all()


def test_torn_last_line_is_ignored_by_the_reader(tmp_path):
    p = tmp_path / "records.jsonl"
    rec = {"benchmark": "b", "status": "ok", "params": {}, "metrics": {}}
    p.write_text(json.dumps(rec) + "\n" + '{"benchmark": "b", "st')
    with pytest.warns(UserWarning, match="not a complete record"):
        assert read_records(p) == [rec]
