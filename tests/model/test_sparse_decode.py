"""The warm tier in the throughput model (bench.model.warm): the fetch fit recovers a known line, and sparse decode
prices each k from it against the dense decode of the same fleet."""
import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from bench.model.steps import FleetSizing

from bench.core.config import FleetConfig, SparseConfig
from bench.llm.shapes import ModelShape
from bench.model.warm import clause, fit_line, fit_warm, sparse_decode
from tests.helpers import ROOT

T0, GBPS = 8e-6, 20.0  # the line the synthetic warm_fetch records lie on


def _shape():
    return ModelShape.from_cfg(OmegaConf.load(ROOT / "conf" / "model" / "llama3_8b.yaml"))


def _records(row: int, rows=(256, 2048, 16384), methods=("uva_kernel", "cpu_gather"), slow=2.0, extra=()):
    out = []
    for m_i, method in enumerate(methods):
        for k in rows:
            for rb in (row, *extra):
                b = k * rb
                out.append({"benchmark": "warm_fetch", "status": "ok", "param.method": method, "param.rows": k,
                            "param.row_bytes": rb, "param.locality": "uniform", "metric.bytes": b,
                            "metric.median_s": T0 + b / (GBPS / slow ** m_i * 1e9)})
    return pd.DataFrame(out)


class LinearCosts:
    """Decode step time of batch b at context c: 2 ms + 1 ns per token of KV read (a memory-bound decode)."""

    def decode_step_s(self, b, ctx):
        return 2e-3 + 1e-9 * b * ctx * 1000


def test_fit_line_recovers_the_line_and_refuses_a_flat_one():
    x = [1e5, 1e6, 1e7]
    t0, gbps, rel = fit_line(x, [T0 + v / (GBPS * 1e9) for v in x])
    assert t0 == pytest.approx(T0, rel=1e-6) and gbps == pytest.approx(GBPS, rel=1e-6) and rel < 1e-9
    with pytest.raises(ValueError, match="does not grow"):
        fit_line(x, [1e-3, 1e-3, 1e-3])


def test_fit_at_the_preset_row_per_method():
    row = _shape().kv_bytes_per_token_per_layer
    f = fit_warm(_records(row, extra=(64,)), row)["fits"]["host"]
    assert set(f) == {"uva_kernel", "cpu_gather"}
    assert f["uva_kernel"].gbps == pytest.approx(GBPS, rel=1e-6) and f["uva_kernel"].t0_s == pytest.approx(T0)
    assert f["cpu_gather"].gbps == pytest.approx(GBPS / 2, rel=1e-6)
    assert f["uva_kernel"].fitted_row_bytes == row and f["uva_kernel"].points == 3


def test_one_rows_value_is_no_fit_with_a_note():
    row = 4096
    out = fit_warm(_records(row, rows=(256,)), row)
    assert out["fits"] == {} and any("fewer than two rows values" in n for n in out["notes"])


# an H200-sized instance: 141 GB of HBM, 16 GB of weights, one GPU, 64k tokens of decode context, dense batch 8
SIZING = FleetSizing(hbm_bytes_per_gpu=141e9, weight_bytes=16e9, gpus_per_instance=1, mean_decode_context=65536.0,
                     decode_batch=8, decode_batch_limited_by="test")


def _sparse(df, **sp):
    shape = _shape()
    sp_cfg = OmegaConf.merge(OmegaConf.structured(SparseConfig), sp)
    fl = OmegaConf.structured(FleetConfig)
    return sparse_decode(df, LinearCosts(), shape, fl, sp_cfg, SIZING)


def test_sparse_decode_prices_each_k_from_the_fit():
    shape = _shape()
    row = shape.kv_bytes_per_token_per_layer
    sd = _sparse(_records(row), top_k=[256, 2048, 8192])
    rows = [r for r in sd["rows"] if r["tier"] == "host"]
    assert [r["k"] for r in rows] == [256, 2048, 8192]
    for r in rows:
        assert r["method"] == "uva_kernel"  # the faster fit wins
        fetch_rows = r["batch"] * r["k"] * (1 - 0.6)
        want = shape.layers * (T0 + fetch_rows * row / (GBPS * 1e9))
        assert r["fetch_s"] == pytest.approx(want, rel=1e-6)
        assert r["step_s"] == pytest.approx(r["compute_s"] + r["fetch_s"])  # exposed by default
        assert r["hbm_kv_bytes_per_gpu"] == pytest.approx(r["batch"] * (r["k"] + 64) * shape.kv_bytes_per_token)
        assert r["hbm_freed_bytes_per_gpu"] > 0 and r["context_tokens_per_gpu"] > sd["dense"]["context_tokens_per_gpu"]
    per_seq = [r["step_s"] / r["batch"] for r in rows]
    assert per_seq == sorted(per_seq), "a larger k costs each sequence more per step"
    over = _sparse(_records(row), top_k=[2048], overlap=True)["rows"][0]
    assert over["step_s"] == pytest.approx(max(over["compute_s"], over["fetch_s"]))
    assert "Sparse decode (60% of rows kept between steps, fetch exposed)" in clause(sd)


def test_k_at_the_context_is_skipped_and_no_records_no_sparse():
    row = _shape().kv_bytes_per_token_per_layer
    sd = _sparse(_records(row), top_k=[65536])
    assert "nothing left out" in sd["rows"][0]["skipped"] and clause(sd) == ""
    none = _sparse(pd.DataFrame({"benchmark": [], "status": []}))
    assert "no warm_fetch records" in none["skipped"] and clause(none) == ""


def test_warm_capacity_caps_the_batch():
    row = _shape().kv_bytes_per_token_per_layer
    shape = _shape()
    fl = OmegaConf.merge(OmegaConf.structured(FleetConfig), {"host_bytes_per_gpu": 3 * 65536 * shape.kv_bytes_per_token})
    sd = sparse_decode(_records(row), LinearCosts(), shape, fl, OmegaConf.structured(SparseConfig), SIZING)
    r = sd["rows"][0]
    assert r["batch"] == 3 and "warm-tier capacity" in r["batch_limit"]
    assert math.isclose(r["warm_bytes_per_gpu"], 3 * 65536 * shape.kv_bytes_per_token)
