#!/usr/bin/env bash
# The suite on a borrowed GPU machine, checked against raw torch in the same process, as two device commands that
# each bring back everything they measured, and the steps at home that judge and land it.
#
# The GPU machine's rules shape every step: 15 minutes of device time in all, starts included (1-2 min a start);
# one command at most 10 minutes; OUT emptied before each command; at most 8 files come back, at most 2 folders
# down, each under 16 MiB; nothing written there survives; the project is not installed there (this tree travels
# and is put on PYTHONPATH; missing packages travel as wheels in .gpu, see ../shared/device/README.md).
#
# On the device (each command self-contained; `source .gpu/env.sh &&` in front):
#   bash scripts/gpu_check.sh quick      # imports, every kernel compiled, pytest -m gpu -x, each headline figure
#                                        # beside its raw reference, the summary: OUT/{quick.log, env.json,
#                                        # tests.log, figures.jsonl, summary.txt, figures-runs.tar.gz}
#   bash scripts/gpu_check.sh verdict    # the default suite at budgets that fit (planned <= 310 s on an H200),
#                                        # run.analyze=false: OUT/{verdict.log, verdict-<id>.tar.gz}
#   bash scripts/gpu_check.sh all        # quick then verdict in one command (8 files back), the verdict run
#                                        # interrupted in time to pack if quick ran long (GPU_CHECK_DEADLINE_S=570)
# At home (no GPU needed):
#   bash scripts/gpu_check.sh summary DIR   # judge the returned figures: exit 1 when one is missing, not a GPU
#                                           # figure, above its physical peak or more than 5% off its raw reference
#   bash scripts/gpu_check.sh land DIR      # the returned verdict archive -> results/reference/<target>/, then
#                                           # `bench model` on it and `bench compare` of it against itself
#   bash scripts/gpu_check.sh plan          # the two device commands' plans on an H200 (bench's own planner)
#   bash scripts/gpu_check.sh prep-nixl     # the NIXL wheel for the GPU machine into .gpu-nixl (carry it too)
#   bash scripts/gpu_check.sh rehearse [--fast]
#                                           # both device commands exactly as the GPU machine runs them (a fresh
#                                           # empty OUT each, a copy of the tree only on PYTHONPATH, CPU stand-ins
#                                           # without a GPU), what would come back checked against the limits, then
#                                           # land (into a scratch reference root) and summary on it
#
# GPU-time plan for one session with an H200 (15 min): start 1.5 min; quick 3.5 min (plan: 3.2); the figures go
# into the issue note at once; verdict on the still-warm machine (it is given back 30 s after a call) 5.5 min
# (points planned 5 min with the handoff's + start-up and packing); that leaves ~4.5 min: one retry of either
# command on a fresh machine (start included). Carry [".gpu", ".gpu-nixl"] for the verdict (NIXL's wheel). Fixes from quick's figures are made at home, tested on the CPU, and rerun only if time
# is left. OUT defaults to $OUT (the device tool's folder) or results/gpu_check-<time>.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
py=${PYTHON:-python3}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step=${1:-}
[ $# -gt 0 ] && shift
# the verdict step's overrides: the default suite with its slowest families trimmed to <= 310 s planned on an H200;
# the handoff family (NIXL VRAM to VRAM between two processes) runs where NIXL imports: carry .gpu-nixl (the wheel,
# `bash scripts/gpu_check.sh prep-nixl` at home), else its points are skipped with how to install it
VERDICT_OVERRIDES=('benchmark=[attention,transfer,ceilings,layers,interference,validate,storage,warm,handoff]' storage.budget_s=60 'storage.request_bytes=[4096,1048576]' 'storage.kv_block_tokens=[]'
  validate.budget_s=45 validate.repeats=1 interference.budget_s=40 warm.budget_s=40 handoff.budget_s=40
  'warm.row_bytes=[64,4096,65536,model]' 'warm.search_tokens=[1048576]'
  'transfer.sizes=[4096,65536,1048576,16777216,1073741824]' 'transfer.block_tokens=[16,256]'
  'attention.backends=[auto,best,flash,cudnn]')
# rehearse --fast (the test suite's rehearsal on a 2-core CPU): the same steps at the smallest sizes
FAST_OVERRIDES=(suite=quick harness.time_budget_s=0.02 harness.warmup_s=0.005 'benchmark=[ceilings,transfer,layers,storage]'
  'transfer.sizes=[1048576]' 'transfer.block_tokens=[16]' 'storage.request_bytes=[1048576]' 'storage.queue_depths=[4]'
  'storage.patterns=[random]' 'storage.kv_block_tokens=[]')

nixl_here() {  # NIXL's Python API imports (as the handoff family imports it)
  $py -c 'from bench.benchmarks.handoff.wire import nixl_api, nixl_version; nixl_api(); print(nixl_version())' 2>/dev/null
}

nixl_from_wheel() {  # the GPU machine lacks NIXL: install a carried wheel (.gpu-nixl/) beside the others
  if ls "$root"/.gpu-nixl/*.whl >/dev/null 2>&1 && ! nixl_here; then
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site-nixl \
      "$root"/.gpu-nixl/*.whl && export PYTHONPATH="/tmp/site-nixl:$PYTHONPATH"
  fi
}

step_prep-nixl() {  # at home, once per checkout: the NIXL wheel for the GPU machine's Python (3.12) into .gpu-nixl
  mkdir -p "$root/.gpu-nixl"
  grep -qx '/.gpu-nixl/' "$root/.git/info/exclude" 2>/dev/null || echo '/.gpu-nixl/' >>"$root/.git/info/exclude"
  $py -m pip download -q --no-deps --only-binary=:all: --python-version "${1:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$root/.gpu-nixl" nixl-cu13==1.5.1 || exit 1
  ls -la "$root/.gpu-nixl"
  echo "ready: carry [\".gpu\", \".gpu-nixl\"] (about 61 MiB with the tree, under the 64 MiB a call may carry)"
}

out_dir() {  # the step's output folder: $OUT on the device machine, else results/gpu_check-<time>
  local o=${OUT:-$root/results/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}
  mkdir -p "$o" && echo "$o"
}

step_quick() {
  local out; out=$(out_dir) || exit 2
  local log="$out/quick.log" rc=0 t0=$SECONDS
  {
    echo "== quick on $(hostname) at $(date -u +%FT%TZ); tree $root; python $($py -c 'import sys; print(sys.version.split()[0])')"
    echo "== env: imports and every kernel compiled"
    $py "$here/gpu_check.py" env "$out" || rc=1
    echo "== tests: pytest -m gpu -x (no xdist: one GPU)"
    if [ -n "${GPU_CHECK_FAST:-}" ]; then
      echo "(rehearse --fast: the GPU tests' collection only)"
      $py -m pytest -q -n 0 -p no:cacheprovider -m gpu --collect-only tests >"$out/tests.log" 2>&1 || rc=1
    else
      $py -m pytest -q -n 0 -p no:cacheprovider -m gpu -x -rs tests >"$out/tests.log" 2>&1 || rc=1
    fi
    tail -n 15 "$out/tests.log"
    echo "== figures: suite point, then raw reference (after a test failure too: every figure is worth having)"
    $py "$here/gpu_check.py" figures "$out" || rc=1
    tar -czf "$out/figures-runs.tar.gz" -C "$out" figures-runs && rm -rf "$out/figures-runs"
    echo "== summary"
    $py "$here/gpu_check.py" summary "$out" >"$out/summary.txt" 2>&1
    cat "$out/summary.txt"
    echo "== quick done in $((SECONDS - t0)) s (exit $rc; the summary's verdict is its own: see summary.txt)"
  } 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}

step_verdict() {
  local out; out=$(out_dir) || exit 2
  local id; id="verdict-$(date -u +%Y%m%dT%H%M%SZ)-$$"  # a second try never collides with the first
  local work; work=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  local log="$out/verdict.log" t0=$SECONDS rc
  local ovs=("${VERDICT_OVERRIDES[@]}")
  [ -n "${GPU_CHECK_FAST:-}" ] && ovs+=("${FAST_OVERRIDES[@]}")
  # within a deadline (the step `all`), the run is interrupted in time to pack: bench keeps every completed point
  local limit=()
  [ -n "${GPU_CHECK_VERDICT_S:-}" ] && limit=(timeout -s INT -k 20 "$GPU_CHECK_VERDICT_S")
  {
    echo "== verdict $id on $(hostname) at $(date -u +%FT%TZ): python -m bench run ${ovs[*]}"
    [ ${#limit[@]} -gt 0 ] && echo "== interrupted (SIGINT) after ${GPU_CHECK_VERDICT_S} s if still running"
    nixl_from_wheel
    local nx; nx=$(nixl_here) && echo "== NIXL: $nx" ||
      echo "== NIXL: not importable (carry .gpu-nixl): the handoff points are skipped"
    "${limit[@]}" $py -m bench run run.root="$work" run.id="$id" run.analyze=false harness.progress=false "${ovs[@]}"
  } >"$log" 2>&1
  rc=$?
  echo "== verdict run exit $rc after $((SECONDS - t0)) s" >>"$log"
  cp "$log" "$work/$id/" 2>/dev/null
  if [ -f "$work/$id/manifest.json" ]; then
    tar -czf "$out/$id.tar.gz" -C "$work" "$id" && echo "== packed $out/$id.tar.gz" >>"$log"
  else
    echo "!! no run was written (see the log above)" >>"$log"
    [ "$rc" -eq 0 ] && rc=1
  fi
  rm -rf "$work"
  tail -n 25 "$log"
  return "$rc"
}

step_all() {  # quick then verdict in one device command (no second start), both inside its 10-minute limit
  local deadline=${GPU_CHECK_DEADLINE_S:-570} t0=$SECONDS rc=0
  step_quick || rc=1
  local left=$((deadline - (SECONDS - t0) - 25))
  if [ $left -lt 60 ]; then
    echo "!! all: ${left} s left for the verdict run: not started (run the verdict step on its own)"; return 1
  fi
  GPU_CHECK_VERDICT_S=$left step_verdict || rc=1
  echo "== all done in $((SECONDS - t0)) s (exit $rc)"
  return $rc
}

step_land() {
  local src=${1:?usage: gpu_check.sh land DIR [--into REFERENCE_ROOT]}; shift
  local into="$root/results/reference"
  [ "${1:-}" = "--into" ] && into=$2
  local ref; ref=$($py "$here/gpu_check.py" land "$src" --into "$into") || exit $?
  echo "landed: $ref"
  $py -m bench model "$ref" plots=false out="$ref/model-agentic_coding" >"$ref/model.log" 2>&1 ||
    { tail -n 20 "$ref/model.log"; echo "!! bench model failed on $ref" >&2; exit 1; }
  tail -n 12 "$ref/model.log"
  # compare refuses one directory named twice: the run against a copy of itself must come out SAME (points timed
  # under contention compared too, in a widened band: a run landed from a busy machine is still itself)
  local twin; twin=$(mktemp -d "${TMPDIR:-/tmp}/gpu_land.XXXXXX")
  cp -r "$ref" "$twin/$(basename "$ref")-copy"
  $py -m bench compare "$ref" "$twin/$(basename "$ref")-copy" --contended widen >"$twin/compare-self.log" 2>&1
  local crc=$?
  head -n 6 "$twin/compare-self.log"
  tr -s '\n ' ' ' <"$twin/compare-self.log" | grep -q "0 regression(s), 0 slower, 0 faster, [1-9][0-9]* same" &&
    [ $crc -eq 0 ] ||
    { cat "$twin/compare-self.log"; rm -rf "$twin"; echo "!! bench compare of $ref against itself is not SAME" >&2; exit 1; }
  rm -rf "$twin"
  echo "reference run: $ref (compare yours: python -m bench compare $ref YOUR_RUN)"
}

step_summary() {
  local dir=${1:?usage: gpu_check.sh summary DIR}
  $py "$here/gpu_check.py" summary "$dir"
}

step_plan() {
  $py "$here/gpu_check.py" plan --gpu "${1:-h200_141gb}"
  $py -m bench run --plan plan.gpu="${1:-h200_141gb}" "${VERDICT_OVERRIDES[@]}" | tail -n 14
}

step_rehearse() {
  local fast=; [ "${1:-}" = "--fast" ] && fast=1
  local tmp; tmp=$(mktemp -d "${TMPDIR:-/tmp}/gpu_rehearse.XXXXXX")
  local tree="$tmp/tree" rc=0
  mkdir -p "$tree"
  # the tree as it travels: tracked files and untracked ones git does not ignore (plus .gpu where prepared)
  (cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - 2>/dev/null) | tar -xf - -C "$tree"
  for cmd in quick verdict; do
    mkdir -p "$tmp/out-$cmd"  # a fresh, empty OUT per command, as the device empties it
    echo "== rehearse $cmd (OUT=$tmp/out-$cmd, tree only on PYTHONPATH)"
    (cd "$tree" && env -u PYTHONPATH OUT="$tmp/out-$cmd" GPU_CHECK_FAST="$fast" PYTHONPATH="$tree" \
      bash scripts/gpu_check.sh "$cmd") >"$tmp/$cmd.console" 2>&1
    local crc=$?
    tail -n 8 "$tmp/$cmd.console"
    # quick exits non-zero without a GPU (its env step finds no CUDA problem-free only on a GPU); verdict must run
    if [ "$cmd" = verdict ] && [ $crc -ne 0 ]; then echo "!! rehearse: verdict exited $crc" >&2; rc=1; fi
    $py "$here/gpu_check.py" outbox "$tmp/out-$cmd" || rc=1
  done
  grep -q '"bench_from": "'"$tree"'/bench"' "$tmp/out-quick/env.json" ||
    { echo "!! rehearse: bench was not imported from the travelling tree" >&2; rc=1; }
  step_land "$tmp/out-verdict" --into "$tmp/reference" || rc=1
  if python3 -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    step_summary "$tmp/out-quick" || rc=1
  else  # without a GPU the summary must fail, naming each figure as no GPU figure
    local s; s=$(step_summary "$tmp/out-quick"); local src=$?
    local n; n=$($py -c "import sys; sys.path.insert(0, '$here'); import gpu_check; print(len(gpu_check.FIGURES))")
    echo "$s" | tail -n 3
    if [ $src -eq 0 ] || [ "$(echo "$s" | grep -c 'FAIL: no GPU figure')" -ne "$n" ]; then
      echo "!! rehearse: the summary of CPU stand-ins did not fail with 'no GPU figure'" >&2; rc=1
    fi
  fi
  echo "== rehearse: exit $rc (files under $tmp)"
  [ $rc -eq 0 ] && [ -z "${GPU_CHECK_KEEP:-}" ] && rm -rf "$tmp"
  return $rc
}

case "$step" in
  quick|verdict|all|land|summary|plan|rehearse|prep-nixl) "step_$step" "$@" ;;
  *) echo "scripts/gpu_check.sh: step '$step' is not one of: quick verdict all land summary plan rehearse prep-nixl" >&2
     exit 2 ;;
esac
