"""Interference family: overlap bookkeeping on synthetic timings, the lanes timer and its handoff, the benchmarks
on the CPU (host threads), and the throughput model's use of measured exposure."""
import json
import shutil
import time

import numpy as np
import pytest

from bench.llm import overlap
from bench.harness.timing import CpuLanes, Handoff, Lane, StoppingRule, measure_lanes
from tests.helpers import ROOT, run_benchmarks, run_cli, run_main



# -- bookkeeping on synthetic timings ---------------------------------------------------------------------------------
@pytest.mark.parametrize("copy, compute, together, ratio", [
    (1.0, 3.0, 3.0, 1.0),    # the copy fully hidden behind the compute
    (1.0, 3.0, 4.0, 0.0),    # serial
    (1.0, 3.0, 3.5, 0.5),    # half hidden
    (2.0, 2.0, 2.5, 0.75),
    (1.0, 3.0, 4.4, 0.0),    # worse than serial: clipped, raw kept
    (1.0, 3.0, 2.9, 1.0),    # faster than the longer alone (noise): clipped
])
def test_pair_overlap_ratios_stay_in_unit_interval(copy, compute, together, ratio):
    m = overlap.pair_overlap(copy, compute, copy, compute, together)
    assert 0.0 <= m["overlap_ratio"] <= 1.0
    assert m["overlap_ratio"] == pytest.approx(ratio)
    assert m["overlap_raw"] == pytest.approx((copy + compute - together) / min(copy, compute))
    assert m["together_vs_sum"] == pytest.approx(together / (copy + compute))
    assert m["together_vs_max"] == pytest.approx(together / max(copy, compute))
    assert m["exposed_copy_s"] == pytest.approx(max(0.0, together - compute))


def test_slowdowns_are_read_against_noise():
    # compute measured 1% faster under the copy with 3% noise: a negative slowdown within noise, not significant
    m = overlap.pair_overlap(1.0, 2.0, 1.3, 1.98, 2.2, noise=overlap.noise_band(0.02, 0.0224))
    assert m["slowdown_noise"] == pytest.approx(0.03, rel=1e-2)
    assert -m["slowdown_noise"] <= m["compute_slowdown"] < 0 and not m["compute_slowdown_significant"]
    assert m["copy_slowdown"] == pytest.approx(0.3)
    m = overlap.pair_overlap(1.0, 2.0, 1.0, 2.4, 2.5, noise=0.03)
    assert m["compute_slowdown"] == pytest.approx(0.2) and m["compute_slowdown_significant"]
    assert not m["load_hidden"]
    assert overlap.pair_overlap(1.0, 2.0, 1.0, 2.0, 2.05, noise=0.03)["load_hidden"]
    with pytest.raises(ValueError, match="together_s=0"):
        overlap.pair_overlap(1.0, 2.0, 1.0, 2.0, 0.0)


def _simulated_pipeline(a: float, c: float, L: int) -> float:
    """Event-by-event: layer i's KV arrives at (i+1) a; its compute starts when both it and layer i-1 are done."""
    done = 0.0
    for i in range(L):
        done = max(done, (i + 1) * a) + c
    return done


@pytest.mark.parametrize("seed", range(5))
def test_ideal_pipeline_matches_event_simulation(seed):
    rng = np.random.default_rng(seed)
    for _ in range(50):
        L = int(rng.integers(1, 80))
        load, compute = rng.uniform(0.01, 5.0, 2)
        want = _simulated_pipeline(load / L, compute / L, L)
        assert overlap.pipeline_s(load, compute, L) == pytest.approx(want)
        exposed = float(overlap.ideal_exposed_s(load, compute, L))
        assert exposed == pytest.approx(want - compute)
        assert load / L - 1e-12 <= exposed <= load + 1e-12  # at least the first layer's load, at most all of it
    assert overlap.ideal_exposed_s(0.0, 1.0, 8) == 0.0


def test_interference_fit_recovers_slowdowns():
    rng = np.random.default_rng(3)
    load = rng.uniform(0.1, 4.0, 24)
    comp = rng.uniform(0.5, 2.0, 24)
    L = 8
    together = comp + overlap.exposed_with_interference_s(load, comp, L, 0.3, 0.1)
    f = overlap.fit_interference(load, comp, together, L)
    assert f["copy_slowdown"] == pytest.approx(0.3, abs=0.011)
    assert f["compute_slowdown"] == pytest.approx(0.1, abs=0.011)
    assert f["rel_rms"] < 0.02 < f["ideal_rel_rms"]
    ideal = comp + overlap.ideal_exposed_s(load, comp, L)
    g = overlap.fit_interference(load, comp, ideal, L)
    assert g["copy_slowdown"] == 0.0 and g["compute_slowdown"] == 0.0 and g["rel_rms"] < 1e-9


# -- lanes timer --------------------------------------------------------------------------------------------------
def test_cpu_lanes_time_each_lane_from_a_common_start():
    lanes = [Lane("short", lambda: time.sleep(0.01), "host"), Lane("long", lambda: time.sleep(0.03), "host")]
    res = measure_lanes(CpuLanes(lanes), StoppingRule(3, 10, 0.5, 0.5), 0.0)
    assert res.total.n == res.lanes["long"].n >= 3
    assert res.lanes["short"].median_s == pytest.approx(0.01, abs=0.008)
    assert res.total.median_s == pytest.approx(0.03, abs=0.01)  # concurrent: the longer, not the sum
    assert res.total.median_s >= res.lanes["long"].median_s  # each sample's total is its longest lane


def test_handoff_orders_lanes_and_failures_do_not_hang():
    h = Handoff(3, cuda=False)
    seen = []

    def producer():
        for i in range(3):
            time.sleep(0.01)
            seen.append(("post", i))
            h.post(i)

    def consumer():
        for i in range(3):
            h.wait(i)
            seen.append(("use", i))

    CpuLanes([Lane("p", producer, "host"), Lane("c", consumer, "host")]).sample_lanes()
    for i in range(3):
        assert seen.index(("post", i)) < seen.index(("use", i))

    def boom():
        raise RuntimeError("lane failed")

    with pytest.raises(RuntimeError, match="lane failed"):
        CpuLanes([Lane("p", boom, "host"), Lane("c", lambda: None, "host")]).sample_lanes()


# -- the benchmarks on the CPU ----------------------------------------------------------------------------------------
SMALL = ["benchmark=interference", "model=tiny", "harness.time_budget_s=0.05", "harness.warmup_s=0",
         "harness.max_samples=20"]


@pytest.fixture(scope="module")
def interference_records(tmp_path_factory):
    names = ["copy_under_compute", "layerwise_load", "host_traffic_concurrent", "all_gpus_host"]
    overrides = SMALL + ["interference.cpu.methods=[staged,uva_kernel]", "interference.computes=[decode]"]
    return run_benchmarks(names, overrides, tmp_path_factory.mktemp("intf"), cpu_sized=True)


def test_interference_family_runs_on_cpu(interference_records):
    by = {}
    for r in interference_records:
        by.setdefault(r["benchmark"], []).append(r)
    assert all(r["status"] == "skipped" and "needs CUDA" in r["reason"] for r in by["all_gpus_host"])
    for name in ("copy_under_compute", "layerwise_load", "host_traffic_concurrent"):
        assert by[name] and all(r["status"] == "ok" and r["verified"] for r in by[name]), \
            [(r["params"], r["reason"]) for r in by[name]]
    for r in by["copy_under_compute"]:
        m = r["metrics"]
        assert 0.0 <= m["overlap_ratio"] <= 1.0
        assert m["copy_gbps"] > 0 and m["copy_gbps_alone"] > 0 and m["compute_repeats"] >= 1
        assert m["together_s"] > 0 and np.isfinite(m["compute_slowdown"])
    for r in by["layerwise_load"]:
        m = r["metrics"]
        assert m["exposed_s"] >= 0 and 0.0 <= m["overlap_ratio"] <= 1.0
        assert m["exposed_per_layer_s"] == pytest.approx(m["exposed_s"] / m["layers_run"])
        assert m["tier_emulated"] == (r["params"]["tier_gbps"] != "link")
    # the emulated tier is slower than the link it is paced on
    lw = {r["params"]["tier_gbps"]: r["metrics"] for r in by["layerwise_load"] if r["params"]["hit_tokens"] == 512}
    assert lw[1.0]["load_gbps_alone"] < lw["link"]["load_gbps_alone"]
    assert lw[1.0]["load_gbps_alone"] == pytest.approx(1.0, rel=0.5)
    for r in by["host_traffic_concurrent"]:
        m = r["metrics"]
        assert m["h2d_gbps"] > 0 and m["d2h_gbps"] > 0 and m["h2d_retained"] > 0


def test_layerwise_verification_catches_a_layer_run_before_its_kv(tmp_path, monkeypatch):
    # the consumer no longer waits, and every load step is late: layer 1 computes on poisoned (NaN) KV
    monkeypatch.setattr(Handoff, "wait", lambda self, i: None)
    real_post = Handoff.post
    monkeypatch.setattr(Handoff, "post", lambda self, i: (time.sleep(0.2), real_post(self, i)))
    recs = run_benchmarks(["layerwise_load"], SMALL + ["interference.cpu.hit_tokens=[128]",
                                                       "interference.cpu.tier_gbps=[link]"], tmp_path, cpu_sized=True)
    assert [r["status"] for r in recs] == ["error"]
    assert "before its KV arrived" in recs[0]["reason"]


def test_bad_interference_values_get_one_line():
    for arg, expect in [("interference.tier_gbps=[link,-3]", "interference.tier_gbps=-3 is not allowed"),
                        ("interference.directions=[sideways]", "interference.directions='sideways'"),
                        ("interference.layerwise_layers=1", "at least 2")]:
        r = run_main("run", "benchmark=interference", arg, "--cfg", "job")
        assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


# -- the throughput model consumes measured exposure ----------------------------------------------------------------
def _layerwise_records(run_id: str, alpha: float, beta: float) -> list[dict]:
    """Synthetic layerwise_load records generated from known slowdowns (the fit must find them)."""
    out = []
    for i, (load, comp) in enumerate([(0.002, 0.01), (0.01, 0.01), (0.03, 0.01), (0.05, 0.02), (0.004, 0.03)]):
        together = comp + float(overlap.exposed_with_interference_s(load, comp, 8, alpha, beta))
        out.append({"schema_version": 1, "run_id": run_id, "benchmark": "layerwise_load", "family": "interference",
                    "params": {"n_new": 32, "hit_tokens": 128 * (i + 1), "tier_gbps": "link"}, "device": "cpu",
                    "status": "ok", "reason": None, "verified": True,
                    "metrics": {"load_s_alone": load, "compute_s_alone": comp, "together_s": together,
                                "layers_run": 8, "median_s": together}})
    return out


def test_model_uses_measured_exposure_and_says_so(tmp_path):
    run = tmp_path / "cpu_a"
    shutil.copytree(ROOT / "tests" / "data" / "runs" / "cpu_a", run)
    base = run_cli("model", str(run), "plots=false", "fleet.sessions=60", f"out={tmp_path / 'b'}", "--json")
    assert base.returncode == 0, base.stderr[-2000:]
    assert json.loads(base.stdout)["load_cost"]["used"] == "bandwidth"
    r = run_cli("model", str(run), "fleet.sessions=60", "fleet.load_cost=measured")
    assert r.returncode == 2 and "no layerwise_load records" in r.stderr

    with open(run / "records.jsonl", "a") as f:
        for rec in _layerwise_records("cpu_a", 0.4, 0.05):
            f.write(json.dumps(rec) + "\n")
    r = run_cli("model", str(run), "plots=false", "fleet.sessions=60", f"out={tmp_path / 'm'}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "KV load cost: measured layer-wise exposure" in r.stdout
    res = json.loads((tmp_path / "m" / "model.json").read_text())
    lc = res["load_cost"]
    assert lc["used"] == "measured_exposed" and lc["points"] == 5
    assert lc["copy_slowdown"] == pytest.approx(0.4, abs=0.02)
    assert lc["compute_slowdown"] == pytest.approx(0.05, abs=0.02)
    bw = run_cli("model", str(run), "plots=false", "fleet.sessions=60", "fleet.load_cost=bandwidth", f"out={tmp_path / 'w'}")
    assert bw.returncode == 0 and "KV load cost: bandwidth estimate" in bw.stdout
    res_bw = json.loads((tmp_path / "w" / "model.json").read_text())
    # HBM reuse loads nothing: the same either way; the host tier pays at least its first layer's load when measured
    assert res["reuse"]["hbm"]["prefill_gpu_s"] == pytest.approx(res_bw["reuse"]["hbm"]["prefill_gpu_s"])
    assert res["reuse"]["host"]["prefill_gpu_s"] > res_bw["reuse"]["host"]["prefill_gpu_s"]


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_interference_on_gpu(tmp_path):
    """Streams, spin hold, event handoff and the CuPy kernel on a lane stream: verified, plausible, overlapping."""
    from bench.hw.device import Device
    from bench.plan.suite import run_suite
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all
    from bench.core.store import RunStore, read_records

    pytest.importorskip("cupy")
    cfg = compose_checked(["suite=quick", "benchmark=interference", "model=llama3_8b", "harness.progress=false",
                           "interference.methods=[staged,uva_kernel]", "interference.hit_tokens=[8192]",
                           "interference.tier_gbps=[link,10]", "interference.layerwise_layers=8"])
    reg = load_all()
    store = RunStore(tmp_path / "run", "g")
    names = ["copy_under_compute", "layerwise_load", "host_traffic_concurrent"]
    run_suite([reg[n] for n in names], cfg, Device("cuda"), store)
    recs = read_records(tmp_path / "run" / "records.jsonl")
    assert all(r["status"] == "ok" and r["verified"] for r in recs), [(r["params"], r["reason"]) for r in recs]
    assert not [r for r in recs if "implausible" in r["info"]]
    for r in recs:
        if r["benchmark"] == "copy_under_compute":
            assert r["metrics"]["copy_under_s"] > 0.2 * r["metrics"]["copy_alone_s"]  # the copy ran on its stream
        if r["benchmark"] == "layerwise_load" and r["params"]["tier_gbps"] == 10:
            assert r["metrics"]["load_gbps_alone"] == pytest.approx(10, rel=0.15)
        if r["benchmark"] in ("copy_under_compute", "layerwise_load"):
            # the compute lane is CUDA graphs (device work), so every lane sits behind the spin: GPU time, not the
            # rate at which Python issues a layer's ops
            assert "CUDA graph" in r["info"]["compute_lane"] and r["metrics"]["clock"].endswith("+spin")
    lw = {r["params"]["tier_gbps"]: r["metrics"] for r in recs if r["benchmark"] == "layerwise_load"}
    for m in lw.values():  # physics of two overlapped lanes: together between the longer one and the sum
        assert max(m["load_s_alone"], m["compute_s_alone"]) * 0.9 <= m["together_s"]
        assert m["together_s"] <= (m["load_s_alone"] + m["compute_s_alone"]) * 1.1
        assert m["exposed_s"] <= m["load_s_alone"] * 1.1
    assert lw["link"]["exposed_s"] <= lw[10.0]["exposed_s"]  # a slower tier never hides better
