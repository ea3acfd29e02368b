#!/usr/bin/env python3
"""Merge every tierbench run under one or more roots (e.g. one run per SLURM node) into one table.

    python scripts/merge_results.py RESULTS_ROOT [MORE_ROOTS ...] OUT.(parquet|csv)

Each row keeps its run_id, host and gpu_name, so runs from different nodes stay apart.
"""
import sys

import bench.store as store


def main(argv):
    if len(argv) < 2 or not argv[-1].endswith((".parquet", ".csv")):
        print("usage: merge_results.py ROOT [ROOT ...] OUT.parquet|OUT.csv", file=sys.stderr)
        return 2
    df = store.load(*argv[:-1])
    out = argv[-1]
    (df.to_parquet if out.endswith(".parquet") else df.to_csv)(out, index=False)
    print(f"{len(df)} records from {df['run_id'].nunique()} runs on {df['host'].nunique()} hosts -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
