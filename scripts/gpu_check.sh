#!/usr/bin/env bash
# The GPU paths on a GPU node, step by step; every step fails loudly (exit non-zero, its log's tail printed).
# `all` (imports, tests, plan, default, summary) takes ~6 minutes on one H100/H200: the default suite is planned at
# ~4.5 minutes there (`python -m bench run --plan`) and its analysis adds about a minute. Run them in order, one per
# batch job or device call if you like:
#
#   scripts/gpu_check.sh imports            # torch CUDA, CuPy (the one matching torch.version.cuda), NVML, Hydra
#   scripts/gpu_check.sh tests              # pytest -m gpu, plus the simulated-timeline tests
#   scripts/gpu_check.sh plan               # the default suite's plan on this GPU (points, memory, time)
#   scripts/gpu_check.sh default            # the README's run: the default suite to its verdict (budgets kept)
#   scripts/gpu_check.sh transfer           # ceilings + contiguous/paged transfers (llama3_8b blocks)
#   scripts/gpu_check.sh attention          # SDPA prefill/decode at the reference shapes (+ FlashInfer if installed)
#   scripts/gpu_check.sh interference       # copy under compute, layer-wise load, concurrent host traffic
#   scripts/gpu_check.sh storage            # file <-> host/GPU (O_DIRECT, KvikIO, bounce) on storage.path
#   scripts/gpu_check.sh validate           # end-to-end replay vs the model (quick microbenchmark sweep)
#   scripts/gpu_check.sh summary            # headline figures beside the reference figures of that machine
#   scripts/gpu_check.sh all                # imports tests plan default summary
#
# OUT_ROOT (default results/gpu_check) holds one run per step and a log per step.
set -uo pipefail
step=${1:-all}
out=${2:-${OUT_ROOT:-results/gpu_check}}
mkdir -p "$out"
py=${PYTHON:-python}

run_step() {  # name, command...: full output to $out/<name>.log; on failure print its tail and stop
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    echo "   ok in $((SECONDS - t0)) s (log: $out/$name.log)"
    [ "$name" = summary ] || tail -n 2 "$out/$name.log" | sed 's/^/   /'
  else
    local rc=$?
    echo "!! $name FAILED (exit $rc) after $((SECONDS - t0)) s; last lines of $out/$name.log:" >&2
    tail -n 40 "$out/$name.log" >&2
    exit "$rc"
  fi
}

bench_run() { $py -m bench run run.root="$out" harness.progress=false harness.device=cuda harness.time_budget_s=0.5 "$@"; }

step_imports() {
  run_step imports $py - <<'PY'
import sys
problems = []
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})")
print(f"torch {torch.__version__} CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
major = (torch.version.cuda or "0").split(".")[0]
try:
    import cupy
    cu = cupy.cuda.runtime.runtimeGetVersion() // 1000
    print(f"cupy {cupy.__version__} (CUDA runtime {cu})")
    if str(cu) != major:
        problems.append(f"cupy is built for CUDA {cu} but torch for CUDA {major}: pip install -e '.[gpu-cu{major}]'")
    from bench.hw.cuda_kernels import module
    module("kv_transfer.cu"), module("pace.cu")
    print("kernels/kv_transfer.cu and kernels/pace.cu compiled")
except ImportError:
    problems.append(f"cupy missing: pip install -e '.[gpu-cu{major}]' (uva_kernel method and %globaltimer pacing)")
try:
    import pynvml
    pynvml.nvmlInit()
    print(f"NVML {pynvml.nvmlSystemGetDriverVersion()}")
except Exception as e:
    problems.append(f"NVML unavailable ({e}): clocks and throttle flags would be missing")
import hydra, omegaconf  # noqa: F401
try:
    import kvikio
    print(f"kvikio {kvikio.__version__}")
except ImportError:
    print(f"kvikio not installed (optional: pip install -e '.[gds-cu{major}]'); KvikIO points will be skipped")
if problems:
    sys.exit("\n".join(problems))
PY
}

step_plan() {
  run_step plan $py -m bench run --plan
}

step_default() {
  run_step default $py -m bench run run.root="$out" run.id=default harness.progress=false
}

step_tests() {
  run_step tests bash -c "$py -m pytest -q -m gpu tests && $py -m pytest -q tests/test_sim_timing.py tests/test_gpu_paths.py"
}

step_transfer() {
  run_step transfer bench_run "benchmark=[ceilings,transfer]" model=llama3_8b run.id=transfer \
    "ceilings.copy_bytes=[4194304,4294967296]" "ceilings.gemm_n=[8192]" \
    "transfer.sizes=[4096,65536,1048576,4194304,1073741824]" "transfer.block_tokens=[16,128]" \
    "transfer.streams=[2,4]"
}

step_attention() {
  run_step attention bench_run "benchmark=[attention]" model=llama3_8b run.id=attention \
    "attention.backends=[flash,efficient,cudnn,flashinfer]" "attention.prefill_new=[1024,4096,16384]" \
    "attention.prefill_ctx=[0,4096]" "attention.decode_batch=[64]" "attention.decode_ctx=[8192]"
}

step_interference() {
  run_step interference bench_run "benchmark=[interference]" model=llama3_8b run.id=interference \
    "interference.methods=[memcpy_per_block,staged,uva_kernel]" "interference.hit_tokens=[8192,32768]" \
    "interference.tier_gbps=[link,10]" "interference.layerwise_new=[512]" "interference.host_streams=[1,4]"
}

step_storage() {
  run_step storage bench_run "benchmark=[storage]" model=llama3_8b run.id=storage \
    storage.file_bytes=2147483648 "storage.request_bytes=[1048576,67108864]" "storage.kv_block_tokens=[16]" \
    "storage.queue_depths=[1,8]" "storage.gpu_request_bytes=[67108864]" "storage.gpu_queue_depths=[4]" \
    "storage.patterns=[sequential,random]"
}

step_validate() {
  run_step validate $py -m bench validate suite=quick model=llama3_8b run.root="$out" run.id=validate \
    harness.progress=false harness.device=cuda
}

step_summary() {
  run_step summary $py - "$out" <<'PY'
import sys
import bench.store as s
df = s.load(sys.argv[1])
if df.empty:
    sys.exit(f"no records under {sys.argv[1]}: run the other steps first")
ok = df[df.status == "ok"]
def show(label, ref, bench, unit="metric.gbps", **params):
    d = ok[ok.benchmark == bench] if len(ok) else ok
    for k, v in params.items():
        d = d[d[f"param.{k}"] == v] if f"param.{k}" in d else d.iloc[0:0]
    vals = ", ".join(f"{x:.4g}" for x in d[unit].dropna()) if unit in d else ""
    print(f"{label:<56} {vals or '(no point)':<24} ref {ref}")
G = 1 << 30
show("H2D pinned 1 GiB GB/s", "55.1", "h2d_pinned", size_bytes=G)
show("D2H pinned 1 GiB GB/s", "55.2", "d2h_pinned", size_bytes=G)
show("H2D pinned 4 MiB GB/s", "49.7", "h2d_pinned", size_bytes=4 << 20)
show("H2D pinned 64 KiB GB/s", "3.1", "h2d_pinned", size_bytes=64 << 10)
show("H2D pageable 1 GiB GB/s", "9.2", "h2d_pageable", size_bytes=G)
show("D2H pageable 1 GiB GB/s", "15.0", "d2h_pageable", size_bytes=G)
show("bidirectional pinned 1 GiB, total GB/s", "92", "bidir_pinned", size_bytes=G)
show("H2D 4 KiB latency us (issue to completion)", "22.5 (event-timed)", "h2d_pinned", unit="metric.latency_us",
     size_bytes=4096)
show("D2D 4 GiB GB/s, read+write", "3020", "d2d_copy", size_bytes=4 * G)
show("bf16 GEMM 8192 TFLOP/s", "793", "gemm", unit="metric.tflops", n=8192)
for m, ref in (("memcpy_per_block", "2.6 GB/s"), ("staged", "50.8 GB/s"), ("uva_kernel", "50-52 GB/s")):
    show(f"paged offload 16-tok layer_major {m} GB/s", ref, "paged_offload", method=m, block_tokens=16,
         layout="layer_major")
for n, ref in ((1024, 176), (4096, 488), (16384, 647)):
    show(f"SDPA flash prefill {n} TFLOP/s", ref, "attn_prefill", unit="metric.tflops", backend="flash", n_new=n,
         n_ctx=0)
show("SDPA flash decode B=64 L=8k KV GB/s", "2990 (717 us)", "attn_decode", backend="flash", batch=64, ctx=8192)
show("O_DIRECT file read 64 MiB requests GB/s", "2.1", "file_read", request_bytes=64 << 20, queue_depth=1,
     pattern="sequential")
show("O_DIRECT file write 64 MiB requests GB/s", "2.4", "file_write", request_bytes=64 << 20, queue_depth=1,
     pattern="sequential")
show("KvikIO file->GPU 64 MiB GB/s (compat mode, cold)", "1.2", "gpu_file_read_kvikio", request_bytes=64 << 20)
show("KvikIO GPU->file 64 MiB GB/s (compat mode)", "1.8", "gpu_file_write_kvikio", request_bytes=64 << 20)
for mode in ("reuse_hbm", "reuse_host", "reuse_storage"):
    show(f"validate {mode}: speedup prediction error", "(miss reported)", "e2e_agentic_replay",
         unit="metric.speedup_prediction_error", mode=mode)
for m in ("memcpy_per_block", "staged", "uva_kernel"):
    for c in ("prefill", "decode"):
        show(f"onload {m} under {c}: copy GB/s", "alone ~50 (2.6 per-block)", "copy_under_compute",
             unit="metric.copy_gbps", method=m, direction="onload", compute=c)
for h in (8192, 32768):
    show(f"layer-wise load {h} hit, host link: exposed fraction", "(no reference)", "layerwise_load",
         unit="metric.exposed_fraction", hit_tokens=h, tier_gbps="link")
show("layer-wise load, tier 10 GB/s: delivered GB/s", "10", "layerwise_load", unit="metric.load_gbps_alone",
     tier_gbps=10.0)
show("H2D+D2H 4 streams each: total GB/s", "92", "host_traffic_concurrent", streams=4)
bad = df[df.status == "error"]
print(f"points: {len(ok)} ok, {int((df.status == 'skipped').sum())} skipped, {len(bad)} error;",
      "throttled:", int(df["throttled"].fillna(False).sum()), " implausible:", int(df["implausible"].notna().sum()))
for _, r in bad.iterrows():
    print(f"  error {r.benchmark}: {r.reason}")
PY
  cat "$out/summary.log"
}

case "$step" in
  imports|tests|plan|default|transfer|attention|interference|storage|validate|summary) "step_$step" ;;
  all) for s in imports tests plan default summary; do "step_$s"; done ;;
  *) echo "scripts/gpu_check.sh: step '$step' is not one of: imports tests plan default transfer attention interference storage validate summary all" >&2
     exit 2 ;;
esac
