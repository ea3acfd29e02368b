"""The quick suite as a user runs it (`python -m bench run suite=quick` on a CPU node), once for the whole session
(the quick_run fixture), and what the tests read from it: a loadable run and manifest, the needs the planner gives
for every point, the warm family's records. One file, so that under pytest -n one worker makes the run."""
import json

import pandas as pd
import pytest

from bench.benchmarks.warm import benchmarks as W
from bench.core.store import load, read_records


def test_quick_suite_writes_loadable_run_with_manifest(quick_run):
    df = load(quick_run)
    assert len(df) > 0 and (df["device"] == "cpu").all()
    # the replay times whole sessions; handoff_fit is derived from other points (nothing timed)
    timed = df[(df.status == "ok") & ~df["benchmark"].isin(["e2e_agentic_replay", "handoff_fit"])]
    assert len(timed) > 50 and (timed["metric.median_s"] > 0).all()
    # a point that did not run says why in the benchmark's own words (Skip); a Python exception there is a bug
    raw = read_records(quick_run / "records.jsonl")
    crashed = [(r["benchmark"], r["reason"]) for r in raw if "traceback_tail" in (r.get("info") or {})]
    assert not crashed, crashed[:5]
    # pandas alone reads it too, in one call
    assert len(pd.read_json(quick_run / "records.jsonl", lines=True)) == len(df)
    m = json.loads((quick_run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["finished"] and m["started"]
    assert m["device"] == "cpu" and m["run_id"] == "quick"
    assert m["tool"]["version"] and "git_sha" in m["tool"]
    assert m["config"]["harness"]["min_samples"] >= 1
    hw = m["hardware"]
    assert hw["host"]["cpu_model"] and hw["host"]["memory_bytes"] > 0 and hw["host"]["cpu_cores"] >= 1
    assert hw["gpu"] is None and "gpu" in hw["missing"]  # null with a reason, not a crash
    assert hw["software"]["torch"]


def test_plan_bytes_are_what_the_run_checked(quick_run):
    """Every point of a real CPU run records the needs the harness checked before it ran; the plan of the same config
    gives the same device, host and file bytes for every point of every family."""
    from bench.commands.plan import plan_jobs

    recs = read_records(quick_run / "records.jsonl")
    man = json.loads((quick_run / "manifest.json").read_text())
    (_, plan, _), = plan_jobs([o for o in man["overrides"] if not o.startswith("run.")] + ["harness.device=cpu"])
    planned = {(p.benchmark, json.dumps(p.params, sort_keys=True)): p for p in plan.points}
    axes_of = {p.benchmark: list(p.params) for p in plan.points}
    checked = {}
    for r in recs:
        if r.get("need") is None:
            continue
        axes = axes_of[r["benchmark"]]  # a benchmark may add facts to its params (bidir's streams)
        p = planned[(r["benchmark"], json.dumps({k: r["params"][k] for k in axes}, sort_keys=True))]
        assert (p.device_bytes, p.host_bytes, p.file_bytes) == \
            (r["need"]["device_bytes"], r["need"]["host_bytes"], r["need"]["file_bytes"]), (r["benchmark"], r["params"])
        checked.setdefault(r["family"], 0)
        checked[r["family"]] += 1
    assert set(checked) >= {"ceilings", "transfer", "attention", "layers", "interference", "storage", "validate"}, \
        checked


@pytest.fixture(scope="module")
def warm_records(quick_run):
    return [r for r in read_records(quick_run / "records.jsonl") if r["family"] == "warm"]


def _of(recs, bench):
    return [r for r in recs if r["benchmark"] == bench]


def test_fetch_points_cover_row_sizes_and_are_verified(warm_records):
    ok = [r for r in _of(warm_records, "warm_fetch") if r["status"] == "ok"]
    sizes = {r["params"]["row_bytes"] for r in ok}
    assert min(sizes) <= 128 and max(sizes) >= 32768 and len(sizes) >= 5
    assert {r["params"]["method"] for r in ok} == set(W.METHODS)
    for r in ok:
        m = r["metrics"]
        assert r["verified"] is True
        assert m["bytes"] == r["params"]["rows"] * r["params"]["row_bytes"] and m["gbps"] > 0
        assert 0 < m["step_us_p50"] <= m["step_us_p99"] and m["latency_samples"] >= 3
        assert m["contiguous_gbps"] > 0 and m["fraction_of_contiguous"] > 0
        assert r["info"]["stand_in"].startswith("CPU stand-in")  # a CPU number is never shown as a GPU's
        assert "traceback_tail" not in r["info"]
    skipped = [r for r in _of(warm_records, "warm_fetch") if r["status"] == "skipped"]
    assert all("quarter of the pool" in r["reason"] for r in skipped)


def test_gpu_only_points_skip_with_the_reason(warm_records):
    peer = _of(warm_records, "warm_peer")
    assert peer and all(r["status"] == "skipped" and "two or more GPUs" in r["reason"] for r in peer)
    search = _of(warm_records, "warm_search")
    assert {r["params"]["method"] for r in search if r["status"] == "ok"} == {"cpu", "copy_first"}
    for r in search:
        assert r["verified"] and r["metrics"]["keys_per_s"] > 0
        assert r["metrics"]["topk_us_p50"] <= r["metrics"]["topk_us_p99"]


def test_cold_reads_beside_decode_measure_both_lanes(warm_records):
    (r,) = _of(warm_records, "cold_read_under_decode")
    assert r["status"] == "ok" and r["verified"], r["reason"]
    m = r["metrics"]
    assert m["read_gbps"] > 0 and m["read_gbps_alone"] > 0 and m["decode_step_us_alone"] > 0
    assert m["decode_step_us_under"] > 0 and m["decode_slowdown"] > -1 and m["read_bw_retained"] > 0
    assert m["decode_slowdown"] == pytest.approx(m["decode_step_us_under"] / m["decode_step_us_alone"] - 1)
    assert "stand_in" in r["info"]


def test_quick_suite_hands_kv_off_between_two_processes(quick_run):
    """Where NIXL is installed: ok points between two processes for every block size (>= 4), verified, with p50/p99
    latency, layer by layer, and the per-descriptor fit of each op; without it every point says how to install it."""
    recs = [r for r in read_records(quick_run / "records.jsonl") if r["family"] == "handoff"]
    assert recs
    if all(r["status"] == "skipped" for r in recs):
        assert all("NIXL not installed" in r["reason"] or "no fit" in r["reason"] for r in recs), recs[0]["reason"]
        pytest.skip(recs[0]["reason"])
    req = _of(recs, "handoff_request")
    assert all(r["status"] == "ok" and r["verified"] for r in req), [r["reason"] for r in req if r["status"] != "ok"]
    assert len({r["params"]["block_tokens"] for r in req}) >= 4 and {r["params"]["op"] for r in req} == {"read", "write"}
    assert all(0 < r["metrics"]["latency_ms_p50"] <= r["metrics"]["latency_ms_p99"] for r in req)
    assert all(r["status"] == "ok" and r["metrics"]["exposed_ms"] >= 0 for r in _of(recs, "handoff_layerwise"))
    fits = _of(recs, "handoff_fit")
    assert len(fits) == 2 and all(r["status"] == "ok" and r["metrics"]["us_per_descriptor"] > 0 for r in fits)
