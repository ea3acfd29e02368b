import shutil
import subprocess

import pytest
import torch
from omegaconf import OmegaConf

import bench.benchmarks.transfer.paged as paged
from bench.core.config import kernels_dir
from bench.hw.device import Device
from bench.plan.suite import run_suite
from bench.llm.kvlayout import PagedPool, kernel_copies, per_block_copies, staged_copies
from bench.commands.overrides import compose_checked
from bench.benchmarks import load_all
from bench.llm.shapes import ModelShape
from bench.core.store import RunStore, read_records
from tests.helpers import run_benchmarks


def shape(name):
    return ModelShape.from_cfg(OmegaConf.load(kernels_dir().parent / "conf" / "model" / f"{name}.yaml"))


@pytest.mark.parametrize("name, per_token, chunk16, chunks", [
    ("llama3_8b", 131072, 16 * 8 * 128 * 2, 64),     # 32 layers x K,V; one 32 KiB chunk per 16-token block
    ("llama3_70b", 327680, 16 * 8 * 128 * 2, 160),   # 80 layers x K,V
])
def test_layouts_compute_byte_counts(name, per_token, chunk16, chunks):
    s = shape(name)
    assert s.kv_bytes_per_token == per_token
    for layout in ("layer_major", "block_major"):
        pool = PagedPool.allocate(s.__class__(**{**s.__dict__, "layers": 2}), 16, layout, 3, "cpu", 0)
        assert pool.block_bytes == 2 * 16 * 2 * 8 * 128 * 2
    lm = PagedPool(s, 16, "layer_major", 0, [])
    bm = PagedPool(s, 16, "block_major", 0, [])
    assert lm.chunk_bytes == chunk16 and lm.n_src == chunks
    assert bm.chunk_bytes == bm.block_bytes == 16 * per_token and bm.n_src == 1
    assert lm.chunk_bytes * lm.n_src == bm.block_bytes


@pytest.mark.parametrize("layout", ["layer_major", "block_major"])
@pytest.mark.parametrize("method", ["memcpy_per_block", "staged", "uva_kernel"])
def test_every_method_moves_exactly_the_selected_blocks(layout, method):
    s = shape("tiny")
    pool = PagedPool.allocate(s, 16, layout, 12, "cpu", 3)
    idx = torch.tensor([7, 2, 11, 0])
    n = len(idx)
    packed = torch.zeros(n * pool.block_bytes, dtype=torch.uint8)
    staging = torch.empty_like(packed)
    make = {"memcpy_per_block": lambda off: per_block_copies(pool, idx.tolist(), packed, off),
            "staged": lambda off: staged_copies(pool, idx, packed, staging, off),
            "uva_kernel": lambda off: kernel_copies(pool, idx, packed, off)[0]}[method]
    make(True)()
    assert torch.equal(packed.view(n, -1), pool.gather_reference(idx))
    new = torch.randint(0, 256, packed.shape, dtype=torch.uint8)
    packed.copy_(new)
    before_rest = pool.gather_reference(torch.tensor([1, 3, 4]))
    make(False)()
    assert torch.equal(pool.gather_reference(idx), new.view(n, -1))
    assert torch.equal(pool.gather_reference(torch.tensor([1, 3, 4])), before_rest)


QUICK_TINY = ["suite=quick", "model=tiny", "harness.progress=false", "harness.device=cpu", "harness.time_budget_s=0.05"]


def _cfg(*overrides):
    return compose_checked([*QUICK_TINY, *overrides])


def _run(names, overrides, tmp_path):
    return run_benchmarks(names, [*QUICK_TINY, *overrides], tmp_path)


def test_injected_corrupt_block_fails_the_point_loudly(tmp_path, monkeypatch):
    real = paged.staged_copies

    def corrupting(pool, idx, packed, staging, offload):
        run = real(pool, idx, packed, staging, offload)

        def bad():
            run()
            packed.view(len(idx), -1)[2, 5] ^= 0xFF  # flip one byte of the third block
        return bad

    monkeypatch.setattr(paged, "staged_copies", corrupting)
    recs = _run(["paged_offload"], ["transfer.methods=[staged]", "transfer.layouts=[block_major]",
                                    "transfer.block_tokens=[16]"], tmp_path)
    assert len(recs) == 1
    r = recs[0]
    assert r["status"] == "error" and "block 2" in r["reason"] and "differs" in r["reason"]
    assert "gbps" not in r["metrics"]


def test_cpu_transfer_suite_runs_every_benchmark_verified(tmp_path):
    names = [b.name for b in load_all().values() if b.family == "transfer"]
    recs = _run(names, ["transfer.sizes=[4096,65536]", "transfer.block_tokens=[16]"], tmp_path)
    assert {r["benchmark"] for r in recs} == set(names)
    assert all(r["status"] == "ok" and r["verified"] is True for r in recs), [r["reason"] for r in recs]
    paged_recs = [r for r in recs if r["benchmark"].startswith("paged_")]
    assert len(paged_recs) == 2 * 2 * 3  # directions x layouts x methods
    for r in paged_recs:
        m = r["metrics"]
        assert m["gbps"] > 0 and 0 < m["fraction_of_contiguous"] and m["us_per_block"] > 0
        assert r["info"]["block_bytes"] == 16 * 2048
    small = [r for r in recs if r["benchmark"] == "h2d_pinned" and r["params"]["size_bytes"] == 4096][0]
    # the amortised cost of back-to-back copies is the point's own time; the latency is one copy issued and
    # completed (inner=1, host round trip), timed as its own reference: on the CPU both are the same synchronous
    # memcpy (no queue to hide anything), so their order is noise and only what holds by construction is asserted
    # (the GPU ordering, a queued copy's latency above its amortised cost, is the simulated timeline's test)
    m = small["metrics"]
    assert m["amortized_us_per_copy"] == pytest.approx(m["median_s"] * 1e6)
    assert 0 < m["latency_us"] <= m["latency_p90_us"] and 0 < m["amortized_us_per_copy"]


def test_bad_transfer_values_are_refused():
    from bench.core.errors import UserError
    from bench.benchmarks import validate_run

    with pytest.raises(UserError, match=r"transfer.methods='dma'.*memcpy_per_block, staged, uva_kernel"):
        validate_run(_cfg("transfer.methods=[dma]"))
    with pytest.raises(UserError, match=r"transfer.block_tokens=-16"):
        validate_run(_cfg("transfer.block_tokens=[-16]"))


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_16_byte_accesses(arch, tmp_path):
    src = kernels_dir() / "kv_transfer.cu"
    ptx = tmp_path / "k.ptx"
    subprocess.run(["nvcc", "-ptx", f"-arch={arch}", "-o", str(ptx), str(src)], check=True, capture_output=True)
    text = ptx.read_text()
    assert ".entry kv_gather" in text and ".entry kv_scatter" in text
    assert "ld.global.nc.v4.u32" in text and "st.global.v4.u32" in text
    subprocess.run(["nvcc", "-cubin", f"-arch={arch}", "-o", str(tmp_path / "k.cubin"), str(src)], check=True,
                   capture_output=True)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_pacing_kernel_reads_the_global_timer(tmp_path):
    """The tier pacer holds a stream by wall-clock time (%globaltimer), not SM cycles that slow under load."""
    ptx = tmp_path / "pace.ptx"
    subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-o", str(ptx), str(kernels_dir() / "pace.cu")], check=True,
                   capture_output=True)
    text = ptx.read_text()
    assert ".entry hold_ns" in text and "%globaltimer" in text and "clock" not in text.split(".entry")[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_uva_kernel_on_gpu(tmp_path):
    pytest.importorskip("cupy")
    cfg = compose_checked(["suite=quick", "model=llama3_8b", "harness.progress=false",
                           "transfer.methods=[uva_kernel]", "transfer.block_tokens=[16]"])
    reg = load_all()
    store = RunStore(tmp_path / "run", "g")
    run_suite([reg["paged_offload"], reg["paged_onload"]], cfg, Device("cuda"), store)
    recs = read_records(tmp_path / "run" / "records.jsonl")
    assert all(r["status"] == "ok" and r["verified"] for r in recs), [r["reason"] for r in recs]
