#!/usr/bin/env bash
# One tierbench run per node of a SLURM array, all into one shared results root; then merge them.
#   sbatch --array=0-3 scripts/sbatch_example.sh
#   python scripts/merge_results.py /shared/tierbench/results all_nodes.parquet
#SBATCH --job-name=tierbench
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=16
#SBATCH --mem=96G
#SBATCH --time=02:00:00
#SBATCH --output=tierbench-%A_%a.out
set -euo pipefail
ROOT=${TIERBENCH_ROOT:-$HOME/tierbench-results}
cd "${TIERBENCH_SRC:-$SLURM_SUBMIT_DIR}"
# run.id defaults to <time>-<host>-p<pid>-j<SLURM_JOB_ID>-t<SLURM_PROCID>: no two nodes share a directory.
# Local NVMe for the storage tier: point storage.path at it (the node's /tmp is often tmpfs or a small disk).
python -m bench run suite=default run.root="$ROOT" storage.path="${TIERBENCH_NVME:-/var/tmp}" \
  run.notes="slurm array ${SLURM_ARRAY_JOB_ID:-}_${SLURM_ARRAY_TASK_ID:-}" harness.progress=false
