"""The suite's headline figures beside raw torch references measured in the same process on the same GPU, and the
summary that fails when they disagree (used by scripts/gpu_check.sh).

    python scripts/gpu_check.py figures OUT_DIR     # GPU: suite point, then its raw reference, figure by figure
    python scripts/gpu_check.py summary OUT_DIR     # exit 1 unless every figure is within 5% of its reference

``figures`` appends one JSON line per figure to OUT_DIR/figures.jsonl the moment both sides are measured (a session
cut off keeps what it measured): the suite's value (its own benchmark, harness and record), the raw value (plain
torch: CUDA events around the call, median of repeats after warm-up, no tierbench code), the physical peak where the
fingerprint knows one, and the kernel each side ran. ``summary`` fails (exit 1) when a figure is more than
``--tolerance`` (5%) off its raw reference, above its physical peak, or missing: on a machine without GPU figures
it fails, by construction.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

TOLERANCE = 0.05
GiB = 1 << 30

# (figure, benchmark, overrides selecting exactly its point, params to find its record, metric, unit)
FIGURES = [
    ("h2d_pinned_1GiB", "h2d_pinned", ["benchmark=transfer", "transfer.sizes=[1073741824]"],
     {"size_bytes": GiB}, "gbps", "GB/s"),
    ("d2h_pinned_1GiB", "d2h_pinned", ["benchmark=transfer", "transfer.sizes=[1073741824]"],
     {"size_bytes": GiB}, "gbps", "GB/s"),
    ("h2d_pageable_1GiB", "h2d_pageable", ["benchmark=transfer", "transfer.sizes=[1073741824]"],
     {"size_bytes": GiB}, "gbps", "GB/s"),
    ("d2h_pageable_1GiB", "d2h_pageable", ["benchmark=transfer", "transfer.sizes=[1073741824]"],
     {"size_bytes": GiB}, "gbps", "GB/s"),
    ("d2d_1GiB_read_plus_write", "d2d_copy", ["benchmark=ceilings", "ceilings.copy_bytes=[1073741824]"],
     {"size_bytes": GiB}, "gbps", "GB/s"),
    ("gemm_bf16_8192", "gemm", ["benchmark=ceilings", "ceilings.gemm_n=[8192]"], {"n": 8192}, "tflops", "TFLOP/s"),
] + [
    (f"sdpa_prefill_auto_{n}" + (f"_after_{c}" if c else ""), "attn_prefill",
     ["benchmark=attention", "attention.backends=[auto]", f"attention.prefill_new=[{n}]", f"attention.prefill_ctx=[{c}]"],
     {"backend": "auto", "n_new": n, "n_ctx": c}, "tflops", "TFLOP/s")
    for n, c in ((1024, 0), (4096, 0), (16384, 0), (2048, 8192))
] + [
    ("sdpa_decode_auto_B64_L8192", "attn_decode",
     ["benchmark=attention", "attention.backends=[auto]", "attention.decode_batch=[64]", "attention.decode_ctx=[8192]"],
     {"backend": "auto", "batch": 64, "ctx": 8192}, "gbps", "GB/s"),
]
FIGURES += [
    # issue 29's device check: the UVA fetch beside a raw CuPy kernel doing the same gather (not kernels/warm.cu)
    ("warm_fetch_uva_4096B_x8192", "warm_fetch",
     ["benchmark=warm", "only=[warm_fetch]", "warm.methods=[uva_kernel]", "warm.row_bytes=[4096]", "warm.rows=[8192]",
      "warm.locality=[uniform]"],
     {"method": "uva_kernel", "row_bytes": 4096, "rows": 8192, "locality": "uniform"}, "gbps", "GB/s"),
]
COMMON = ["model=llama3_8b", "harness.progress=false", "harness.device=cuda", "run.analyze=false"]


# -- raw references: plain torch, nothing of tierbench ----------------------------------------------------------
def timed(fn, reps=20, warm=3) -> float:
    import torch

    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / 1e3)
    return statistics.median(out)


def raw(figure: str, params: dict) -> tuple[float, str]:
    """(value, what ran) of the raw reference for ``figure`` (its suite point's ``params``)."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda")
    if figure.startswith(("h2d", "d2h")):
        pinned = "pinned" in figure
        host = torch.empty(GiB, dtype=torch.uint8, pin_memory=pinned)
        host.fill_(1)
        d = torch.empty(GiB, dtype=torch.uint8, device=dev)
        fn = (lambda: d.copy_(host, non_blocking=pinned)) if figure.startswith("h2d") else \
            (lambda: host.copy_(d, non_blocking=pinned))
        return GiB / timed(fn, reps=10 if pinned else 5) / 1e9, "Tensor.copy_"
    if figure.startswith("d2d"):
        a = torch.empty(GiB, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        return 2 * GiB / timed(lambda: b.copy_(a)) / 1e9, "Tensor.copy_"
    if figure.startswith("gemm"):
        m = torch.randn(8192, 8192, dtype=torch.bfloat16, device=dev)
        m2 = torch.randn_like(m)
        return 2 * 8192 ** 3 / timed(lambda: m @ m2) / 1e12, "torch.matmul"
    if figure.startswith("warm_fetch"):
        return raw_row_gather(params["row_bytes"], params["rows"])
    from torch.nn.attention.bias import causal_lower_right

    dt = torch.bfloat16
    if figure.startswith("sdpa_prefill"):
        n, c = params["n_new"], params["n_ctx"]
        q = torch.randn(1, 32, n, 128, dtype=dt, device=dev)
        k = torch.randn(1, 8, n + c, 128, dtype=dt, device=dev)
        v = torch.randn_like(k)
        kw = {"attn_mask": causal_lower_right(n, n + c)} if c else {"is_causal": True}
        pairs = n * c + n * (n + 1) / 2
        t = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw))
        return 4 * 32 * 128 * pairs / t / 1e12, _choice(q, k, v, c == 0)
    q = torch.randn(64, 32, 1, 128, dtype=dt, device=dev)
    k = torch.randn(64, 8, 8192, 128, dtype=dt, device=dev)
    v = torch.randn_like(k)
    t = timed(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True))
    return 2 * 64 * 8 * 8192 * 128 * 2 / t / 1e9, _choice(q, k, v, False)


RAW_GATHER = r"""
extern "C" __global__ void gather(const uint4* pool, const long long* ids, long long n, long long wpr, uint4* dst) {
    for (long long w = blockIdx.x * (long long)blockDim.x + threadIdx.x; w < n * wpr;
         w += (long long)gridDim.x * blockDim.x) {
        long long r = w / wpr;
        dst[w] = pool[ids[r] * wpr + (w - r * wpr)];
    }
}
"""


def raw_row_gather(row_bytes: int, rows: int, pool_bytes: int = 4 * GiB) -> tuple[float, str]:
    """GB/s of ``rows`` random rows of a pinned host pool (the default suite's 4 GiB) gathered into HBM by a plain
    CuPy kernel reading host memory through UVA: 16-byte words, grid-stride, 8 blocks of 256 per SM."""
    import cupy
    import torch

    pool = torch.empty(pool_bytes, dtype=torch.uint8, pin_memory=True)
    pool.fill_(3)
    ptr = int(cupy.cuda.runtime.pointerGetAttributes(pool.data_ptr()).devicePointer) or pool.data_ptr()
    ids = torch.randperm(pool_bytes // row_bytes, device="cuda")[:rows].sort().values
    dst = torch.empty(rows * row_bytes, dtype=torch.uint8, device="cuda")
    kern = cupy.RawKernel(RAW_GATHER, "gather")
    wpr = row_bytes // 16
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    blocks = min(sms * 8, (rows * wpr + 255) // 256)
    args = (cupy.uint64(ptr), cupy.uint64(ids.data_ptr()), cupy.int64(rows), cupy.int64(wpr),
            cupy.uint64(dst.data_ptr()))
    t = timed(lambda: kern((blocks,), (256,), args))
    return rows * row_bytes / t / 1e9, "raw CuPy RawKernel gather through UVA"


def _choice(q, k, v, causal: bool) -> str:
    from bench.llm.attention import backend_of

    import torch

    try:
        return backend_of(torch._fused_sdp_choice(q, k, v, is_causal=causal, enable_gqa=True))
    except Exception as e:  # private API
        return f"unknown ({type(e).__name__})"


def peak_of(rec: dict, hardware: dict, metric: str):
    gpu = hardware.get("gpu") or {}
    if metric != "gbps":
        return None
    if rec["benchmark"] in ("d2d_copy", "attn_decode"):
        return gpu.get("hbm_peak_gbps")
    return (gpu.get("pcie") or {}).get("peak_gbps_per_direction")


def figures(out: Path) -> int:
    """Measure every figure (suite, then raw) and append it to out/figures.jsonl as soon as it is known."""
    import torch

    from bench.plan.suite import run_suite
    from bench.hw.device import select_device
    from bench.hw.fingerprint import fingerprint
    from bench.commands.overrides import compose_checked
    from bench.benchmarks import load_all
    from bench.core.store import RunStore, read_records

    if not torch.cuda.is_available():
        print("gpu_check figures: no CUDA device: no GPU figure can be measured here", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "figures.jsonl"
    device = select_device("cuda", 0)
    hardware = fingerprint(0, None)
    reg = load_all()
    for i, (name, bench, ovs, params, metric, unit) in enumerate(FIGURES):
        cfg = compose_checked(COMMON + ovs)
        store = RunStore(out / "suite" / f"{i:02d}-{name}", name)
        run_suite([reg[bench]], cfg, device, store, hardware=hardware)
        store.finish("complete")
        recs = [r for r in read_records(store.records_path)
                if all(r["params"].get(k) == v for k, v in params.items())]
        rec = recs[0] if recs else None
        suite = (rec or {}).get("metrics", {}).get(metric) if rec and rec["status"] == "ok" else None
        try:
            raw_v, raw_kernel = raw(name, params)
        except Exception as e:
            raw_v, raw_kernel = None, f"raw reference failed: {type(e).__name__}: {e}"
        row = {"figure": name, "unit": unit, "suite": suite, "raw": raw_v, "device": (rec or {}).get("device"),
               "gpu": (hardware.get("gpu") or {}).get("name"),
               "peak": peak_of(rec, hardware, metric) if rec else None,
               "suite_status": (rec or {}).get("status"), "suite_reason": (rec or {}).get("reason"),
               "suite_kernel": ((rec or {}).get("info") or {}).get("dispatched"), "raw_kernel": raw_kernel}
        with open(dest, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        torch.cuda.empty_cache()
    return 0


def judge(row: dict, tolerance: float) -> str:
    """'' when the figure holds, else why not."""
    s, r, peak = row.get("suite"), row.get("raw"), row.get("peak")
    if row.get("device") != "cuda":
        return f"not a GPU figure (device {row.get('device')})"
    if s is None:
        return f"suite figure missing ({row.get('suite_status')}: {row.get('suite_reason')})"
    if r is None:
        return f"raw reference missing ({row.get('raw_kernel')})"
    if peak and s > peak * 1.02:
        return f"{s:.4g} {row['unit']} is above the physical peak {peak:.4g}"
    if abs(s / r - 1) > tolerance:
        return f"{s / r - 1:+.1%} off the raw reference (allowed {tolerance:.0%})"
    return ""


def summary(out: Path, tolerance: float) -> int:
    path = out / "figures.jsonl"
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["figure"]] = row  # the latest measurement of each figure
    bad = 0
    print(f"{'figure':<30} {'suite':>10} {'raw':>10} {'peak':>10}  unit     kernels (suite / raw)  verdict")
    for name, *_ in FIGURES:
        row = rows.get(name)
        why = "missing: no figure measured (run scripts/gpu_check.sh quick on a GPU)" if row is None else \
            judge(row, tolerance)
        bad += bool(why)
        f = (lambda x: "-" if x is None else f"{x:.4g}")  # noqa: E731
        row = row or {}
        print(f"{name:<30} {f(row.get('suite')):>10} {f(row.get('raw')):>10} {f(row.get('peak')):>10}  "
              f"{row.get('unit', ''):<8} {row.get('suite_kernel') or '-'} / {row.get('raw_kernel') or '-'}  "
              f"{'ok' if not why else 'FAIL: ' + why}")
    print(f"{len(FIGURES) - bad} of {len(FIGURES)} figures within {tolerance:.0%} of their same-run raw reference"
          + (f"; {bad} failed" if bad else ""))
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["figures", "summary"])
    p.add_argument("out", type=Path)
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="allowed relative difference (0.05)")
    a = p.parse_args(argv)
    return figures(a.out) if a.step == "figures" else summary(a.out, a.tolerance)


if __name__ == "__main__":
    sys.exit(main())
