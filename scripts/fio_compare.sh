#!/usr/bin/env bash
# tierbench's async engine (Linux AIO) beside fio on the same file, request size, pattern, queue depth and request
# count, O_DIRECT both, interleaved A/B/A/B: each round is one `bench run` whose aio and fio points run back to
# back (the engine axis), then a table of GB/s per round and the medians.
#   scripts/fio_compare.sh DIR [REQUEST_BYTES=4096] [QUEUE_DEPTH=16] [PATTERN=random] [ROUNDS=4] [FILE_BYTES=2 GiB]
#   scripts/fio_compare.sh /mnt/nvme 67108864 1 sequential
# ROUNDS is even by default to balance the order (the point right after the pattern file is written can run
# faster on a virtual disk); the summary gives aio/fio for each order too. Requests per pass: 128 MiB worth (and at
# least 32 per queue slot, storage.pass_depths), so a pass is long enough to time; fio repeats it for >= 0.5 s.
# The engines alternate which goes first (A/B, B/A, ...) and every point warms up for 5 s: the run has just
# written its pattern file, and a virtual disk may still be flushing it when the first point starts. Each point
# takes at least 5 samples (a pass, or a fio run) and up to 3 s of them: the quick budget a CPU run gets by
# default leaves fio 2 runs, too few for a median of a disk whose runs swing +-15%. On a CPU-only node the
# write buffers of a 64 MiB request (queue depth x (1 MiB + request)) exceed harness.cpu_max_bytes: raised here.
set -euo pipefail
dir=${1:?usage: $0 DIR [REQUEST_BYTES] [QUEUE_DEPTH] [PATTERN] [ROUNDS] [FILE_BYTES]}
bs=${2:-4096}; qd=${3:-16}; pattern=${4:-random}; rounds=${5:-4}; size=${6:-2147483648}
command -v fio >/dev/null || { echo "fio not installed (apt-get install fio)"; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
for r in $(seq "$rounds"); do
  engines="[aio,fio]"; [ $((r % 2)) -eq 0 ] && engines="[fio,aio]"
  python3 -m bench run benchmark=storage "only=[file_read,file_write]" "storage.engines=$engines" harness.warmup_s=5 \
    harness.min_samples=5 harness.time_budget_s=3 harness.cpu_max_bytes=4294967296 \
    "storage.path=$dir" "storage.file_bytes=$size" "storage.request_bytes=[$bs]" "storage.kv_block_tokens=[]" \
    "storage.queue_depths=[$qd]" "storage.patterns=[$pattern]" storage.pass_bytes=134217728 \
    "run.root=$root" "run.id=round$r" harness.progress=false run.analyze=false >/dev/null
done
python3 - "$root" <<'PY'
import sys
import numpy as np
import pandas as pd
import bench.core.store as s

df = s.load(sys.argv[1])
df["round"] = df["run_id"].str.replace("round", "").astype(int)
bad = df[df["status"] != "ok"]
for _, r in bad.iterrows():
    print(f"round {r['round']} {r['benchmark']} {r['param.engine']}: {r['status']} ({r['reason']})")
ok = df[df["status"] == "ok"]
t = ok.pivot_table(index=["benchmark", "round"], columns="param.engine", values="metric.gbps")
t["aio/fio"] = t["aio"] / t["fio"]
t["first"] = ["fio" if r % 2 == 0 else "aio" for r in t.index.get_level_values("round")]
pd.set_option("display.float_format", "{:.3f}".format)
print(t.to_string())
med = t.groupby(level=0)[["aio", "fio"]].median()
for bench, row in med.iterrows():
    tb = t.loc[bench]
    swing = tb["fio"].max() / tb["fio"].min() - 1
    by_order = ", ".join(f"{e} first {np.exp(np.log(g['aio/fio']).mean()):.3f}" for e, g in tb.groupby("first"))
    print(f"{bench}: median aio {row['aio']:.3f} GB/s, fio {row['fio']:.3f} GB/s, aio/fio {row['aio'] / row['fio']:.3f}"
          f" (fio's own round-to-round swing {swing:.1%}); aio/fio by which ran first: {by_order}")
PY
