#!/usr/bin/env bash
# The handoff pair as two SLURM tasks (benchmark=handoff across nodes): task 0 runs `bench run benchmark=handoff`
# (the side that initiates, times and records), task 1 the peer (`bench handoff-peer`); they meet through a file in
# a directory both tasks see. Arguments go to `bench run`.
#   srun --nodes=2 --ntasks=2 --ntasks-per-node=1 --wait=60 scripts/handoff_srun.sh model=llama3_70b
#   srun --ntasks=2 scripts/handoff_srun.sh suite=quick     # both tasks on one node (the tests' path)
# TIERBENCH_RENDEZVOUS: the shared directory (default: the submit directory); TIERBENCH_ROOT: results (run.root).
# UCX picks the transport per pair of nodes (RDMA where there is one; UCX_NET_DEVICES / UCX_TLS narrow it).
set -euo pipefail
if [ "${SLURM_NTASKS:-0}" != 2 ]; then
  echo "handoff_srun.sh: run it under srun --ntasks=2 (SLURM_NTASKS=${SLURM_NTASKS:-unset})" >&2
  exit 2
fi
cd "${TIERBENCH_SRC:-${SLURM_SUBMIT_DIR:-$PWD}}"
DIR=${TIERBENCH_RENDEZVOUS:-${SLURM_SUBMIT_DIR:-$PWD}}
RDV="$DIR/.tierbench-handoff-${SLURM_JOB_ID}.${SLURM_STEP_ID:-0}.json"
if [ "$SLURM_PROCID" = 0 ]; then
  exec python -m bench run benchmark=handoff "handoff.peer_rendezvous='$RDV'" run.root="${TIERBENCH_ROOT:-results}" \
    harness.progress=false "$@"
fi
exec python -m bench handoff-peer --rendezvous "$RDV"
