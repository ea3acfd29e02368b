#!/usr/bin/env bash
# One tierbench run per node of a SLURM array, all into one shared results root; arguments go to `bench run`.
#   sbatch --array=0-3 scripts/sbatch_example.sh suite=default model=llama3_8b
#   sbatch --array=0-1 --partition=debug --gpus-per-node=0 scripts/sbatch_example.sh harness.device=cpu model=tiny suite=quick
#   python -m bench status "$TIERBENCH_ROOT"  # or: python scripts/merge_results.py "$TIERBENCH_ROOT" all_nodes.parquet
# Exclusive: a benchmark must not share its node (two array tasks on one node measured 0.008 GB/s H2D at 64 KiB).
# At the time limit SLURM sends SIGUSR2 120 s early to the batch shell, which is python itself (exec): the run
# stops cleanly (manifest "interrupted", completed points kept). scancel (SIGTERM) does the same.
#SBATCH --job-name=tierbench
#SBATCH --nodes=1
#SBATCH --exclusive
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=96G
#SBATCH --time=02:00:00
#SBATCH --signal=B:USR2@120
#SBATCH --output=tierbench-%A_%a.out
set -euo pipefail
ROOT=${TIERBENCH_ROOT:-$HOME/tierbench-results}
cd "${TIERBENCH_SRC:-$SLURM_SUBMIT_DIR}"
# run.id defaults to <time>-<host>-p<pid>-j<SLURM_ARRAY_JOB_ID>_<SLURM_ARRAY_TASK_ID> (j<SLURM_JOB_ID> outside an
# array): no two tasks share a directory, and the id is the one sacct/squeue show.
# Local NVMe for the storage tier: storage.path (the node's /tmp is often tmpfs or a small disk).
exec python -m bench run run.root="$ROOT" storage.path="${TIERBENCH_NVME:-/var/tmp}" harness.progress=false \
  run.notes="slurm ${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-}}${SLURM_ARRAY_TASK_ID:+_$SLURM_ARRAY_TASK_ID}" "$@"
