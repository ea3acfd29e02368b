
import pytest
import torch
from omegaconf import OmegaConf

import bench.benchmarks.attention.benchmarks as attention
from bench.core.config import conf_dir
from bench.llm.layer import Layer
from bench.commands.overrides import compose_checked
from bench.llm.shapes import ModelShape, causal_pairs
from tests.helpers import run_benchmarks


def preset(name):
    return ModelShape.from_cfg(OmegaConf.load(conf_dir() / "model" / f"{name}.yaml"))


def test_kv_bytes_per_token_by_hand():
    assert preset("llama3_8b").kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert preset("llama3_70b").kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327680
    # MLA caches one latent of kv_lora_rank + rope per layer: (512 + 64) * 2 bytes * 61 layers
    assert preset("deepseek_v3").kv_bytes_per_token == (512 + 64) * 2 * 61 == 70272
    assert preset("mixtral_8x7b").kv_bytes_per_token == 131072


def test_linear_flops_llama3_8b_by_hand():
    attn = 4096 * 128 * (2 * 32 + 2 * 8)          # q, k, v, o
    mlp = 3 * 4096 * 14336                        # gate, up, down
    assert preset("llama3_8b").linear_flops_per_token() == 2 * 32 * (attn + mlp) == 13_958_643_712
    assert preset("llama3_8b").active_params() == pytest.approx(8.03e9, rel=0.002)
    assert preset("llama3_70b").active_params() == pytest.approx(70.55e9, rel=0.002)


def test_moe_active_parameters():
    m = preset("mixtral_8x7b")
    per_layer_attn = 4096 * 128 * (64 + 16)
    per_layer_moe = 2 * 3 * 4096 * 14336 + 4096 * 8   # two active experts + router
    assert m.active_params(with_embeddings=False) == 32 * (per_layer_attn + per_layer_moe)
    assert m.active_params() == pytest.approx(12.9e9, rel=0.01)     # published: 12.9B active
    assert m.total_params() == pytest.approx(46.7e9, rel=0.01)      # published: 46.7B total
    d = preset("deepseek_v3")
    assert d.active_params() == pytest.approx(37.5e9, rel=0.02)     # published: 37B active
    assert d.total_params() == pytest.approx(671e9, rel=0.01)       # published: 671B


def test_attention_flops_and_pairs():
    assert causal_pairs(4, 0) == 10 and causal_pairs(4, 6) == 34
    s = preset("llama3_8b")
    assert s.attn_score_flops(1000, decode=True, layers=1) == 2 * 32 * 256 * 1000
    assert s.decode_flops(2, 99, layers=1) == s.linear_flops_per_token(1) * 2 + 2 * 32 * 256 * 200
    d = preset("deepseek_v3")
    assert d.attn_dims(decode=True) == (128, 1, 576, 512)
    assert d.attn_dims(decode=False) == (128, 128, 192, 128)


def test_mla_absorbed_decode_equals_decompressed():
    s = ModelShape(name="m", layers=1, hidden=64, heads=4, kv_heads=4, head_dim=24, ffn=128, attention="mla",
                   kv_lora_rank=32, q_lora_rank=48, rope_head_dim=8, v_head_dim=16, dtype="float32")
    layer = Layer(s, 0, torch.float64, "cpu", 0)
    cache = layer.new_cache(2, 9, 1)
    x = torch.randn(2, 1, 64, dtype=torch.float64)
    a, _ = layer.forward(x, (cache[0].clone(),), 8, decode=True)
    b, _ = layer.forward(x, (cache[0].clone(),), 8, decode=False)
    assert torch.allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("n_ctx", [0, 5, 37])
@pytest.mark.parametrize("kernel", ["auto", "flash", "math"])
def test_prefill_kernels_match_float64_with_lower_right_causal_mask(kernel, n_ctx):
    """Every CPU kernel path (is_causal, the log-sum-exp split of cached + new keys, the materialized mask) computes
    the lower-right causal attention, with GQA and V narrower than Q/K (MLA prefill: flash pads V)."""
    from bench.llm import attention as A

    q, k, v = attention.make_qkv(2, 8, 2, 7, 7 + n_ctx, 24, 16, torch.float32, "cpu", 3)
    fn, facts = A.prefill(kernel, q, k, v, n_ctx)
    ref = attention.reference_attention(q, k, v, n_ctx, causal=True)
    out = fn()
    assert out.shape == ref.shape and facts["gqa"] == "native"
    assert (out.double() - ref).norm() / ref.norm() < 1e-5
    if n_ctx and kernel == "flash":  # only the causal pairs: cached keys unmasked, new keys causal, merged
        assert facts["causal"].startswith("split") and facts["pairs"] == "causal"
    if n_ctx and kernel != "flash":
        assert facts["pairs"].startswith("full rectangle")
    op, _ = A.prefill_op(kernel, q, k, v, n_ctx)  # the layers' form: decided once, applied to new tensors
    q2 = torch.randn_like(q)
    assert torch.allclose(op(q2, k, v), A.prefill(kernel, q2, k, v, n_ctx)[0](), atol=1e-6)


def _run(names, overrides, tmp_path):
    return run_benchmarks(names, ["suite=quick", "harness.time_budget_s=0.05", *overrides], tmp_path, cpu_sized=True)


def test_fast_wrong_attention_never_shows_up_as_a_result(tmp_path, monkeypatch):
    real = attention.build

    def wrong(state, backend, q, k, v, n_ctx, decode):
        fn, facts = real(state, backend, q, k, v, n_ctx, decode)
        return ((lambda: fn() * 1.05) if backend == "math" else fn), facts

    monkeypatch.setattr(attention, "build", wrong)
    recs = _run(["attn_decode"], ["model=tiny", "attention.cpu.backends=[math,best]",
                                  "attention.cpu.best_of=[math,flash]"], tmp_path)
    forced = [r for r in recs if r["params"]["backend"] == "math"]
    assert forced and all(r["status"] == "skipped" and "relative error" in r["reason"] for r in forced)
    assert all("tflops" not in r["metrics"] for r in forced)
    for r in (r for r in recs if r["params"]["backend"] == "best"):  # best never picks the wrong kernel
        assert r["status"] == "ok" and r["info"]["best_backend"] == "flash"
        assert "relative error" in r["info"]["candidates_skipped"]["math"]


MINI_MOE = ["model=mixtral_8x7b", "model.hidden=64", "model.heads=4", "model.kv_heads=2", "model.head_dim=16",
            "model.ffn=128", "model.moe_ffn=32", "model.experts=8", "model.experts_active=2", "model.layers=4",
            "model.dtype=float32"]
MINI_MLA = ["model=deepseek_v3", "model.hidden=64", "model.heads=4", "model.kv_heads=4", "model.head_dim=24",
            "model.v_head_dim=16", "model.rope_head_dim=8", "model.kv_lora_rank=32", "model.q_lora_rank=48",
            "model.ffn=128", "model.moe_ffn=32", "model.experts=8", "model.experts_active=2",
            "model.dense_layers=1", "model.layers=3", "model.dtype=float32"]


@pytest.mark.parametrize("model", [["model=tiny"], MINI_MOE, MINI_MLA], ids=["gqa", "moe", "mla_moe"])
def test_layers_and_attention_run_checked_on_cpu(model, tmp_path):
    one_size = ["attention.prefill_new=[128]", "attention.prefill_ctx=[0,256]", "attention.decode_batch=[2]",
                "attention.decode_ctx=[512]", "layers.prefill_new=[32]", "layers.prefill_ctx=[0,128]",
                "layers.decode_batch=[2]", "layers.decode_ctx=[128]"]  # every path once (with and without context)
    recs = _run(["attn_prefill", "attn_decode", "layer_prefill", "layer_decode"], [*model, *one_size], tmp_path)
    bad = [(r["benchmark"], r["params"], r["reason"]) for r in recs if r["status"] != "ok"]
    if "model=deepseek_v3" in model:  # flash has one head dim: MLA's absorbed decode (qk 40 / v 32 here) is not its
        assert {(b, p["backend"]) for b, p, why in bad} == {("attn_decode", "flash")}
        assert all("one head dim" in why for *_, why in bad)
        recs = [r for r in recs if r["status"] == "ok"]
    else:
        assert not bad
    for r in recs:
        m = r["metrics"]
        assert r["verified"] is True and m["check_rel_error"] < 1e-3
        assert 0 < m["fraction_of_roofline"] and m["tflops"] > 0 and m["bound"] in ("compute", "memory")
    pre = [r for r in recs if r["benchmark"] == "layer_prefill"]
    dec = [r for r in recs if r["benchmark"] == "layer_decode"]
    for r in pre:
        m = r["metrics"]
        layers = r["info"]["model_layers"]
        assert m["model_prefill_s"] == pytest.approx(m["per_layer_s"] * layers)
        assert m["prefill_s_per_token"] == pytest.approx(m["model_prefill_s"] / r["params"]["n_new"])
    assert any("scaling_error" in r["metrics"] for r in pre + dec)
    for r in dec:
        assert r["metrics"]["decode_tokens_per_s"] == pytest.approx(
            r["params"]["batch"] / r["metrics"]["model_decode_step_s"])
    if "model=deepseek_v3" in model:
        assert all(r["info"]["attention"] == "mla" and r["info"]["moe"] for r in pre + dec)
        for r in (r for r in recs if r["benchmark"] == "attn_decode"):  # the latent cache (32 + 8 wide), read once
            m = r["metrics"]
            assert m["model_kv_bytes"] == r["params"]["batch"] * r["params"]["ctx"] * (32 + 8) * 4 == m["bytes"]


def test_layer_counts_must_include_one():
    from bench.benchmarks import validate_run
    from bench.core.errors import UserError
    with pytest.raises(UserError, match="layers.layer_counts"):
        validate_run(compose_checked(["layers.layer_counts=[2,4]"]))
