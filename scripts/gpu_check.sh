#!/usr/bin/env bash
# One pass over the GPU paths on a GPU node: GPU tests, the quick suite, the headline points of the issues'
# targets, and the end-to-end validation; prints a table to hold against known reference figures.
#   scripts/gpu_check.sh [OUT_ROOT=results/gpu_check]
set -uo pipefail
out=${1:-results/gpu_check}
mkdir -p "$out"
run() { echo "+ $*"; "$@" 2>&1 | tail -3; }
run python -m pytest -q -m gpu tests
run python -m bench run suite=quick run.root="$out" run.id=quick harness.progress=false
run python -m bench run "benchmark=[ceilings,transfer]" model=llama3_8b run.root="$out" run.id=transfer \
  "ceilings.copy_bytes=[4294967296]" "ceilings.gemm_n=[8192]" \
  "transfer.sizes=[4096,65536,1048576,4194304,1073741824]" "transfer.block_tokens=[16,128]" harness.progress=false
run python -m bench run "benchmark=[attention]" model=llama3_8b run.root="$out" run.id=attention \
  "attention.prefill_new=[1024,4096,16384]" "attention.prefill_ctx=[0]" "attention.decode_batch=[64]" \
  "attention.decode_ctx=[8192]" harness.progress=false
run python -m bench run benchmark=interference model=llama3_8b run.root="$out" run.id=interference \
  "interference.methods=[staged,uva_kernel]" "interference.hit_tokens=[8192,32768]" \
  "interference.tier_gbps=[link,10]" "interference.layerwise_new=[512]" "interference.host_streams=[1,4]" \
  harness.progress=false
run python -m bench validate model=llama3_8b run.root="$out" run.id=validate harness.progress=false
python - "$out" <<'PY'
import sys
import bench.store as s
df = s.load(sys.argv[1])
ok = df[df.status == "ok"]
def show(label, bench, unit="metric.gbps", **params):
    d = ok[ok.benchmark == bench]
    for k, v in params.items():
        d = d[d[f"param.{k}"] == v]
    vals = ", ".join(f"{x:.4g}" for x in d[unit].dropna()) or "(no point)"
    print(f"{label:<58} {vals}")
G = 1 << 30
show("H2D pinned 1 GiB GB/s (ref 55.1)", "h2d_pinned", size_bytes=G)
show("D2H pinned 1 GiB GB/s (ref 55.2)", "d2h_pinned", size_bytes=G)
show("H2D pinned 4 MiB GB/s (ref 49.7)", "h2d_pinned", size_bytes=4 << 20)
show("H2D pageable 1 GiB GB/s (ref 9.2)", "h2d_pageable", size_bytes=G)
show("bidirectional pinned 1 GiB, total GB/s (ref 92)", "bidir_pinned", size_bytes=G)
show("H2D 4 KiB latency us (ref 22.5)", "h2d_pinned", unit="metric.latency_us", size_bytes=4096)
show("D2D 4 GiB GB/s, read+write (ref 3020)", "d2d_copy", size_bytes=4 * G)
show("bf16 GEMM 8192 TFLOP/s (ref 793)", "gemm", unit="metric.tflops", n=8192)
for m in ("memcpy_per_block", "staged", "uva_kernel"):
    show(f"paged offload 16-tok {m}, fraction of contiguous", "paged_offload",
         unit="metric.fraction_of_contiguous", method=m, block_tokens=16, layout="layer_major")
show("SDPA flash prefill 16k TFLOP/s (ref 647)", "attn_prefill", unit="metric.tflops", backend="flash", n_new=16384)
show("SDPA flash decode B=64 L=8k KV GB/s (ref 2990)", "attn_decode", backend="flash", batch=64, ctx=8192)
for mode in ("reuse_hbm", "reuse_host", "reuse_storage"):
    show(f"validate {mode}: speedup prediction error", "e2e_agentic_replay",
         unit="metric.speedup_prediction_error", mode=mode)
for m in ("staged", "uva_kernel"):
    for c in ("prefill", "decode"):
        show(f"onload {m} under {c}: copy GB/s (alone ~50)", "copy_under_compute", unit="metric.copy_gbps",
             method=m, direction="onload", compute=c)
        show(f"onload {m} under {c}: compute slowdown", "copy_under_compute", unit="metric.compute_slowdown",
             method=m, direction="onload", compute=c)
for h in (8192, 32768):
    show(f"layer-wise load {h} hit, host link: exposed fraction of load", "layerwise_load",
         unit="metric.exposed_fraction", hit_tokens=h, tier_gbps="link")
show("H2D+D2H 4 streams each: H2D / D2H retained vs alone", "host_traffic_concurrent", unit="metric.h2d_retained",
     streams=4)
print("throttled points:", int(df["throttled"].fillna(False).sum()), " implausible:", int(df["implausible"].notna().sum()))
PY
