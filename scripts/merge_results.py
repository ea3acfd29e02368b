#!/usr/bin/env python3
"""Merge every tierbench run under one or more roots (a sweep directory, one run per SLURM node, a results root)
into one table.

    python scripts/merge_results.py ROOT [MORE_ROOTS ...] OUT.(parquet|csv)

Each row keeps its run_id, host, gpu_name, run_status (complete, interrupted, failed, ...) and SLURM ids, so runs
from different nodes stay apart and an incomplete run is visible as one. Runs that failed before their first point
have no rows: they are listed on the console. Errors are one line, exit 2.
"""
import sys
from pathlib import Path


def main(argv):
    from bench.core.errors import UserError

    if len(argv) < 2 or not argv[-1].endswith((".parquet", ".csv")):
        print("usage: merge_results.py ROOT [ROOT ...] OUT.parquet|OUT.csv", file=sys.stderr)
        return 2
    import bench.core.store as store

    roots, out = argv[:-1], argv[-1]
    try:
        for r in roots:
            if not Path(r).is_dir():
                raise UserError(f"{r!r} is not a directory: give a run, sweep or results directory")
        empty = store.runs_without_records(roots)
        for d, what in empty:
            print(f"{d}: no records ({what})")
        df = store.load(*roots)
        store.check_writable_file(out, "output file")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    (df.to_parquet if out.endswith(".parquet") else df.to_csv)(out, index=False)
    states = df.groupby("run_id")["run_status"].first().value_counts().to_dict()
    print(f"{len(df)} records from {df['run_id'].nunique()} runs on {df['host'].nunique()} hosts "
          f"({', '.join(f'{n} {s}' for s, n in states.items())}) -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
