import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from bench.core.config import conf_dir
from bench.model import fleet as F
from bench.model.pricing import break_even_gbps
from bench.model.cachesim import Trace, simulate, simulate_reference
from bench.model.costs import Costs, Fit, nnls
from bench.model.traces import read_requests
from bench.model.workload import Workload, generate, write_trace
from bench.llm.shapes import causal_pairs
from tests.helpers import run_cli



def workload(name):
    return Workload.from_cfg(OmegaConf.load(conf_dir() / "workload" / f"{name}.yaml"))


def test_published_2x_arithmetic_is_a_special_case():
    # 64 GPUs, prefill and decode equal work per request -> best split 32:32
    p0 = d = 1.0
    base = F.best_split(64, p0, d)
    assert (base.prefill_gpus, base.decode_gpus) == (32, 32)
    # reuse removes prefill: all 64 GPUs decode
    reuse = F.best_split(64, 0.0, d)
    assert (reuse.prefill_gpus, reuse.decode_gpus) == (0, 64)
    assert reuse.requests_per_s / base.requests_per_s == pytest.approx(2.0)
    assert F.amdahl_bound(p0, d) == pytest.approx(2.0) == F.speedup(p0, 0.0, d)
    assert F.prefill_share(p0, d) == 0.5


def test_fleet_formulas_by_hand():
    assert F.amdahl_bound(3.0, 1.0) == 4.0            # prefill 75% -> 1/(1-0.75)
    assert F.speedup(3.0, 1.0, 1.0) == 2.0            # (3+1)/(1+1)
    s = F.best_split(10, 3.0, 1.0)                    # 7.5:2.5 ideal -> 7:3 or 8:2
    assert s.requests_per_s == pytest.approx(max(min(7 / 3, 3 / 1), min(8 / 3, 2 / 1)))
    assert F.fixed_split(64, 0.5, 2.0, 1.0).requests_per_s == pytest.approx(16.0)
    assert F.colocated_rate(64, 1.0, 1.0) == 32.0
    # decode batch: 80 GB, 16 GB weights, 10% reserve -> (72-16)/1 GB per sequence = 56
    b, why = F.decode_batch(80e9, 16e9, 1e9, 0.1, None, lambda b: 0.01 * b, 256, 1)
    assert (b, why) == (56, "HBM")
    b, why = F.decode_batch(80e9, 16e9, 1e9, 0.1, 0.2, lambda b: 0.01 * b, 256, 1)  # step <= 0.2 s -> 20
    assert (b, why) == (20, "latency SLO")


def test_nnls_and_break_even_by_hand():
    X = np.array([[1, 1.0], [1, 2.0], [1, 3.0]])
    assert nnls(X, X @ np.array([0.5, 2.0])) == pytest.approx([0.5, 2.0])
    assert nnls(X, np.array([3.0, 2.0, 1.0]))[1] == 0  # a negative slope is clamped
    a1, a2, kvb = 1e-4, 1e-8, 131072
    costs = Costs(Fit("p", [], np.array([0.0, a1, a2]), 0, 3, {}), None, {}, kvb)
    n, c = 1000.0, 20000.0
    saved = a1 * c + a2 * (causal_pairs(n + c, 0) - causal_pairs(n, c))  # = a1 c + a2 c(c+1)/2
    assert saved == pytest.approx(a1 * c + a2 * c * (c + 1) / 2)
    assert break_even_gbps(costs, [n], [c], 0.0) == pytest.approx(c * kvb / saved / 1e9)


def test_presets_reproduce_their_calibration():
    s = workload("agentic_coding").summary()
    assert s["hit_rate"] == pytest.approx(0.972, abs=0.005)          # Manus: 97.2%
    assert s["input_output_ratio"] == pytest.approx(100, rel=0.05)   # 100:1
    s = workload("agentic_coding_copilot").summary()
    assert s["hit_rate"] == pytest.approx(0.857, abs=0.005)          # Copilot dataset: 85.7%
    assert s["input_output_ratio"] == pytest.approx(128.6, rel=0.05)
    assert workload("chatbot").summary()["hit_rate"] < s["hit_rate"]


def test_generated_sessions_reuse_their_history_and_cap_context():
    w = workload("agentic_coding")
    reqs = generate(w, 20, 512, seed=3)
    assert max(r.input_length + r.output_length for r in reqs) <= w.max_context_tokens
    by_s = {}
    for r in sorted(reqs, key=lambda r: r.timestamp_ms):
        prev = by_s.get(r.session_id)
        if prev is not None:  # the full blocks of the previous input and answer prefix this input
            full_prev = (prev.input_length + prev.output_length) // 512
            assert r.hash_ids[:full_prev] == (prev.hash_ids[:prev.input_length // 512] + prev.output_hash_ids)
        by_s[r.session_id] = r
    assert len(by_s) == 20


@pytest.mark.parametrize("caps", [(40, 80, 160), (15, 0, 60), (25, 25, 0), (10**6, 0, 0), (3, 2, 1)])
def test_cache_simulator_matches_brute_force_lru(caps):
    reqs = generate(workload("customer_support"), 25, 256, seed=7)
    hits, miss = simulate_reference(reqs, 256, caps)
    r = simulate(Trace.from_requests(reqs), 256, caps)
    assert np.array_equal(r.hit_tokens, hits) and np.array_equal(r.miss_tokens, miss)
    assert (r.hit_tokens.sum(axis=1) + r.miss_tokens == [q.input_length for q in reqs]).all()


def test_content_aware_routing_beats_round_robin():
    reqs = generate(workload("agentic_coding"), 60, 512, seed=1)
    tr = Trace.from_requests(reqs)
    caps = (400, 0, 0)
    rr = simulate(tr, 512, caps, instances=4, routing="round_robin").rates()["hit_rate"]
    ss = simulate(tr, 512, caps, instances=4, routing="session").rates()["hit_rate"]
    px = simulate(tr, 512, caps, instances=4, routing="prefix").rates()["hit_rate"]
    assert ss > rr + 0.1 and px > rr + 0.1


def test_trace_round_trip_and_bad_traces(tmp_path):
    reqs = generate(workload("chatbot"), 5, 512)
    p = tmp_path / "t.jsonl"
    write_trace(reqs, p)
    back = read_requests([p])
    flat = np.concatenate([np.asarray(r.hash_ids, np.int64) for r in reqs])
    assert back.source == "mooncake" and np.array_equal(back.blocks, flat) and len(back) == len(reqs)
    from bench.core.errors import UserError
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(UserError, match="not a trace or usage log of a known format"):
        read_requests([tmp_path / "empty.jsonl"])
    (tmp_path / "bad.jsonl").write_text('{"timestamp": 1, "input_length": 5}\n')
    with pytest.raises(UserError, match="line 1 is not a Mooncake record"):
        read_requests([tmp_path / "bad.jsonl"], "mooncake")


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A recorded CPU run of the suite (tiny model: transfer, storage, layers), see tests/data/runs."""
    import shutil
    from tests.helpers import ROOT
    dst = tmp_path_factory.mktemp("mrun") / "cpu_a"
    shutil.copytree(ROOT / "tests" / "data" / "runs" / "cpu_a", dst)
    return dst


def test_model_command_end_to_end(model_run, tmp_path):
    out = tmp_path / "o"
    r = run_cli("model", str(model_run), "fleet.sessions=100", f"out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Verdict, in detail:" in r.stdout and "Amdahl bound" in r.stdout
    res = json.loads((out / "model.json").read_text())
    v = res["verdict"]
    word = v["outcome"].replace("_", " ").upper()
    last = " ".join(r.stdout[r.stdout.rindex(word):].split())  # the answer last: outcome, number, interval, why
    assert "wrote" in r.stdout[:r.stdout.rindex(word)] and "wrote" not in last
    assert f"{v['speedup']['point']:.2f}x" in last and f"{v['speedup']['low']:.2f}" in last and v["why"][:20] in last
    flat = " ".join(r.stdout.replace("│", " ").split())
    assert flat.count(" ".join(v["reasons"][0].split())) == 1  # each caveat once
    assert "e+0" not in r.stdout  # units per value, no e-notation
    b = res["baseline"]
    assert b["amdahl_bound"] == pytest.approx(1 / (1 - b["prefill_share"]))
    for tier, v in res["reuse"].items():
        assert 1.0 <= v["speedup_continuous"] <= b["amdahl_bound"] + 1e-9
        assert res["sweep"][tier][0] == pytest.approx(1.0)
    assert set(res["simulated"]) == {"session", "prefix", "round_robin"}
    for name in ("speedup_vs_hit_rate", "gpu_split", "break_even"):
        assert (out / f"{name}.png").stat().st_size > 10_000
    assert "verdict" in res and res["fits"]["prefill"]["rel_rms_residual"] >= 0


@pytest.mark.parametrize("args, expect", [
    (["hit_rate=1.5"], "hit_rate=1.5 is not allowed: a fraction in [0, 1]"),
    (["workload=nope"], "unknown workload preset 'nope'"),
    (["fleet.gpus=1"], "fleet.gpus=1 is not allowed"),
    (["model=llama3_70b"], "measured tiny"),
])
def test_model_bad_inputs(model_run, args, expect):
    r = run_cli("model", str(model_run), *args)
    assert r.returncode == 2 and expect in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_model_empty_trace_and_missing_transfer_data(model_run, tmp_path):
    (tmp_path / "e.jsonl").write_text("")
    r = run_cli("model", str(model_run), "plots=false", f"trace={tmp_path / 'e.jsonl'}")
    assert r.returncode == 2 and "empty" in r.stderr
    only_ceilings = tmp_path / "c"
    rr = run_cli("run", "benchmark=ceilings", "suite=quick", f"run.root={tmp_path}", "run.id=c",
                 "harness.progress=false")
    assert rr.returncode == 0
    r = run_cli("model", str(only_ceilings), "plots=false")
    assert r.returncode == 2 and "python -m bench run benchmark=" in r.stderr


def test_verdict_has_outcome_interval_reasons_and_the_plot_marks_it(model_run, tmp_path, monkeypatch):
    from bench.report import model_plots as plots
    from bench.model.analyze import analyze
    from bench.commands.overrides import compose_checked

    cfg = compose_checked(["fleet.sessions=100", "verdict.bootstrap=40"], config_name="analysis")
    res = analyze(model_run, cfg)
    v = res["verdict"]
    assert v["outcome"] in ("supported", "not_supported", "undetermined")
    s = v["speedup"]
    assert s["low"] <= s["point"] <= s["high"] or not (s["low"] <= s["high"])
    assert v["reasons"] and v["reasons"][0].startswith("CPU run")
    assert v["sentence"].startswith("CPU rehearsal, not a hardware verdict")
    assert f"{s['point']:.2f}x ({s['low']:.2f}-{s['high']:.2f}x" in v["sentence"]
    assert "hbm" in v["tiers"] and v["seed_case"]["speedup"] > 0
    # plot = verdict: the red marker and its error bar are the verdict's own numbers
    figs = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figs.append(fig) or str(path))
    plots.speedup_vs_hit_rate(res, tmp_path / "p.png")
    ax = figs[0].axes[0]
    marker = [ln for ln in ax.lines if ln.get_marker() == "D"][0]
    assert marker.get_ydata()[0] == pytest.approx(s["point"])
    assert marker.get_xdata()[0] == pytest.approx(list(v["tiers"].values())[-1]["hit_rate"])
    segs = [c for c in ax.collections if c.get_segments()]
    (x0, y0), (x1, y1) = segs[0].get_segments()[0]
    assert sorted([y0, y1]) == pytest.approx([s["low"], s["high"]])
    assert res["model"] in ax.get_title() and res["workload"]["label"] in ax.get_title()


def test_outcome_follows_the_interval_and_extrapolation():
    from bench.model.verdict import decide, extrapolation

    far = [extrapolation("prefill new tokens", [100, 130_000], [32, 128])]
    assert far[0]["factor"] == pytest.approx(130_000 / 128)
    outcome, how, why = decide(3.0, 2.5, 3.5, 2.0, far, 4.0, "layer_prefill")
    assert outcome == "undetermined" and "layers.prefill_new" in how  # extrapolated too far: never "supported"
    assert why == ("the workload's prefill new tokens reaches 130000, 1016x beyond the measured 32..128 (the verdict "
                   "trusts up to 4x), though the interval lies above 2x")  # the one reason, in words
    near = [extrapolation("prefill new tokens", [64, 200], [32, 128])]
    assert decide(3.0, 2.5, 3.5, 2.0, near, 4.0, "layer_prefill")[0] == "supported"
    assert decide(1.5, 1.2, 1.8, 2.0, near, 4.0, "layer_prefill")[0] == "not_supported"
    outcome, how, why = decide(2.1, 1.7, 2.6, 2.0, near, 4.0, "layer_decode")
    assert outcome == "undetermined" and "layer_decode" in how  # straddles the claim
    assert why == "the 90% interval spans 2x (layer_decode moves it most)"


def test_trace_block_size_mismatch_and_variant_folders(model_run, tmp_path):
    from bench.model.analyze import check_trace_blocks, trace_block_tokens, variant_name
    from bench.commands.overrides import compose_checked
    from bench.core.errors import UserError

    reqs = generate(workload("chatbot"), 5, 512)
    tr = Trace.from_requests(reqs)
    assert trace_block_tokens(tr) == 512
    with pytest.raises(UserError, match=r"blocks of 512 tokens .* fleet.block_tokens=16: set fleet.block_tokens=512"):
        check_trace_blocks(tr, 16, "t.jsonl")
    check_trace_blocks(tr, 512, "t.jsonl")
    base = compose_checked([], config_name="analysis")
    names = {variant_name(compose_checked(o, config_name="analysis"), "agentic_coding")
             for o in ([], ["hit_rate=0.9"], ["fleet.gpus=16"], ["fleet=seed_50_50"])}
    assert len(names) == 4 and variant_name(base, "agentic_coding") == "model-agentic_coding"
    p = tmp_path / "mytrace.jsonl"
    write_trace(reqs, p)
    out = tmp_path / "o"
    r = run_cli("model", str(model_run), "plots=false", f"trace={p}", "verdict.bootstrap=20", f"out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((out / "model.json").read_text())
    assert res["workload"]["label"] == "mytrace" and "preset_summary" not in res["workload"]
    assert "mytrace" in res["verdict"]["sentence"]


def test_model_explains_skipped_inputs(tmp_path):
    """A CPU run of llama3_8b layers: every layer point is skipped by the memory budget; the model says which,
    why, and the command that supplies them."""
    rr = run_cli("run", "benchmark=[layers,transfer]", "model=llama3_8b", "suite=quick", "only=[layer_prefill,"
                 "layer_decode,paged_onload]", "transfer.block_tokens=[16]", f"run.root={tmp_path}", "run.id=s",
                 "harness.progress=false")
    assert rr.returncode == 0, rr.stderr[-2000:]
    assert "no verdict from this run" in rr.stdout and "all 8 layer_prefill points skipped" in rr.stdout
    r = run_cli("model", str(tmp_path / "s"), "plots=false")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "layer_prefill points skipped: " in r.stderr and "harness.cpu_max_bytes" in r.stderr
    assert "python -m bench run benchmark=layers model=llama3_8b" in r.stderr


def test_storage_read_is_serial_and_host_hop_overlaps():
    """The storage tier's file read precedes the prefill (the replay reads the file first); only the host hop
    overlaps layer by layer. A prediction that hid the file read behind compute could not tell a file from HBM."""
    from bench.model.costs import Tier

    costs = Costs(Fit("p", [], np.array([0.0, 1e-3, 0.0]), 0, 3, {}), None, {}, 1000)
    costs.tiers["storage"] = Tier("storage", 1.0, 1e-4, "file_read then host hop", serial_gbps=2.0)
    over, serial = costs.load_split("storage", [1e6])  # 1e9 bytes
    assert serial[0] == pytest.approx(1e-4 + 1e9 / 2e9)
    assert over[0] + serial[0] == pytest.approx(1e-4 + 1e9 / 1e9)
    t = costs.prefill_with_load_s(100, 1e6, over, overlap=True, serial_s=serial)
    assert t[0] == pytest.approx(max(0.1, over[0]) + serial[0])  # compute 0.1 s hides the hop, not the read
    assert costs.tiers["storage"].serial_s(1e9, requests=4) == pytest.approx(4e-4 + 0.5)


@pytest.mark.parametrize("bench, metric, value", [
    ("paged_onload", "gbps", -0.185), ("paged_onload", "gbps", float("nan")),
    ("layer_prefill", "model_prefill_s", float("nan")), ("layer_decode", "model_decode_step_s", 0.0),
])
def test_corrupt_numbers_never_reach_the_verdict(model_run, tmp_path, bench, metric, value):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(model_run, run)
    lines = (run / "records.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    hit = next(i for i, r in enumerate(recs) if r["benchmark"] == bench and r["status"] == "ok")
    recs[hit]["metrics"][metric] = value
    (run / "records.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    r = run_cli("model", str(run), "plots=false")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1
    assert f"{bench} (" in r.stderr and f"{metric}=" in r.stderr and "corrupt" in r.stderr


def test_session_count_is_bounded_by_memory(model_run):
    r = run_cli("model", str(model_run), "plots=false", "fleet.sessions=100000000")
    assert r.returncode == 2 and "fleet.sessions=100000000 is not allowed: at most" in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_model_prints_capacity_knees_and_persistence_and_writes_the_curves(model_run, tmp_path):
    """bench model RUN trace=FILE: the capacity table with each tier's knee, how long KV must persist, the curves in
    model.json and two plots; the curve at the configured HBM capacity is the verdict's own HBM-only simulation."""
    trace = tmp_path / "sessions.jsonl"
    write_trace(generate(workload("agentic_coding"), 120, 512, seed=5), trace)
    out = tmp_path / "o"
    r = run_cli("model", str(model_run), f"trace={trace}", f"out={out}", "fleet.hbm_bytes=4000000000")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "capacity per GPU" in r.stdout and "(knee)" in r.stdout or "still gains" in r.stdout
    assert "How long KV must persist" in r.stdout and "Capacity:" in r.stdout
    res = json.loads((out / "model.json").read_text())
    cap = res["capacity"]
    assert cap["exact"] and set(cap["tiers"]) >= {"hbm", "host"}
    for t in cap["tiers"].values():
        hr = [p["hit_rate"] for p in t["points"]]
        assert all(b >= a - 1e-12 for a, b in zip(hr, hr[1:]))  # more capacity never loses hits
    hbm_pts = cap["tiers"]["hbm"]["points"]
    configured = res["simulated"]["session"]["capacity_blocks_per_instance"][0]
    at = [p for p in hbm_pts if p["blocks_per_instance"] == configured]
    assert at and at[0]["hit_rate"] == pytest.approx(res["verdict"]["tiers"]["hbm"]["hit_rate"], abs=1e-12)
    p = res["persistence"]
    assert p["hits"] > 0 and all(m is not None and m >= 0 for m in p["minutes"])
    assert p["minutes"] == sorted(p["minutes"])
    assert (out / "capacity.png").exists() and (out / "persistence.png").exists()
