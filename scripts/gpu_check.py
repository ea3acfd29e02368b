"""The GPU check's Python side (scripts/gpu_check.sh runs it): the suite's headline figures beside raw references
measured in the same process on the same GPU, the summary that judges them, the kernels compiled for real, the
check of what a device command leaves in OUT, the plan of the quick step, and the landing of a returned run.

    python scripts/gpu_check.py env OUT           # imports, every kernel of kernels/ compiled (CuPy on a GPU, nvcc
                                                  # to PTX as the stand-in without one): OUT/env.json
    python scripts/gpu_check.py figures OUT       # suite point, then its raw reference, figure by figure:
                                                  # OUT/figures.jsonl (a line the moment both sides are measured)
    python scripts/gpu_check.py summary DIR       # exit 1 unless every figure is a GPU figure within 5% of its raw
                                                  # reference and under its physical peak
    python scripts/gpu_check.py plan [--gpu T]    # the quick step's seconds on target T (default h200_141gb)
    python scripts/gpu_check.py outbox OUT        # exit 1 when OUT breaks the device's limits on what comes back
    python scripts/gpu_check.py land DIR [--into results/reference]
                                                  # the returned verdict archive -> <into>/<target>/

Raw references use no tierbench code and are timed as the suite times (bench.harness.timing): device work as many
back-to-back calls between two CUDA events queued behind a stream-hold spin (so the host's enqueue, the dispatcher
and CausalBias's Python are not timed), host-issued work (pageable copies) on the host clock around issue and a
synchronize, the L2 flushed before each sample exactly where the suite flushes it (GEMM, attention), and the median
of the samples. Each side is labelled with the kernel that actually ran. Without a GPU every figure runs as a CPU
stand-in at small sizes (the same code path, host clock) and the summary says "no GPU figure" for each.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python scripts/gpu_check.py` puts scripts/ first; the project may be only here
    sys.path.insert(1, str(ROOT))

TOLERANCE = 0.05
GiB, MiB = 1 << 30, 1 << 20
OUTBOX_FILES, OUTBOX_DEPTH, OUTBOX_FILE_BYTES = 8, 2, 16 * MiB  # what the GPU machine sends back
OUTBOX_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
COMMON = ["model=llama3_8b", "harness.progress=false", "run.analyze=false"]


@dataclass(frozen=True)
class Figure:
    """One headline figure: the suite point (``bench`` with ``overrides``, found by ``params``) and its raw twin.
    ``cpu``: the same figure's overrides/params at CPU stand-in sizes."""

    name: str
    bench: str
    overrides: tuple
    params: dict
    metric: str
    unit: str
    cpu_overrides: tuple = ()
    cpu_params: dict = field(default_factory=dict)

    def sized(self, cuda: bool) -> tuple[list, dict]:
        if cuda:
            return list(self.overrides), dict(self.params)
        return list(self.cpu_overrides), {**self.params, **self.cpu_params}


def _copy_figures() -> list[Figure]:
    out = []
    for name, bench in (("h2d_pinned", "h2d_pinned"), ("d2h_pinned", "d2h_pinned"), ("h2d_pageable", "h2d_pageable"),
                        ("d2h_pageable", "d2h_pageable")):
        out.append(Figure(f"{name}_1GiB", bench, ("benchmark=transfer", f"transfer.sizes=[{GiB}]"),
                          {"size_bytes": GiB}, "gbps", "GB/s",
                          ("benchmark=transfer", f"transfer.sizes=[{16 * MiB}]"), {"size_bytes": 16 * MiB}))
    out.append(Figure("d2d_1GiB_read_plus_write", "d2d_copy", ("benchmark=ceilings", f"ceilings.copy_bytes=[{GiB}]"),
                      {"size_bytes": GiB}, "gbps", "GB/s",
                      ("benchmark=ceilings", f"ceilings.copy_bytes=[{16 * MiB}]"), {"size_bytes": 16 * MiB}))
    out.append(Figure("gemm_bf16_8192", "gemm", ("benchmark=ceilings", "ceilings.gemm_n=[8192]"), {"n": 8192},
                      "tflops", "TFLOP/s", ("benchmark=ceilings", "ceilings.gemm_n=[256]"), {"n": 256}))
    return out


def _attention_figures() -> list[Figure]:
    out = []
    cpu_sizes = {1024: 128, 4096: 256, 16384: 512, 2048: 128, 8192: 256}
    for n, c in ((1024, 0), (4096, 0), (16384, 0), (2048, 8192)):
        cn, cc = cpu_sizes[n], cpu_sizes.get(c, 0)
        ovs = lambda n, c: ("benchmark=attention", "attention.backends=[auto]",  # noqa: E731
                            f"attention.prefill_new=[{n}]", f"attention.prefill_ctx=[{c}]")
        out.append(Figure(f"sdpa_prefill_auto_{n}" + (f"_after_{c}" if c else ""), "attn_prefill", ovs(n, c),
                          {"backend": "auto", "n_new": n, "n_ctx": c}, "tflops", "TFLOP/s", ovs(cn, cc),
                          {"n_new": cn, "n_ctx": cc}))
    dec = lambda b, L: ("benchmark=attention", "attention.backends=[auto]", f"attention.decode_batch=[{b}]",  # noqa
                        f"attention.decode_ctx=[{L}]")
    out.append(Figure("sdpa_decode_auto_B64_L8192", "attn_decode", dec(64, 8192),
                      {"backend": "auto", "batch": 64, "ctx": 8192}, "gbps", "GB/s", dec(4, 512),
                      {"batch": 4, "ctx": 512}))
    return out


def _warm_figures() -> list[Figure]:
    # issue 29's device check: the UVA fetch beside a raw CuPy kernel doing the same gather (not kernels/warm.cu)
    ovs = lambda rows, pool: ("benchmark=warm", "only=[warm_fetch]", "warm.methods=[uva_kernel]",  # noqa: E731
                              "warm.row_bytes=[4096]", f"warm.rows=[{rows}]", "warm.locality=[uniform]",
                              f"warm.pool_bytes={pool}")
    return [Figure("warm_fetch_uva_4096B_x8192", "warm_fetch", ovs(8192, 4 * GiB),
                   {"method": "uva_kernel", "row_bytes": 4096, "rows": 8192, "locality": "uniform"}, "gbps", "GB/s",
                   ovs(256, 32 * MiB), {"rows": 256})]


FIGURES = _copy_figures() + _attention_figures() + _warm_figures()


# -- raw references: plain torch / CuPy, nothing of tierbench -------------------------------------------------------
SPIN_HZ = 2.0e9  # torch.cuda._sleep counts SM cycles
MIN_SAMPLE_S = 50e-6  # the suite's CUDA clock batches calls until a sample lasts 10x its 5 us resolution
MAX_INNER = 256  # ... never more calls behind one spin than a stream queue holds


def device_time(fn: Callable[[], object], flush: Optional[Callable[[], object]] = None, budget_s: float = 0.5,
                min_samples: int = 10, max_samples: int = 200) -> float:
    """Median seconds per call of device work ``fn``: ``inner`` back-to-back calls between two CUDA events queued
    behind a spin kernel that holds the stream until the host has queued them all (a sample whose start event had
    already run is redone with a longer spin); ``flush`` (untimed, synchronized) before each sample, one call per
    sample then, as the suite's L2-cold points."""
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    per_call = max(a.elapsed_time(b) * 1e-3, 1e-9)
    inner = 1 if flush is not None else max(1, min(MAX_INNER, math.ceil(MIN_SAMPLE_S / per_call)))
    spin, samples, misses, t0 = 50_000, [], 0, time.perf_counter()
    while len(samples) < min_samples or (time.perf_counter() - t0 < budget_s and len(samples) < max_samples):
        if flush is not None:
            flush()
            torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(spin)
        t = time.perf_counter()
        start.record()
        for _ in range(inner):
            fn()
        hidden = not start.query()
        end.record()
        enqueue = time.perf_counter() - t
        end.synchronize()
        if enqueue * SPIN_HZ > spin * 0.5:
            spin = min(int(enqueue * SPIN_HZ * 4), 100_000_000)
        if hidden:
            samples.append(start.elapsed_time(end) * 1e-3 / inner)
        else:
            misses += 1
            if misses > 20 + len(samples):
                raise RuntimeError("the spin never hid the enqueue: host-issued work, time it on the host clock")
    return statistics.median(samples)


def host_time(fn: Callable[[], object], sync: Callable[[], object] = lambda: None, budget_s: float = 0.5,
              min_samples: int = 10, max_samples: int = 200) -> float:
    """Median seconds per call on the host clock (perf_counter) around the call and ``sync``: host-issued device
    work (pageable copies block the host), or host work on the CPU stand-in."""
    for _ in range(2):
        fn()
    sync()
    samples, t0 = [], time.perf_counter()
    while len(samples) < min_samples or (time.perf_counter() - t0 < budget_s and len(samples) < max_samples):
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


class RawL2Flush:
    """Reads a buffer of twice the GPU's L2 (as the suite's read-only flush does): nothing of the timed work's
    inputs stays in L2."""

    def __init__(self):
        import torch

        l2 = int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0) or 64 * MiB)
        self.buf = torch.ones(2 * l2, dtype=torch.uint8, device="cuda")
        self.out = torch.empty((), dtype=torch.uint8, device="cuda")

    def __call__(self):
        import torch

        torch.amax(self.buf, dim=0, out=self.out)


def raw(fig: Figure, params: dict, cuda: bool) -> tuple[float, str]:
    """(value in ``fig.unit``, what ran) of the raw reference for ``fig`` at the suite point's ``params``."""
    import torch
    import torch.nn.functional as F

    dev = torch.device("cuda" if cuda else "cpu")
    timer = (lambda fn, flush=None: device_time(fn, flush)) if cuda else (lambda fn, flush=None: host_time(fn))
    flush = RawL2Flush() if cuda else None
    if fig.bench in ("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable"):
        n, pinned = params["size_bytes"], "pinned" in fig.bench
        host = torch.empty(n, dtype=torch.uint8, pin_memory=pinned and cuda)
        host.fill_(1)
        d = torch.empty(n, dtype=torch.uint8, device=dev)
        fn = (lambda: d.copy_(host, non_blocking=pinned)) if fig.bench.startswith("h2d") else \
            (lambda: host.copy_(d, non_blocking=pinned))
        if cuda and not pinned:  # the driver stages pageable copies and blocks the host: the host clock
            return n / host_time(fn, torch.cuda.synchronize) / 1e9, "Tensor.copy_ (pageable, host clock)"
        return n / timer(fn) / 1e9, "Tensor.copy_" + ("" if cuda else " (CPU stand-in)")
    if fig.bench == "d2d_copy":
        n = params["size_bytes"]
        a = torch.ones(n, dtype=torch.uint8, device=dev)
        b = torch.empty_like(a)
        return 2 * n / timer(lambda: b.copy_(a)) / 1e9, "Tensor.copy_"
    if fig.bench == "gemm":
        n = params["n"]
        dt = torch.bfloat16 if cuda else torch.float32
        m, m2 = torch.randn(n, n, dtype=dt, device=dev), torch.randn(n, n, dtype=dt, device=dev)
        out = torch.empty_like(m)
        return 2 * n ** 3 / timer(lambda: torch.matmul(m, m2, out=out), flush) / 1e12, f"torch.matmul ({dt})"
    if fig.bench == "warm_fetch":
        return raw_row_gather(params["row_bytes"], params["rows"], cuda)
    dt = torch.bfloat16 if cuda else torch.float32
    if fig.bench == "attn_prefill":
        n, c = params["n_new"], params["n_ctx"]
        q = torch.randn(1, 32, n, 128, dtype=dt, device=dev)
        k = torch.randn(1, 8, n + c, 128, dtype=dt, device=dev)
        v = torch.randn_like(k)
        if c:
            from torch.nn.attention.bias import causal_lower_right

            kw, kernel = {"attn_mask": causal_lower_right(n, n + c)}, _lower_right_kernel(q, k, v)
        else:
            kw, kernel = {"is_causal": True}, _choice(q, k, v, True)
        pairs = n * c + n * (n + 1) / 2
        t = timer(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kw), flush)
        return 4 * 32 * 128 * pairs / t / 1e12, kernel
    b, L = params["batch"], params["ctx"]
    q = torch.randn(b, 32, 1, 128, dtype=dt, device=dev)
    k = torch.randn(b, 8, L, 128, dtype=dt, device=dev)
    v = torch.randn_like(k)
    t = timer(lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True), flush)
    return 2 * b * 8 * L * 128 * q.element_size() / t / 1e9, _choice(q, k, v, False)


RAW_GATHER = r"""
extern "C" __global__ void gather(const uint4* pool, const long long* ids, long long n, long long wpr, uint4* dst) {
    for (long long w = blockIdx.x * (long long)blockDim.x + threadIdx.x; w < n * wpr;
         w += (long long)gridDim.x * blockDim.x) {
        long long r = w / wpr;
        dst[w] = pool[ids[r] * wpr + (w - r * wpr)];
    }
}
"""


def raw_row_gather(row_bytes: int, rows: int, cuda: bool, pool_bytes: Optional[int] = None) -> tuple[float, str]:
    """GB/s of ``rows`` random rows of a pinned host pool (the default suite's 4 GiB) gathered into HBM by a plain
    CuPy kernel reading host memory through UVA (its device pointer): 16-byte words, grid-stride, 8 blocks of 256
    per SM. The CPU stand-in gathers with index_select from a 32 MiB pool."""
    import torch

    pool_bytes = pool_bytes or (4 * GiB if cuda else 32 * MiB)
    if not cuda:
        pool = torch.ones(pool_bytes // row_bytes, row_bytes, dtype=torch.uint8)
        ids = torch.randperm(pool.shape[0])[:rows].sort().values
        dst = torch.empty(rows, row_bytes, dtype=torch.uint8)
        t = host_time(lambda: torch.index_select(pool, 0, ids, out=dst))
        return rows * row_bytes / t / 1e9, "torch.index_select (CPU stand-in)"
    import cupy

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
    # CuPy launches on the legacy default stream, which is torch's current stream here (the events' stream)
    t = device_time(lambda: kern((blocks,), (256,), args))
    return rows * row_bytes / t / 1e9, "raw CuPy RawKernel gather through UVA"


def _choice(q, k, v, causal: bool) -> str:
    """The kernel unforced SDPA dispatches for these inputs (torch's own, private, dispatcher)."""
    import torch

    names = {"FLASH_ATTENTION": "flash", "CUDNN_ATTENTION": "cudnn", "EFFICIENT_ATTENTION": "efficient",
             "MATH": "math"}
    try:
        from torch.nn.attention import SDPBackend

        choice = int(torch._fused_sdp_choice(q, k, v, is_causal=causal, enable_gqa=True))
        return next((nm for member, nm in names.items() if hasattr(SDPBackend, member)
                     and int(getattr(SDPBackend, member)) == choice), f"backend {choice}")
    except Exception as e:  # private API
        return f"unknown ({type(e).__name__})"


def _lower_right_kernel(q, k, v) -> str:
    """What torch's CausalBias (lower-right) dispatch runs for these inputs: FlashAttention, else the
    memory-efficient kernel, else a materialized mask."""
    if q.device.type != "cuda":
        return "materialized lower-right mask (CPU stand-in)"
    from torch.backends.cuda import SDPAParams, can_use_efficient_attention, can_use_flash_attention

    p = SDPAParams(q, k, v, None, 0.0, False, True)
    if can_use_flash_attention(p):
        return "flash (CausalBias lower-right)"
    if can_use_efficient_attention(p):
        return "efficient (CausalBias lower-right)"
    return "math (materialized lower-right mask)"


# -- the figures ------------------------------------------------------------------------------------------------
def figures(out: Path) -> int:
    """Measure every figure (suite point, then raw) and append it to out/figures.jsonl as soon as it is known; the
    suite runs go to out/figures-runs/ (packed by the shell step). Without a GPU: CPU stand-ins at small sizes."""
    import torch

    from bench.benchmarks import load_all
    from bench.commands.overrides import compose_checked
    from bench.core.store import RunStore, read_records
    from bench.hw.device import select_device
    from bench.hw.fingerprint import fingerprint
    from bench.plan.suite import run_suite

    cuda = torch.cuda.is_available()
    if not cuda:
        print("gpu_check figures: no CUDA device: CPU stand-ins at small sizes (no GPU figure)", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "figures.jsonl"
    device = select_device("cuda" if cuda else "cpu", 0)
    hardware = fingerprint(0, None)
    reg = load_all()
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for i, fig in enumerate(FIGURES):
        ovs, params = fig.sized(cuda)
        t0 = time.perf_counter()
        cfg = compose_checked(COMMON + [f"harness.device={'cuda' if cuda else 'cpu'}"] + ovs)
        store = RunStore(out / "figures-runs" / f"{stamp}-{i:02d}-{fig.name}", fig.name)
        try:
            run_suite([reg[fig.bench]], cfg, device, store, hardware=hardware)
        finally:
            store.finish("complete")
        recs = [r for r in read_records(store.records_path)
                if r["benchmark"] == fig.bench and all(r["params"].get(k) == v for k, v in params.items())]
        rec = recs[0] if recs else {}
        metrics = rec.get("metrics") or {}
        suite = metrics.get(fig.metric) if rec.get("status") == "ok" else None
        t1 = time.perf_counter()
        try:
            raw_v, raw_kernel = raw(fig, params, cuda)
        except Exception as e:
            raw_v, raw_kernel = None, f"raw reference failed: {type(e).__name__}: {str(e)[:200]}"
        info = rec.get("info") or {}
        row = {"figure": fig.name, "unit": fig.unit, "params": params, "suite": suite, "raw": raw_v,
               "ratio": (suite / raw_v) if suite and raw_v else None, "device": rec.get("device"),
               "gpu": (hardware.get("gpu") or {}).get("name"), "peak": metrics.get(f"{fig.metric}_peak"),
               "suite_status": rec.get("status", "missing"), "suite_reason": rec.get("reason"),
               "suite_kernel": info.get("dispatched") or info.get("kernel") or info.get("method"),
               "suite_clock": metrics.get("clock"), "suite_n": metrics.get("n"), "suite_noise": metrics.get("noise"),
               "l2_flushed": rec.get("l2_flushed"), "raw_kernel": raw_kernel,
               "suite_s": round(t1 - t0, 2), "raw_s": round(time.perf_counter() - t1, 2)}
        with open(dest, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        if cuda:
            torch.cuda.empty_cache()
    return 0


def judge(row: dict, tolerance: float) -> str:
    """'' when the figure holds, else why not."""
    s, r, peak = row.get("suite"), row.get("raw"), row.get("peak")
    if row.get("device") != "cuda":
        return f"no GPU figure (measured on {row.get('device') or 'nothing'}: a stand-in)"
    if s is None:
        return f"suite figure missing ({row.get('suite_status')}: {row.get('suite_reason')})"
    if r is None:
        return f"raw reference missing ({row.get('raw_kernel')})"
    if peak and s > peak * 1.02:
        return f"{s:.4g} {row['unit']} is above the physical peak {peak:.4g}"
    if peak and r > peak * 1.02:
        return f"the raw reference {r:.4g} {row['unit']} is above the physical peak {peak:.4g}"
    if abs(s / r - 1) > tolerance:
        return f"{s / r - 1:+.1%} off the raw reference (allowed {tolerance:.0%})"
    return ""


def summary(out: Path, tolerance: float) -> int:
    """Each figure beside its raw reference; exit 1 when one is missing, not a GPU figure, above its peak, or more
    than ``tolerance`` off."""
    path = out / "figures.jsonl"
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows[row["figure"]] = row  # the latest measurement of each figure
    bad = 0
    f = (lambda x: "-" if x is None else f"{x:.4g}")  # noqa: E731
    print(f"{'figure':<30} {'suite':>9} {'raw':>9} {'ratio':>6} {'peak':>9}  {'unit':<8} kernels (suite / raw)  verdict")
    for fig in FIGURES:
        row = rows.get(fig.name)
        why = "missing: no figure measured (run scripts/gpu_check.sh quick on a GPU)" if row is None else \
            judge(row, tolerance)
        bad += bool(why)
        row = row or {}
        print(f"{fig.name:<30} {f(row.get('suite')):>9} {f(row.get('raw')):>9} {f(row.get('ratio')):>6} "
              f"{f(row.get('peak')):>9}  {fig.unit:<8} {row.get('suite_kernel') or '-'} / "
              f"{row.get('raw_kernel') or '-'}  {'ok' if not why else 'FAIL: ' + why}")
    gpu = sum(1 for r in rows.values() if r.get("device") == "cuda")
    print(f"{len(FIGURES) - bad} of {len(FIGURES)} figures within {tolerance:.0%} of their same-run raw reference"
          + (f"; {bad} failed" if bad else "") + ("" if gpu else "; no GPU figure at all"))
    return 1 if bad else 0


# -- environment: imports and every kernel compiled -------------------------------------------------------------
def kernel_names(src: str) -> list[str]:
    return re.findall(r'extern\s+"C"\s+__global__\s+void\s+(\w+)', src)


def env(out: Path) -> int:
    """What the device has (torch, CUDA, CuPy, NVML, KvikIO, where `bench` is imported from) and every kernel of
    kernels/ compiled for real: CuPy's RawModule compiles at first use, so each function is fetched here (on a GPU);
    without one, nvcc compiles each file to PTX for sm_90 (a stand-in: nothing is loaded). Exit 1 on a problem."""
    import importlib.util
    import shutil
    import subprocess
    import tempfile

    import torch

    import bench
    from bench.core.config import kernels_dir

    out.mkdir(parents=True, exist_ok=True)
    problems, facts = [], {"bench_from": str(Path(bench.__file__).resolve().parent), "torch": torch.__version__,
                           "torch_cuda": torch.version.cuda, "cuda": torch.cuda.is_available(), "kernels": {}}
    if not str(Path(bench.__file__).resolve()).startswith(str(ROOT)):
        problems.append(f"bench is imported from {bench.__file__}, not from this tree {ROOT}")
    major = (torch.version.cuda or "0").split(".")[0]
    if facts["cuda"]:
        facts["gpu"] = torch.cuda.get_device_name(0)
        facts["cudnn"] = torch.backends.cudnn.version()
    for mod in ("cupy", "pynvml", "kvikio", "hydra", "omegaconf", "numba", "nixl"):
        facts[mod] = importlib.util.find_spec(mod) is not None
    try:
        import pynvml

        pynvml.nvmlInit()
        facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
    except Exception as e:
        facts["nvml"] = f"unavailable: {type(e).__name__}: {e}"
        if facts["cuda"]:
            problems.append(f"NVML unavailable ({e}): clocks and throttle flags would be missing")
    sources = sorted(kernels_dir().glob("*.cu"))
    if facts["cuda"]:
        if not facts["cupy"]:
            problems.append(f"cupy missing: pip install -e '.[gpu-cu{major}]'")
        else:
            import cupy

            facts["cupy_version"] = cupy.__version__
            cu = cupy.cuda.runtime.runtimeGetVersion() // 1000
            if str(cu) != major:
                problems.append(f"cupy is built for CUDA {cu} but torch for CUDA {major}: pip install -e "
                                f"'.[gpu-cu{major}]'")
            from bench.hw.cuda_kernels import module

            for src in sources:
                names = kernel_names(src.read_text())
                try:
                    t = time.perf_counter()
                    mod = module(src.name)
                    for name in names:
                        mod.get_function(name)
                    facts["kernels"][src.name] = {"functions": names, "compiled": "CuPy NVRTC, loaded",
                                                  "s": round(time.perf_counter() - t, 2)}
                except Exception as e:
                    problems.append(f"kernels/{src.name}: {type(e).__name__}: {str(e)[:400]}")
    else:
        nvcc = shutil.which("nvcc")
        for src in sources:
            names = kernel_names(src.read_text())
            if nvcc is None:
                facts["kernels"][src.name] = {"functions": names, "compiled": "not compiled: no GPU and no nvcc"}
                continue
            with tempfile.TemporaryDirectory() as tmp:
                r = subprocess.run([nvcc, "-ptx", "-arch=sm_90", "--std=c++17", "-o", f"{tmp}/k.ptx", str(src)],
                                   capture_output=True, text=True)
                ptx = Path(f"{tmp}/k.ptx").read_text() if r.returncode == 0 else ""
            missing = [n for n in names if f".entry {n}" not in ptx]
            if r.returncode or missing:
                problems.append(f"kernels/{src.name}: nvcc failed or lacks {missing}: {r.stderr[-400:]}")
            facts["kernels"][src.name] = {"functions": names, "compiled": "nvcc -ptx sm_90 (stand-in: no GPU)"}
    facts["problems"] = problems
    (out / "env.json").write_text(json.dumps(facts, indent=1))
    print(json.dumps(facts, indent=1))
    return 1 if problems else 0


# -- plan of the quick step -------------------------------------------------------------------------------------
START_S = 25.0  # python + torch + CUDA context + fingerprint, seen as ~15-25 s on an H100/H200 machine
COMPILE_S = 20.0  # NVRTC: the three kernel files and pace.cu (about 5 s each, first compile, no cache there)
TESTS_S = 75.0  # pytest -m gpu: collection (~15 s) and three GPU tests running quick-suite points (~20 s each)
RAW_S = 2.5  # one raw reference: allocation, warm-up, 0.5 s of samples; pinned allocations of 1-4 GiB add ~1 s


def plan(target: str) -> int:
    """The quick step's seconds on ``target``: the figures' suite points through the suite's own planner, plus the
    fixed parts (start-up, kernel compilation, the GPU tests, the raw references) with their stated estimates."""
    from bench.benchmarks import load_all
    from bench.commands.overrides import compose_checked
    from bench.plan import estimate, point_needs
    from bench.plan.targets import for_cfg

    reg = load_all()
    total = START_S + COMPILE_S + TESTS_S
    rows = [("start-up (python, torch, CUDA context)", START_S), ("kernels compiled (NVRTC)", COMPILE_S),
            ("pytest -m gpu", TESTS_S)]
    for fig in FIGURES:
        cfg = compose_checked(COMMON + ["harness.device=cuda", f"plan.gpu={target}"] + list(fig.overrides))
        tgt = for_cfg(cfg)
        seen: set = set()
        s = 0.0
        for p in reg[fig.bench].points(cfg):
            if all(p.get(k) == v for k, v in fig.params.items()):
                nd, why = point_needs(reg[fig.bench], p, cfg, tgt)
                s += tgt.point_overhead_s if why else estimate(reg[fig.bench], p, cfg, tgt, nd, seen).total_s
        rows.append((f"{fig.name}: suite point + raw", s + RAW_S))
        total += s + RAW_S
    for what, s in rows:
        print(f"  {what:<55} {s:6.1f} s")
    print(f"quick on {target}: {total:.0f} s ({total / 60:.1f} min) planned")
    return 0


# -- what comes back from the device ----------------------------------------------------------------------------
def outbox(out: Path) -> int:
    """Exit 1 when OUT holds what the GPU machine would not send back: more than 8 files, a file more than 2
    folders down, 16 MiB or larger, a link or odd name."""
    problems, files = [], []
    for p in sorted(out.rglob("*")):
        rel = p.relative_to(out)
        if not all(OUTBOX_NAME.match(part) for part in rel.parts):
            problems.append(f"{rel}: a name of other characters than letters, digits, '.', '_' and '-'")
        if p.is_symlink():
            problems.append(f"{rel}: a link")
        elif p.is_file():
            files.append(rel)
            if len(rel.parts) - 1 > OUTBOX_DEPTH:
                problems.append(f"{rel}: {len(rel.parts) - 1} folders down (at most {OUTBOX_DEPTH})")
            if p.stat().st_size >= OUTBOX_FILE_BYTES:
                problems.append(f"{rel}: {p.stat().st_size / MiB:.1f} MiB (under 16 MiB)")
    if len(files) > OUTBOX_FILES:
        problems.append(f"{len(files)} files (at most {OUTBOX_FILES}): " + ", ".join(map(str, files)))
    for rel in files:
        print(f"  {rel}  {(out / rel).stat().st_size / 1024:.0f} KiB")
    for p in problems:
        print(f"outbox: {p}", file=sys.stderr)
    print(f"outbox {out}: {len(files)} file(s)" + (f", {len(problems)} problem(s)" if problems else ", within limits"))
    return 1 if problems else 0


# -- landing the verdict run ------------------------------------------------------------------------------------
def target_of(manifest: dict) -> str:
    """The reference folder name of a run: its GPU's target preset (conf/targets), else 'cpu' for a CPU run, else
    the GPU's name in lower case."""
    from bench.plan.targets import GPU_NAMES

    name = ((manifest.get("hardware") or {}).get("gpu") or {}).get("name")
    if manifest.get("device") != "cuda" or not name:
        return "cpu"
    return next((t for key, t in GPU_NAMES if key in name), re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))


def land(src: Path, into: Path) -> int:
    """Unpack the newest verdict archive of ``src`` into ``into``/<target>/ (records.jsonl, manifest.json, the
    run's log), replacing what was there; prints the folder."""
    import shutil
    import tempfile

    archives = sorted(src.glob("verdict*.tar.gz"), key=lambda p: p.stat().st_mtime)
    if not archives:
        print(f"gpu_check land: no verdict*.tar.gz in {src} (the verdict step writes one)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(archives[-1]) as tar:
            tar.extractall(tmp, filter="data")
        runs = [p.parent for p in Path(tmp).rglob("manifest.json")]
        if len(runs) != 1:
            print(f"gpu_check land: {archives[-1].name} holds {len(runs)} runs (one expected)", file=sys.stderr)
            return 2
        run = runs[0]
        manifest = json.loads((run / "manifest.json").read_text())
        dest = into / target_of(manifest)
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        for name in ("manifest.json", "records.jsonl"):
            shutil.copy2(run / name, dest / name)
        for log in list(run.glob("*.log")) + list(Path(tmp).glob("*.log")):
            shutil.copy2(log, dest / log.name)
    print(dest)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["env", "figures", "summary", "plan", "outbox", "land", "target"])
    p.add_argument("dir", type=Path, nargs="?")
    p.add_argument("--tolerance", type=float, default=TOLERANCE, help="allowed relative difference (0.05)")
    p.add_argument("--gpu", default="h200_141gb", help="plan: the target preset (conf/targets)")
    p.add_argument("--into", type=Path, default=ROOT / "results" / "reference", help="land: the reference root")
    a = p.parse_args(argv)
    if a.step == "plan":
        return plan(a.gpu)
    if a.dir is None:
        p.error(f"{a.step} needs a directory")
    if a.step == "target":
        print(target_of(json.loads((a.dir / "manifest.json").read_text())))
        return 0
    if a.step == "summary":
        return summary(a.dir, a.tolerance)
    if a.step == "land":
        return land(a.dir, a.into)
    return {"env": env, "figures": figures, "outbox": outbox}[a.step](a.dir)


if __name__ == "__main__":
    sys.exit(main())
