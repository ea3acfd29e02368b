#!/usr/bin/env bash
# The suite on a GPU node, checked against raw torch in the same process, in two steps of at most ~5 minutes each
# on an H200 (a GPU session can be cut off: every figure is written to OUT the moment it is measured):
#
#   scripts/gpu_check.sh quick   [OUT]   # imports, pytest -m gpu, then figure by figure the suite's point beside a
#                                        # raw torch reference at the same shape (pinned/pageable copies, D2D, GEMM,
#                                        # SDPA prefill and decode unforced): OUT/figures.jsonl
#   scripts/gpu_check.sh verdict [OUT]   # the default suite to its verdict (family budgets trimmed to fit 5 min),
#                                        # end-to-end replay included; the run is copied to results/reference/<gpu>/
#   scripts/gpu_check.sh summary [OUT]   # each figure beside its raw reference; exit 1 when one is more than 5% off,
#                                        # above the physical peak, or missing (so it fails without GPU figures)
#   scripts/gpu_check.sh all     [OUT]   # quick verdict summary
#
# OUT defaults to $OUT (the device tool's output folder) or results/gpu_check. Each step keeps a full log there and,
# on failure, exits non-zero with its tail.
set -uo pipefail
step=${1:-all}
out=${2:-${OUT:-results/gpu_check}}
mkdir -p "$out"
py=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)

run_step() {  # name, command...: full output to $out/<name>.log; on failure print its tail and stop
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  if "$@" 2>&1 | tee "$out/$name.log"; then
    echo "   ok in $((SECONDS - t0)) s (log: $out/$name.log)"
  else
    local rc=${PIPESTATUS[0]}
    echo "!! $name FAILED (exit $rc) after $((SECONDS - t0)) s; last lines of $out/$name.log:" >&2
    tail -n 40 "$out/$name.log" >&2
    exit "$rc"
  fi
}

step_imports() {
  run_step imports $py - <<'PY'
import sys
problems = []
import torch
if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})")
print(f"torch {torch.__version__} CUDA {torch.version.cuda} cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.get_device_name(0)}")
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

step_quick() {
  step_imports
  run_step tests bash -c "$py -m pytest -q -n 0 -m gpu tests && $py -m pytest -q -n 0 tests/harness/test_sim_timing.py tests/hw/test_gpu_paths.py tests/hw/test_warm_kernels.py"
  run_step figures $py "$here/gpu_check.py" figures "$out"
  $py "$here/gpu_check.py" summary "$out" || true  # the figures so far; `summary` is the step that decides
}

step_verdict() {
  # the default suite with its slowest families' budgets trimmed so the run and its analysis fit ~5 minutes
  run_step verdict $py -m bench run run.root="$out" run.id=verdict harness.progress=false \
    storage.budget_s=60 validate.budget_s=70 interference.budget_s=45
  target=$($py -c "
import torch
from bench.plan.targets import GPU_NAMES
name = torch.cuda.get_device_name(0)
print(next((t for key, t in GPU_NAMES if key in name), name.replace(' ', '_').lower()))")
  ref="results/reference/$target"
  mkdir -p "$ref"
  cp "$out/verdict/manifest.json" "$out/verdict/records.jsonl" "$ref/"
  for m in "$out"/verdict/model-*/model.json; do
    [ -f "$m" ] && mkdir -p "$ref/$(basename "$(dirname "$m")")" && cp "$m" "$ref/$(basename "$(dirname "$m")")/"
  done
  echo "reference run: $ref (compare yours: python -m bench compare $ref YOUR_RUN)"
  cp -r "$ref" "$out/reference-$target" 2>/dev/null || true
}

step_summary() {
  $py "$here/gpu_check.py" summary "$out" | tee "$out/summary.log"
  exit "${PIPESTATUS[0]}"
}

case "$step" in
  quick|verdict|summary|imports) "step_$step" ;;
  all) step_quick; step_verdict; step_summary ;;
  *) echo "scripts/gpu_check.sh: step '$step' is not one of: quick verdict summary all" >&2
     exit 2 ;;
esac
