"""Results store: ``<run_dir>/manifest.json`` + ``<run_dir>/records.jsonl`` and the pandas loader.

Each record is one JSON line written with a single ``write`` on an O_APPEND descriptor, so a reader never sees
half a record and a killed run keeps every completed point. The manifest is replaced atomically (write + rename).
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Iterable, Union

import pandas as pd

from bench.errors import UserError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
RECORDS = "records.jsonl"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return x.item()
    return x


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class RunStore:
    """Writes one run directory."""

    def __init__(self, run_dir: Union[str, Path], run_id: str):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.dir / MANIFEST).exists():
            raise UserError(f"run directory {self.dir} already holds a run; choose another run.id")
        self.run_id = run_id
        self.records_path = self.dir / RECORDS
        self._fd = os.open(self.records_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.manifest: dict = {}

    def write_manifest(self, manifest: dict) -> None:
        self.manifest = manifest
        tmp = self.dir / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(_jsonable(manifest), indent=2, default=str) + "\n")
        os.replace(tmp, self.dir / MANIFEST)

    def append(self, record: dict) -> None:
        rec = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, "timestamp": now_iso(), **record}
        line = (json.dumps(_jsonable(rec), default=str, separators=(",", ":")) + "\n").encode()
        n = os.write(self._fd, line)  # one write: line-atomic on an O_APPEND file
        if n != len(line):
            raise OSError(f"short write to {self.records_path}: {n} of {len(line)} bytes")

    def finish(self, status: str, **extra) -> None:
        self.manifest.update(status=status, finished=now_iso(), **extra)
        self.write_manifest(self.manifest)
        os.close(self._fd)


def read_records(path: Union[str, Path]) -> list[dict]:
    """Records of one records.jsonl; a torn last line (power loss) is dropped with a warning."""
    out = []
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            out.append(json.loads(raw))
        except json.JSONDecodeError:
            warnings.warn(f"{path}: line {i + 1} is not a complete record; ignored")
    return out


def run_dirs(paths: Iterable[Union[str, Path]]) -> list[Path]:
    """Run directories under the given paths (a run dir, a sweep dir holding runs, or a results root)."""
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise UserError(f"results path {str(p)!r} does not exist")
        if (p / RECORDS).exists():
            found.append(p)
        else:
            found.extend(sorted(q.parent for q in p.rglob(RECORDS)))
    if not found:
        raise UserError(f"no {RECORDS} under {', '.join(map(str, paths))}; run `python -m bench run` first")
    return list(dict.fromkeys(found))


def read_manifest(run_dir: Union[str, Path]) -> dict:
    p = Path(run_dir) / MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def load(*paths: Union[str, Path]) -> pd.DataFrame:
    """One tidy DataFrame of every record under ``paths``.

    Columns: run_id, benchmark, family, device, status, reason, verified, ``param.<axis>``, ``metric.<name>``,
    ``throttled``, plus ``gpu_name`` and ``host`` from each run's manifest.
    """
    rows = []
    for d in run_dirs(paths):
        man = read_manifest(d)
        hw = man.get("hardware", {})
        gpu = (hw.get("gpu") or {}).get("name")
        for r in read_records(d / RECORDS):
            row = {k: r.get(k) for k in ("run_id", "benchmark", "family", "device", "status", "reason", "verified",
                                         "l2_flushed", "timestamp", "repro")}
            row["throttled"] = (r.get("throttle") or {}).get("throttled")
            row["implausible"] = (r.get("info") or {}).get("implausible")
            row.update({f"param.{k}": v for k, v in (r.get("params") or {}).items()})
            row.update({f"metric.{k}": v for k, v in (r.get("metrics") or {}).items()})
            row["gpu_name"] = gpu
            row["host"] = (hw.get("host") or {}).get("hostname")
            row["run_dir"] = str(d)
            rows.append(row)
    return pd.DataFrame(rows)
