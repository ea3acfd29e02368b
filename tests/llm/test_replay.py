import json

import pytest
import torch
from omegaconf import OmegaConf

from bench.core.config import conf_dir
from bench.model.workload import Workload
from bench.llm.replay import MODES, Engine, decode_spans, make_sessions
from bench.llm.shapes import ModelShape
from tests.helpers import run_cli


def shape(name, **kw):
    s = OmegaConf.load(conf_dir() / "model" / f"{name}.yaml")
    return ModelShape.from_cfg({**OmegaConf.to_container(s), **kw})


@pytest.mark.parametrize("model", ["gqa", "mla_moe"])
def test_all_modes_compute_the_same_function(tmp_path, model):
    if model == "gqa":
        sh = shape("tiny")
    else:
        sh = ModelShape(name="m", layers=2, hidden=64, heads=4, kv_heads=4, head_dim=24, ffn=128, attention="mla",
                        kv_lora_rank=32, q_lora_rank=48, rope_head_dim=8, v_head_dim=16, experts=4,
                        experts_active=2, moe_ffn=32, dtype="float32")
    eng = Engine.build(sh, 2, torch.float64, "cpu", vocab_rows=64, workdir=str(tmp_path))
    w = Workload.from_cfg(OmegaConf.load(conf_dir() / "workload" / "customer_support.yaml"))
    (s,) = make_sessions(w, 1, 3, 0.01, 64, seed=1)
    path = str(tmp_path / "kv.bin")
    out = {m: eng.run_session(s, m, path if m == "reuse_storage" else None) for m in MODES}
    ref = out["recompute"]["logits"]
    assert ref.shape[0] == len(s.turns) + sum(len(t.out_ids) for t in s.turns)
    for m in MODES[1:]:
        assert torch.allclose(out[m]["logits"], ref, rtol=1e-9, atol=1e-9), m
        assert torch.equal(out[m]["logits"].argmax(-1), ref.argmax(-1))
    # reuse prefills only the new tokens; recompute prefills the whole history every turn
    assert out["reuse_hbm"]["prefill_tokens"] < out["recompute"]["prefill_tokens"]
    assert out["reuse_host"]["load_bytes"] > 0 and out["reuse_hbm"]["load_bytes"] == 0


def test_a_lost_kv_load_is_caught(tmp_path, monkeypatch):
    eng = Engine.build(shape("tiny"), 2, torch.float64, "cpu", vocab_rows=64, workdir=str(tmp_path))
    w = Workload.from_cfg(OmegaConf.load(conf_dir() / "workload" / "customer_support.yaml"))
    (s,) = make_sessions(w, 1, 3, 0.01, 64, seed=1)
    ref = eng.run_session(s, "recompute")["logits"]
    monkeypatch.setattr(Engine, "load", lambda self, cache, ctx, host, path=None: None)  # forget to load
    bad = eng.run_session(s, "reuse_host")["logits"]
    assert not torch.isfinite(bad).all() or not torch.allclose(bad, ref)  # poisoned KV shows


def test_validate_command_on_cpu(tmp_path):
    r = run_cli("validate", "suite=quick", "model=tiny", f"run.root={tmp_path}", "run.id=v",
                "harness.progress=false", "transfer.sizes=[4096]", "transfer.methods=[uva_kernel]",
                "storage.request_bytes=[65536]", "storage.queue_depths=[1]", "storage.patterns=[sequential]",
                "workload=customer_support", "run.analyze=false",  # the points the prediction prices, no more
                "only=[layer_prefill,layer_decode,paged_onload,file_read,e2e_agentic_replay]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "end-to-end replay vs cost model" in r.stdout
    from bench.core.store import load, read_records
    from bench.model.replay_check import replay_predictions

    raw = read_records(tmp_path / "v" / "records.jsonl")
    recs = [x for x in raw if x["benchmark"] == "e2e_agentic_replay"]
    assert {x["params"]["mode"] for x in recs} == set(MODES)
    pred = replay_predictions(load(tmp_path / "v"), raw)  # the prediction is made after the run, from its plan
    for x in recs:
        assert x["status"] == "ok" and x["verified"], x["reason"]
        assert x["info"]["plan"]["layers_run"] >= 1  # what the prediction prices: the turns the replay ran
        p = pred[x["params"]["mode"]]
        assert p["speedup_predicted"] > 0 and "speedup_prediction_error" in p, p
        assert x["info"]["workload"] == "customer_support"
        assert x["info"]["decode_graphs"] is False and x["info"]["decode_mode"] == "eager"  # no graphs on the CPU
        assert "eager_decode" not in p  # nor expected there
    assert [x for x in recs if x["params"]["mode"] == "recompute"][0]["metrics"]["speedup_measured"] == 1.0
    # the same records from a GPU: its eager decode is named beside every prediction, and by the model's analysis
    from bench.model.analyze import _validation_reasons
    from bench.core.store import RECORDS

    gpu = tmp_path / "gpu"
    gpu.mkdir()
    raw = [{**x, "device": "cuda"} if x["benchmark"] == "e2e_agentic_replay" else x for x in raw]
    (gpu / RECORDS).write_text("".join(json.dumps(x) + "\n" for x in raw))
    pred = replay_predictions(load(tmp_path / "v"), raw)
    assert all(p["eager_decode"] == "eager" for p in pred.values()), pred
    assert "the replay decoded eager" in _validation_reasons(load(tmp_path / "v"), gpu)


def test_validate_refuses_modes_without_baseline():
    r = run_cli("validate", "validate.modes=[reuse_hbm]")
    assert r.returncode == 2 and "must include recompute" in r.stderr


@pytest.mark.parametrize("model", ["gqa", "mla"])
def test_decode_at_a_device_position_is_the_same_step(model):
    """The decode step a CUDA graph replays (position as a device tensor, attention over a power-of-two span with
    the slots past the position masked) computes what the eager step does: same KV written, same output; the
    engine's span step gives the eager engine's logits (checked here on the CPU, where no graph is captured)."""
    from bench.llm.layer import DecodeAt, Layer

    sh = shape("tiny") if model == "gqa" else ModelShape(
        name="m", layers=2, hidden=64, heads=4, kv_heads=4, head_dim=24, ffn=128, attention="mla", kv_lora_rank=32,
        q_lora_rank=48, rope_head_dim=8, v_head_dim=16, dtype="float32")
    layer = Layer(sh, 0, torch.float64, "cpu", seed=3)
    ctx, cap = 37, 64
    x = torch.randn(1, 1, sh.hidden, dtype=torch.float64)
    a, b = layer.new_cache(1, cap, 5), layer.new_cache(1, cap, 5)
    y_ref, _ = layer.forward(x, a, ctx, True)
    pos = torch.tensor([ctx])
    mask = torch.zeros(cap, dtype=torch.float64).masked_fill_(torch.arange(cap) > pos, float("-inf"))
    y_at, _ = layer.forward(x, b, 0, True, at=DecodeAt(pos, cap, mask))
    assert torch.allclose(y_at, y_ref, rtol=1e-10, atol=1e-10)
    for ta, tb in zip(a, b):
        assert torch.equal(ta, tb)  # the same slot written with the same K/V, nothing else touched

    eng = Engine.build(sh, 2, torch.float64, "cpu", vocab_rows=64)
    cache = eng.session_cache(300)
    assert cache[0][0].shape[-2 if model == "gqa" else 1] == 300 and eng.session_cache(200) is cache
    ids = torch.arange(40) % 64
    eng.forward(ids, cache, 0, decode=False)
    want = eng.forward(ids[:1] + 1, cache, 40, decode=True)
    eng._tok, eng._pos = (ids[:1] + 1).clone(), torch.tensor([40])
    eng._lengths = torch.ones(1, dtype=torch.int32)
    spans = decode_spans(300)
    assert spans == [256, 300]
    got = eng._decode_step(next(sp for sp in spans if sp > 40))
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert eng.decode_reads(40) == 41  # eager (no graph on the CPU): exactly the context and the new token


@pytest.mark.parametrize("capacity", [1, 255, 256, 257, 5000, 20000, 131072])
def test_captured_decode_spans_cover_every_position_with_little_overread(capacity):
    """The spans a captured decode step attends: at most DECODE_GRAPHS of them, the last the capacity, and for every
    context c < capacity a span > c that reads under one granularity of masked slots more than c + 1."""
    from bench.llm.replay import DECODE_GRAPHS, DECODE_SPAN

    spans = decode_spans(capacity)
    assert len(spans) <= DECODE_GRAPHS and spans[-1] == capacity and spans == sorted(set(spans))
    gran = spans[0] if len(spans) > 1 else max(capacity, 1)
    assert gran >= min(DECODE_SPAN, capacity)
    for c in {0, capacity // 3, capacity - 1}:
        span = next(sp for sp in spans if sp > c)
        assert span - (c + 1) < gran
