"""The storage family's plots (declared in its package's FAMILY): each draws one figure from a records DataFrame
(bench.core.store.load) into a PNG and returns its path, or None when the run has no data for it."""
from __future__ import annotations

from typing import Optional

import pandas as pd

from bench.report.plotkit import ok_records, two_panels


def storage_vs_queue_depth(df: pd.DataFrame, path) -> Optional[str]:
    """Storage GB/s against queue depth, per engine (aio, threads, fio beside them), request size and pattern,
    read and write."""
    d = ok_records(df, ["file_read", "file_write"])
    if d.empty:
        return None
    d = d.assign(**{"param.engine": d["param.engine"].fillna("threads") if "param.engine" in d else "threads"})
    return two_panels(d, ["file_read", "file_write"], ["param.engine", "param.request_bytes", "param.pattern"],
                       "param.queue_depth", lambda k: f"{k[0]} {int(k[1]) >> 10} KiB {k[2]}",
                       "queue depth (requests in flight)", "GB/s", "Storage bandwidth: tierbench's engines and fio",
                       path)
