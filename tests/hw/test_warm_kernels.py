"""kernels/warm.cu without a GPU: nvcc compiles it for Hopper and Ampere with 16-byte accesses and warp shuffles, and
the address and arithmetic of each word (its __host__ __device__ functions), compiled into a host program, gather
and score exactly as numpy does."""
import shutil
import subprocess

import numpy as np
import pytest

from bench.hw.cuda_kernels import kernels_dir

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")

HOST_PROGRAM = r"""
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "warm.cu"

static std::vector<char> slurp(const char* path) {
    FILE* f = fopen(path, "rb"); std::vector<char> b; char buf[65536]; size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) b.insert(b.end(), buf, buf + n);
    fclose(f); return b;
}

int main(int argc, char** argv) {
    // argv: pool.bin src_ids.bin dst_ids.bin words_per_row n_dst_rows gather.out keys_bf16 keys_f32 q.bin d scores.out
    std::vector<char> pool = slurp(argv[1]), src = slurp(argv[2]), dsti = slurp(argv[3]);
    long long wpr = atoll(argv[4]), n = src.size() / 8, rows_out = atoll(argv[5]);
    std::vector<uint4> out(rows_out * wpr);
    const uint4* p = (const uint4*)pool.data();
    for (long long w = 0; w < n * wpr; ++w) {  // the kernel's grid-stride loop, one thread after another
        long long s, d;
        row_word((const long long*)src.data(), (const long long*)dsti.data(), wpr, w, &s, &d);
        out[d] = p[s];
    }
    FILE* f = fopen(argv[6], "wb"); fwrite(out.data(), 16, out.size(), f); fclose(f);

    std::vector<char> kb = slurp(argv[7]), kf = slurp(argv[8]), qb = slurp(argv[9]);
    long long d = atoll(argv[10]);
    const float* q = (const float*)qb.data();
    long long nk = kf.size() / (4 * d);
    std::vector<float> scores(2 * nk);
    for (long long i = 0; i < nk; ++i) {
        float a = 0, b = 0;
        for (long long j = 0; j < d / 8; ++j) a += dot_word_bf16(((const uint4*)kb.data())[i * (d / 8) + j], q + 8 * j);
        for (long long j = 0; j < d / 4; ++j) b += dot_word_f32(((const uint4*)kf.data())[i * (d / 4) + j], q + 4 * j);
        scores[i] = a; scores[nk + i] = b;
    }
    f = fopen(argv[11], "wb"); fwrite(scores.data(), 4, scores.size(), f); fclose(f);
    return 0;
}
"""


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_warm_kernels_compile_with_wide_loads(arch, tmp_path):
    ptx = tmp_path / "warm.ptx"
    subprocess.run(["nvcc", "-ptx", f"-arch={arch}", "-o", str(ptx), str(kernels_dir() / "warm.cu")], check=True,
                   capture_output=True)
    text = ptx.read_text()
    for entry in ("row_gather", "score_keys_bf16", "score_keys_f32"):
        assert f".entry {entry}" in text
    gather = text.split(".entry row_gather")[1].split(".entry")[0]
    assert "ld.global.nc.v4.u32" in gather and "st.global.v4.u32" in gather
    score = text.split(".entry score_keys_bf16")[1].split(".entry")[0]
    assert "shfl.sync.bfly" in score and "ld.global.nc.v4.u32" in score


def _bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits by truncation (what a bf16 tensor holds up to rounding; exact for the reference)."""
    return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_gather_and_scores_match_numpy_on_the_host(tmp_path):
    rng = np.random.default_rng(0)
    wpr, pool_rows, n = 3, 64, 17  # 48-byte rows
    pool = rng.integers(0, 256, size=(pool_rows, wpr * 16), dtype=np.uint8)
    src = rng.choice(pool_rows, size=n, replace=False).astype(np.int64)
    dst = rng.permutation(n).astype(np.int64)
    d, nk = 64, 9
    keys = rng.standard_normal((nk, d)).astype(np.float32)
    bits = _bf16_bits(keys)
    q = rng.standard_normal(d).astype(np.float32)
    files = {"pool": pool, "src": src, "dst": dst, "kb": bits, "kf": keys, "q": q}
    for name, arr in files.items():
        arr.tofile(tmp_path / f"{name}.bin")
    (tmp_path / "main.cu").write_text(HOST_PROGRAM)
    exe = tmp_path / "warm_host"
    subprocess.run(["nvcc", "-I", str(kernels_dir()), "-o", str(exe), str(tmp_path / "main.cu")], check=True,
                   capture_output=True)
    p = lambda name: str(tmp_path / name)  # noqa: E731
    subprocess.run([str(exe), p("pool.bin"), p("src.bin"), p("dst.bin"), str(wpr), str(n), p("gather.out"),
                    p("kb.bin"), p("kf.bin"), p("q.bin"), str(d), p("scores.out")], check=True, timeout=60)
    got = np.fromfile(tmp_path / "gather.out", dtype=np.uint8).reshape(n, wpr * 16)
    want = np.zeros_like(got)
    want[dst] = pool[src]
    assert np.array_equal(got, want)
    scores = np.fromfile(tmp_path / "scores.out", dtype=np.float32)
    as_bf16 = (bits.astype(np.uint32) << 16).view(np.float32)
    np.testing.assert_allclose(scores[:nk], as_bf16 @ q, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores[nk:], keys @ q, rtol=1e-5, atol=1e-4)
