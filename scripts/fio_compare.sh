#!/usr/bin/env bash
# Compare tierbench's sequential O_DIRECT file bandwidth with fio on the same disk, request size and queue depth.
#   scripts/fio_compare.sh DIR [REQUEST_BYTES=67108864] [QUEUE_DEPTH=1] [FILE_BYTES=2147483648]
# fio: --direct=1, one job, --ioengine=psync at queue depth 1 (tierbench: one synchronous thread), else
# --ioengine=libaio --iodepth=QD (tierbench: QD threads each with one request in flight on one sequential stream).
set -euo pipefail
dir=${1:?usage: $0 DIR [REQUEST_BYTES] [QUEUE_DEPTH] [FILE_BYTES]}
bs=${2:-67108864}; qd=${3:-1}; size=${4:-2147483648}
command -v fio >/dev/null || { echo "fio not installed (apt-get install fio)"; exit 1; }
engine="--ioengine=psync"; [ "$qd" -gt 1 ] && engine="--ioengine=libaio --iodepth=$qd"
f="$dir/.tierbench-fio-$$"
trap 'rm -f "$f"' EXIT
for rw in write read; do
  gbps=$(fio --name=tb --filename="$f" --rw=$rw --bs="$bs" --size="$size" --direct=1 $engine --numjobs=1 \
             --time_based --runtime="${FIO_RUNTIME:-10}" \
             --group_reporting --output-format=json | python3 -c 'import json,sys
j=json.load(sys.stdin)["jobs"][0]; k="read" if j["read"]["io_bytes"] else "write"; print("%.3f" % (j[k]["bw_bytes"]/1e9))')
  echo "fio       $rw bs=$bs qd=$qd: $gbps GB/s"
done
root=$(mktemp -d)
python3 -m bench run benchmark=storage "only=[file_write,file_read]" "storage.path=$dir" "storage.file_bytes=$size" \
  "storage.request_bytes=[$bs]" "storage.kv_block_tokens=[]" "storage.queue_depths=[$qd]" \
  "storage.patterns=[sequential]" "storage.requests_per_call=$((size / bs))" "run.root=$root" run.id=fio \
  harness.progress=false
python3 - "$root/fio" <<'PY'
import sys, bench.store as s
df = s.load(sys.argv[1])
for _, r in df.iterrows():
    print(f"tierbench {r['benchmark'].split('_')[1]:5} bs={r['param.request_bytes']} qd={r['param.queue_depth']}: "
          f"{r.get('metric.gbps', float('nan')):.3f} GB/s ({r['status']}, {r.get('reason') or 'verified'})")
PY
rm -rf "$root"
