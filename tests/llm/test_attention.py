"""Attention as serving stacks run it (issue 27), on the CPU: the kernel torch dispatches recorded (torch's dispatch
choice mocked where only a GPU would make it), `best` is the fastest candidate and shares its timing, one kernel
family per layer run and a fit that refuses mixed kernels, memory only for what a kernel allocates, the planner's
decode rate, the read-only L2 flush, NUMA placement of pageable buffers (the GPU check's summary:
tests/scripts/test_gpu_check.py)."""
from __future__ import annotations

import pytest
import torch

from bench.core.errors import UserError
from tests.helpers import RUNS, run_benchmarks


def _run(names, overrides, tmp_path):
    return run_benchmarks(names, ["suite=quick", "harness.time_budget_s=0.05", "model=tiny", *overrides], tmp_path,
                          cpu_sized=True)


def test_auto_records_the_kernel_torch_dispatches(tmp_path, monkeypatch):
    """backend=auto is SDPA unforced; the record names what torch's dispatcher chose (here mocked to cuDNN, what
    torch >= 2.9 picks on an H100/H200), never the name of the backend asked for."""
    from torch.nn.attention import SDPBackend

    calls = []

    def choice(q, k, v, **kw):
        calls.append(kw)
        return int(SDPBackend.CUDNN_ATTENTION)

    monkeypatch.setattr(torch, "_fused_sdp_choice", choice)
    recs = _run(["attn_prefill"], ["attention.cpu.backends=[auto]", "attention.cpu.prefill_new=[64]",
                                   "attention.cpu.prefill_ctx=[0]"], tmp_path)
    (r,) = recs
    assert r["status"] == "ok" and r["info"]["kernel"] == "auto" and r["info"]["dispatched"] == "cudnn"
    assert any(kw.get("is_causal") and kw.get("enable_gqa") for kw in calls)  # asked with the call's own flags


def test_best_is_the_fastest_candidate_and_shares_its_rows_timing(tmp_path):
    recs = _run(["attn_decode"], ["attention.cpu.backends=[flash,math,best]", "attention.cpu.best_of=[flash,math]",
                                  "attention.cpu.decode_batch=[2]", "attention.cpu.decode_ctx=[256]"], tmp_path)
    by = {r["params"]["backend"]: r for r in recs}
    assert all(r["status"] == "ok" for r in recs)
    best = by["best"]
    cand = best["info"]["candidates_s"]
    assert set(cand) == {"flash", "math"}
    chosen = min(cand, key=cand.get)
    assert best["info"]["best_backend"] == chosen
    # one timing per kernel and shape in a run: the best row is the chosen kernel's own row, to the sample
    assert best["metrics"]["median_s"] == by[chosen]["metrics"]["median_s"] == cand[chosen]
    # GB/s counts the model's KV bytes once (K and V of 2 kv heads x 64 dims x 256 tokens x 2 sequences, fp32)
    assert best["metrics"]["model_kv_bytes"] == 2 * 256 * 2 * 2 * 64 * 4 == best["metrics"]["bytes"]


def test_layers_run_one_kernel_family_and_say_which(tmp_path):
    recs = _run(["layer_prefill", "layer_decode"], ["layers.cpu.prefill_new=[32]", "layers.cpu.prefill_ctx=[0,64]",
                                                    "layers.cpu.layer_counts=[1]"], tmp_path)
    assert all(r["status"] == "ok" for r in recs)
    pre = [r for r in recs if r["benchmark"] == "layer_prefill"]
    kernels = {r["info"]["attention_kernel"] for r in pre}
    assert len(kernels) == 1 and {r["params"]["n_ctx"] for r in pre} == {0, 64}  # no context and after it alike
    choice = pre[0]["info"]["attention_choice"]
    assert kernels == {min(choice["prefill"]["candidates_s"], key=choice["prefill"]["candidates_s"].get)}
    forced = _run(["layer_prefill"], ["layers.attention=math", "layers.cpu.prefill_new=[32]",
                                      "layers.cpu.prefill_ctx=[64]", "layers.cpu.layer_counts=[1]"], tmp_path / "f")
    assert forced[0]["info"]["attention_kernel"] == "math"


def test_the_cost_fit_refuses_records_of_different_kernels():
    from bench.model.costs import fit_decode, fit_prefill
    from bench.core.store import load

    df = load(RUNS / "cpu_a")
    assert fit_prefill(df).kernel is None  # a run that did not record kernels: one curve, as before
    rows = df.index[df["benchmark"] == "layer_prefill"]
    df.loc[rows[::2], "attention_kernel"] = "cudnn"
    df.loc[rows[1::2], "attention_kernel"] = "flash"
    with pytest.raises(UserError, match=r"2 attention kernels \(.*cudnn: \d+ points.*attention_kernel="):
        fit_prefill(df)
    fit = fit_prefill(df, "cudnn")
    assert fit.kernel == "cudnn" and fit.n_points == len(rows[::2])
    with pytest.raises(UserError, match="attention_kernel=efficient: no layer_decode record ran it"):
        fit_decode(df, "efficient")


def test_plan_h200_plans_auto_points_fits_every_cudnn_decode_and_keeps_the_budget():
    from bench.commands.plan import plan_jobs

    ((_, plan, _),) = plan_jobs(["plan.gpu=h200_141gb"])
    att = [p for p in plan.points if p.benchmark in ("attn_prefill", "attn_decode")]
    for bench in ("attn_prefill", "attn_decode"):
        assert any(p.benchmark == bench and p.params["backend"] == "auto" and p.status == "run" for p in att)
        assert any(p.benchmark == bench and p.params["backend"] == "best" and p.status == "run" for p in att)
    assert not [p for p in att if p.status == "no_fit"]  # cuDNN takes GQA natively: no expansion charged
    big = next(p for p in att if p.benchmark == "attn_decode" and p.params == {"backend": "cudnn", "batch": 256,
                                                                                 "ctx": 32768})
    kv = 256 * 32768 * 2 * 8 * 128 * 2
    assert big.status == "run" and big.device_bytes < 1.01 * kv + (2 << 20)
    # issue 27's 5.5 minutes are the suite it was written against, without the warm family (issue 29) and the handoff
    # family (issue 38), each with its own budget
    later_s = plan.families["warm"]["est_s"] + plan.families["handoff"]["est_s"]
    assert plan.total_s - later_s <= 5.5 * 60
    for name, fam in plan.families.items():
        assert fam["over_budget"] == 0 and (fam["budget_s"] is None or fam["est_s"] <= fam["budget_s"]), name


def test_planned_decode_time_is_kv_bytes_at_the_targets_measured_rate():
    """A decode kernel reads its KV at the copy rate x its measured efficiency (no hidden halving of the rate)."""
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all
    from bench.harness.cost import Ctx
    from bench.plan.targets import load

    cfg = compose_checked(["plan.gpu=h200_141gb"])
    t = load("h200_141gb")
    c = Ctx(cfg, {"backend": "flash", "batch": 64, "ctx": 8192}, t, None, "attn_decode")
    (timed,) = load_all()["attn_decode"].cost(c).timed
    kv = 64 * 8192 * 2 * 8 * 128 * 2
    assert timed.call_s == pytest.approx(kv / (t.hbm_gbps * 1e9 * t.efficiency["attention_decode"]["flash"]), rel=0.02)
    assert "H200" in t.efficiency["source"]


def test_l2_flush_reads_and_never_writes(monkeypatch):
    from bench.hw.device import Device, L2Flusher

    dev = Device("cpu")
    monkeypatch.setattr(Device, "l2_bytes", lambda self: 4096)
    f = L2Flusher(dev)
    before = f.buf.clone()
    f()
    assert f.active and torch.equal(f.buf, before) and int(f.out) == 1  # read all of it, wrote one byte elsewhere


def test_pageable_host_buffers_are_placed_on_the_gpus_node(monkeypatch):
    from contextlib import contextmanager

    from bench.hw import hostmem

    seen = []

    @contextmanager
    def fake(node):
        seen.append(node)
        yield node

    monkeypatch.setattr(hostmem, "on_numa_node", fake)
    buf, facts = hostmem.host_buffer(8192, False, type("Dev", (), {"is_cuda": True})(), numa_node=1)
    assert seen == [1] and facts["host_numa_node"] == 1 and facts["pinned"] is False
