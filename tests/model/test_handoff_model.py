"""The disaggregated handoff in the model (bench.model.handoff, bench.model.disaggregation): its cost formula by
hand, the link that bounds a split, the fit from handoff_request records, what each fleet.handoff mode moves, and
`bench model` end to end on a recorded run with the handoff records of a real CPU run (two processes, NIXL UCX)."""
import json
import re
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from bench.llm.shapes import ModelShape
from bench.model import fleet as F
from bench.model.handoff import HandoffCost, Link, decode_kept_tokens, handoff_cost, moved_tokens, refusal, splits
from tests.helpers import ROOT, RUNS, run_cli

HANDOFF_RECORDS = ROOT / "tests" / "data" / "handoff" / "records.jsonl"


def cost(**kw):
    base = dict(t0_s=1e-3, s_per_descriptor=1e-6, gbps=10.0, link_gbps=10.0, block_tokens=16, regions=4, layers=2,
                measured=True, source="by hand")
    return HandoffCost(**{**base, **kw})


def test_request_and_layerwise_exposure_by_hand():
    c = cost()
    kvb = 1000  # 160 tokens = 10 blocks x 4 chunks = 40 descriptors, 160,000 bytes
    assert c.descriptors([160])[0] == 40 and c.nbytes([160], kvb)[0] == 160_000
    whole = 1e-3 + 40e-6 + 160_000 / 10e9
    assert c.request_s([160], kvb, 1)[0] == pytest.approx(whole)
    assert c.request_s([160], kvb, 2)[0] == pytest.approx(1e-3 + 40e-6 + 80_000 / 10e9)  # each GPU its half
    assert c.request_s([0], kvb, 1)[0] == 0.0
    tau = 1e-3 + 20e-6 + 80_000 / 10e9  # one layer's list
    # a long prefill hides every layer but the last: exposed = one layer's list
    assert c.exposed_s([160], kvb, 1, [1.0], True)[0] == pytest.approx(tau)
    # no compute to hide behind: both layers' lists cost a t0 each, more than the whole request in one list, which
    # is what a stack that can do both sends then
    assert 2 * tau > whole and c.exposed_s([160], kvb, 1, [0.0], True)[0] == pytest.approx(whole)
    # in between: L tau - (L - 1) kappa, where that beats the whole list
    kappa = 1.02e-3
    assert tau < 2 * tau - kappa < whole
    assert c.exposed_s([160], kvb, 1, [2 * kappa], True)[0] == pytest.approx(2 * tau - kappa)
    assert c.exposed_s([160], kvb, 1, [1.0], False)[0] == pytest.approx(whole)  # not layer-wise: all of it
    # the layer-wise check predicts at the records' own rate, not at a lower link's
    slow = cost(gbps=0.001, measured_gbps=10.0)
    assert slow.layer_exposed_s(40, 160_000, 1.0, 2) == pytest.approx(tau)


def test_the_link_bounds_a_split_and_refuses_it_with_why():
    free = F.best_split(64, 1.0, 1.0)
    assert (free.prefill_gpus, free.requests_per_s, free.link_bound) == (32, 32.0, False)
    # each GPU's link carries 0.25 requests/s: 32:32 would need 1 request/s per GPU
    bound = F.best_split(64, 1.0, 1.0, link=0.25)
    assert bound.link_bound and bound.requests_per_s == pytest.approx(0.25 * 32)
    assert F.fixed_split(64, 0.5, 1.0, 1.0, link=0.25).requests_per_s == pytest.approx(8.0)
    link = Link(bytes_per_request=1e9, capacity_gbps=0.25)
    assert link.requests_per_s_per_gpu == pytest.approx(0.25)
    s = splits(64, 1.0, 1.0, link)
    assert s["allowed_count"] == 0 and not s["judged"]["allowed"]
    why = refusal(s, link, 64)
    assert why.startswith("the 32:32 split (the best without the link) would move 1 GB/s per GPU")
    assert "over the link's 250 MB/s; the link allows prefill GPUs none of 64" in why
    # a fixed split is judged itself: 8:56 needs 8 requests/s x 1 GB / 8 GPUs = 1 GB/s per GPU
    fixed = splits(64, 1.0, 1.0, Link(1e9, 2.0), fixed=8)
    assert fixed["judged"]["prefill_gpus"] == 8 and fixed["judged"]["link_gbps_per_gpu"] == pytest.approx(1.0)
    assert refusal(fixed, Link(1e9, 2.0), 64) == ""
    assert "(fleet.prefill_fraction)" in refusal(splits(64, 1.0, 1.0, Link(1e9, 0.5), fixed=8), Link(1e9, 0.5), 64)
    # no prefill left (every token reused) still hands the KV over from a prefill GPU: 0:64 carries nothing
    nothing = F.best_split(64, 0.0, 1.0, link=0.5)
    assert nothing.prefill_gpus >= 1 and nothing.link_bound
    assert F.best_split(64, 0.0, 1.0).prefill_gpus == 0  # without a handoff (nothing moves) it may
    wide = splits(64, 1.0, 1.0, Link(1e9, 2.0))
    assert wide["allowed_prefill_gpus"] == [[1, 63]] and refusal(wide, Link(1e9, 2.0), 64) == ""
    # a split with little prefill needs little link: 1 GB/s per request-per-second over the smaller side
    some = splits(8, 3.0, 1.0, Link(1e9, 0.5))
    assert all(lo >= 1 for lo, _ in some["allowed_prefill_gpus"]) and some["allowed_count"] < 7


def records(t0=20e-6, c=1.5e-6, gbps=12.0, jitter=0.0):
    """handoff_request records of a tiny model at two context lengths and four block sizes, from a known cost."""
    shape = ModelShape.from_cfg(_tiny())
    rows, rng = [], np.random.default_rng(0)
    for ctx in (1024, 4096):
        for bt in (16, 32, 64, 256):
            n = -(-ctx // bt) * shape.layers * shape.kv_components
            b = -(-ctx // bt) * bt * shape.kv_bytes_per_token
            t = (t0 + n * c + b / (gbps * 1e9)) * (1 + jitter * rng.standard_normal())
            rows.append({"benchmark": "handoff_request", "status": "ok", "param.op": "read", "param.memory": "dram",
                         "param.backend": "UCX", "param.context_tokens": ctx, "param.block_tokens": bt,
                         "metric.descriptors": n, "metric.bytes": b, "metric.median_s": t})
    return pd.DataFrame(rows), shape


def _tiny():
    from omegaconf import OmegaConf

    from bench.core.config import conf_dir

    return OmegaConf.load(conf_dir() / "model" / "tiny.yaml")


def fleet_cfg(**kw):
    base = dict(link_gbps=None, handoff_block_tokens=None, handoff="full", mode="disaggregated",
                hbm_cache_fraction=0.3)
    return SimpleNamespace(**{**base, **kw})


def test_the_cost_is_refitted_from_handoff_records_and_held_to_the_link():
    df, shape = records()
    c, warnings = handoff_cost(df, shape, fleet_cfg())
    assert c.measured and not warnings
    assert c.t0_s == pytest.approx(20e-6, rel=0.02) and c.s_per_descriptor == pytest.approx(1.5e-6, rel=0.02)
    assert c.gbps == pytest.approx(12.0, rel=0.02) and c.link_gbps == c.gbps
    assert c.block_tokens == 256 and c.regions == shape.layers * shape.kv_components
    assert "read/dram/UCX, 8 points" in c.source
    slow, warnings = handoff_cost(df, shape, fleet_cfg(link_gbps=5.0, handoff_block_tokens=16))
    assert slow.gbps == 5.0 and slow.link_gbps == 5.0 and slow.block_tokens == 16
    assert any("fleet.link_gbps=5 is below" in w for w in warnings)
    est, warnings = handoff_cost(pd.DataFrame(), shape, fleet_cfg())
    assert not est.measured and est.gbps == 50.0 and est.t0_s == 0 and est.s_per_descriptor == 0
    assert any("estimate" in w and "benchmark=handoff" in w for w in warnings)


def test_what_each_mode_moves():
    req = SimpleNamespace(input_tokens=np.array([1000.0, 3000.0]), new_tokens=np.array([1000.0, 500.0]))
    kept = decode_kept_tokens(SimpleNamespace(hit_tokens=np.array([[0, 0, 0], [2048, 512, 0]])))  # HBM hits only
    assert kept.tolist() == [0, 2048]
    assert moved_tokens("full", req, kept).tolist() == [1000, 3000]
    assert moved_tokens("new", req, kept).tolist() == [1000, 500]
    assert moved_tokens("sim", req, kept).tolist() == [1000, 952]


@pytest.fixture(scope="module")
def handoff_run(tmp_path_factory):
    """The recorded CPU run cpu_a with the handoff records of a real CPU run of the same tiny model appended
    (tests/data/handoff: NIXL UCX between two processes, DRAM, read and write)."""
    dst = tmp_path_factory.mktemp("hrun") / "cpu_a"
    shutil.copytree(RUNS / "cpu_a", dst)
    with open(dst / "records.jsonl", "a") as f:
        f.write(HANDOFF_RECORDS.read_text())
    return dst


def model(run, tmp_path, *args):
    out = tmp_path / "-".join(a.replace("=", "_").replace(".", "_") for a in args)
    r = run_cli("model", str(run), "plots=false", "verdict.bootstrap=40", "fleet.sessions=300", f"out={out}", *args,
                env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "model.json").read_text()), r.stdout


def test_full_and_new_give_different_ttfts_and_verdicts(handoff_run, tmp_path):
    full, out_full = model(handoff_run, tmp_path, "fleet.handoff=full")
    new, _ = model(handoff_run, tmp_path, "fleet.handoff=new")
    hf, hn = full["handoff"], new["handoff"]
    assert hf["cost"]["measured"] and "handoff_request read/dram/UCX" in hf["cost"]["source"]
    assert hf["moved"]["share_of_input"] == pytest.approx(1.0, abs=0.01)  # whole blocks: a little over
    assert hn["moved"]["share_of_input"] < 0.5 * hf["moved"]["share_of_input"]
    tier = hf["verdict_config"]
    assert hn["configs"][tier]["exposed_s_mean"] < hf["configs"][tier]["exposed_s_mean"]
    # TTFT: unloaded (the prefill on its instance, then what the handoff leaves), and in the goodput replay
    assert hf["configs"][tier]["unloaded_ttft_p90_s"] > hn["configs"][tier]["unloaded_ttft_p90_s"]
    assert hf["configs"][tier]["ttft_share"] > hn["configs"][tier]["ttft_share"] > 0
    gf, gn = full["goodput"]["configs"][tier], new["goodput"]["configs"][tier]
    assert gf["handoff_exposed_s_mean"] > gn["handoff_exposed_s_mean"] > 0
    # the verdict: its words carry the handoff at once; its number where the link binds. At 20 MB/s per GPU the
    # whole request's KV (full) cannot cross at the fleet's rate, the new tokens' can
    assert full["verdict"]["details"] != new["verdict"]["details"]
    slow_full, _ = model(handoff_run, tmp_path, "fleet.handoff=full", "fleet.link_gbps=0.02")
    slow_new, _ = model(handoff_run, tmp_path, "fleet.handoff=new", "fleet.link_gbps=0.02")
    assert slow_full["handoff"]["configs"][tier]["link_bound"] and not slow_new["handoff"]["configs"][tier]["link_bound"]
    assert slow_full["verdict"]["speedup"]["point"] < slow_new["verdict"]["speedup"]["point"]
    assert slow_new["verdict"]["speedup"]["point"] == pytest.approx(new["verdict"]["speedup"]["point"])
    assert (slow_full["verdict"]["disaggregation"]["ratio"]["point"]
            < slow_new["verdict"]["disaggregation"]["ratio"]["point"])
    # model.json says which splits the handoff allows, and how the modes compare
    for r in (full, new):
        c = r["handoff"]["configs"][tier]
        assert c["splits"]["allowed_count"] >= 1 and c["splits"]["allowed_prefill_gpus"]
        d = r["verdict"]["disaggregation"]
        assert d["favours"] in ("disaggregated", "colocated", "neither")
        assert d["ratio"]["low"] <= d["ratio"]["point"] * 1.0001 and d["ratio"]["high"] >= d["ratio"]["point"] * 0.9999
    assert "handoff prefill -> decode (fleet.handoff=full" in out_full and "share of TTFT" in out_full
    assert "Disaggregated over colocated" in " ".join(full["verdict"]["details"])


def test_a_link_too_slow_for_the_split_bounds_it_and_says_so(handoff_run, tmp_path):
    r, out = model(handoff_run, tmp_path, "fleet.link_gbps=0.0001")
    tier = r["handoff"]["verdict_config"]
    c = r["handoff"]["configs"][tier]
    assert c["link_bound"] and c["link_utilization"] == pytest.approx(1.0, rel=1e-6)
    assert c["refused"].startswith("the ") and "over the link's 100 KB/s" in c["refused"]
    assert any(w.startswith("handoff: the ") for w in r["warnings"])
    assert any("the handoff's link bounds the fleet" in x for x in r["verdict"]["reasons"])
    assert r["verdict"]["disaggregation"]["favours"] == "colocated"
    assert "(bound)" in out and "over the link's 100 KB/s" in out


def test_without_handoff_records_the_cost_is_an_estimate(tmp_path):
    r, _ = model(RUNS / "cpu_a", tmp_path, "fleet.handoff=sim")
    h = r["handoff"]
    assert not h["cost"]["measured"] and h["cost"]["gbps"] == 50.0 and h["mode"] == "sim"
    assert any("handoff priced as an estimate" in x for x in r["verdict"]["reasons"])
    assert math.isfinite(r["verdict"]["disaggregation"]["ratio"]["point"])


@pytest.mark.parametrize("arg, allowed", [("fleet.handoff=all", "one of full, new, sim"),
                                          ("fleet.link_gbps=-1", "GB/s per GPU in (0, 100000)"),
                                          ("fleet.handoff_block_tokens=0", "an integer >= 1")])
def test_bad_handoff_values_are_one_line(arg, allowed, tmp_path):
    r = run_cli("model", str(RUNS / "cpu_a"), arg, f"out={tmp_path}")
    assert r.returncode == 2 and allowed in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_edge_cases_give_no_corrupt_number(handoff_run, tmp_path):
    """Every token reused (no prefill left, the KV still handed over), a what-if hit rate with sim vs new, a fixed
    split the link carries: the figures stay physical and the words say what the fleet does."""
    r, out = model(handoff_run, tmp_path, "hit_rate=1.0", "fleet.link_gbps=0.0001")
    h = r["handoff"]
    c = h["configs"][h["verdict_config"]]
    assert c["prefill_gpus"] >= 1 and c["link_bound"] and c["link_utilization"] == pytest.approx(1.0, rel=1e-6)
    assert 0 <= c["hidden_fraction"] <= 1 and c["ttft_share"] <= 1
    gp = r["goodput"]["configs"][h["verdict_config"]]
    assert gp["goodput_rps"] == 0 and "KV handoff" in gp["reason"] and gp["handoff_ttft_share_at"] == "unloaded"
    assert re.search(r"link at [0-9.]+% of", " ".join(r["verdict"]["details"]))
    assert not re.search(r"\d{4,}%", out)  # no 4293735% anywhere
    sim, _ = model(handoff_run, tmp_path, "hit_rate=0.9", "fleet.handoff=sim")
    new, _ = model(handoff_run, tmp_path, "hit_rate=0.9", "fleet.handoff=new")
    # sim: what the decode pool's simulated cache misses, not the what-if's share
    assert sim["handoff"]["moved"]["share_of_input"] != pytest.approx(new["handoff"]["moved"]["share_of_input"])
    fixed, _ = model(handoff_run, tmp_path, "fleet.prefill_fraction=0.5", "fleet.link_gbps=0.03")
    c = fixed["handoff"]["configs"][fixed["handoff"]["verdict_config"]]
    assert (c["prefill_gpus"], c["decode_gpus"]) == (32, 32) and not c["link_bound"] and c["refused"] == ""
    assert c["splits"]["judged"]["why"] == "fleet.prefill_fraction"
    assert not any(w.startswith("handoff: the ") for w in fixed["warnings"])
