"""Results store: ``<run_dir>/manifest.json`` + ``<run_dir>/records.jsonl`` and the pandas loader.

Each record is one JSON line written with a single ``write`` on an O_APPEND descriptor, so a reader never sees
half a record and a killed run keeps every completed point. The manifest is replaced atomically (write + rename).
"""
from __future__ import annotations

import errno
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Iterable, Optional, Union

import pandas as pd

from bench.core.errors import UserError
from bench.core.units import rate, sig

# 2: e2e_agentic_replay records carry their turn plan (info.plan) instead of the model's prediction, which
# bench.model.replay_check makes after the run (it reads schema 1 records' recorded prediction as they are)
SCHEMA_VERSION = 2
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


def write_manifest(run_dir: Union[str, Path], manifest: dict) -> None:
    """The one manifest writer: replace ``run_dir``'s manifest atomically (write + rename); when the write fails (a
    full disk) no temp file is left and the last good manifest stays."""
    run_dir = Path(run_dir)
    tmp = run_dir / (MANIFEST + ".tmp")
    try:
        tmp.write_text(json.dumps(_jsonable(manifest), indent=2, default=str) + "\n")
        os.replace(tmp, run_dir / MANIFEST)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


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
        write_manifest(self.dir, manifest)

    def append(self, record: dict) -> None:
        rec = {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, "timestamp": now_iso(), **record}
        line = (json.dumps(_jsonable(rec), default=str, separators=(",", ":")) + "\n").encode()
        end = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            n = os.write(self._fd, line)  # one write: line-atomic on an O_APPEND file
        except OSError:
            os.ftruncate(self._fd, end)
            raise
        if n != len(line):  # a full filesystem takes part of the line: cut it off, every line stays a whole record
            os.ftruncate(self._fd, end)
            raise OSError(errno.ENOSPC, f"No space left on device (short write to {self.records_path}: {n} of "
                                        f"{len(line)} bytes)")

    def finish(self, status: str, **extra) -> None:
        self.manifest.update(status=status, finished=now_iso(), **extra)
        try:
            self.write_manifest(self.manifest)
        finally:
            os.close(self._fd)


STATUSES = ("ok", "skipped", "error")


def read_records(path: Union[str, Path]) -> list[dict]:
    """Records of one records.jsonl; a torn last line (power loss) or a line that is not a record (not an object
    with a benchmark name and a status) is dropped with a one-line warning."""
    out = []
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror}") from None
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            warnings.warn(f"{path}: line {i + 1} is not a complete record; ignored")
            continue
        if not (isinstance(rec, dict) and isinstance(rec.get("benchmark"), str) and rec.get("status") in STATUSES
                and isinstance(rec.get("params", {}), dict) and isinstance(rec.get("metrics", {}) or {}, dict)):
            warnings.warn(f"{path}: line {i + 1} is not a tierbench record (an object with benchmark, status, params, "
                          "metrics); ignored")
            continue
        out.append(rec)
    return out


def run_state(man: dict, n_records: Optional[int] = None) -> Optional[str]:
    """None for a complete run; else what it is: interrupted, failed (and why), still running or killed (a manifest
    left at 'running'), no manifest at all, or, given ``n_records`` (the records its records.jsonl holds), a
    complete run whose records do not match the counts its manifest wrote at the end (truncated, edited or mixed
    up). Every command that uses a run says this where it shows the run."""
    status = man.get("status")
    if status == "complete":
        counts = man.get("counts")
        if n_records is not None and isinstance(counts, dict):
            want = sum(int(v) for v in counts.values() if isinstance(v, (int, float)))
            if n_records != want:
                return (f"truncated: records.jsonl holds {n_records} of the {want} records its manifest counts "
                        "(truncated or edited after the run)")
        return None
    if not man:
        return "no manifest (not written by a run that started, or removed)"
    if status == "running":
        return "running, or killed (its manifest never recorded an end)"
    if status == "failed":
        return f"failed ({man.get('error') or 'no reason recorded'})" + \
            (" before its first point" if man.get("before_first_point") else "")
    if status == "interrupted" and man.get("reason"):
        return f"interrupted ({man['reason']})" + (" before its first point" if man.get("before_first_point") else "")
    return str(status or "unknown status")


RATE_METRICS = ("gbps", "tflops", "tokens_per_s", "median_s", "min_s", "iops")


def corrupt_numbers(rec: dict) -> list[str]:
    """Times and rates of an ok record that cannot be real (non-finite, zero or negative), as 'metric=value'."""
    if rec.get("status") != "ok":
        return []
    bad = []
    for k, v in (rec.get("metrics") or {}).items():
        if k in RATE_METRICS or k.endswith(("_gbps", "_s", "_per_s", "_us")) and k not in SIGNED_METRICS:
            if isinstance(v, bool) or v is None:
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                bad.append(f"{k}={v!r}")
                continue
            if not math.isfinite(x) or x < 0 or (k in RATE_METRICS and x == 0):
                bad.append(f"{k}={v!r}")
    return bad


# times/rates that are differences and may be negative
SIGNED_METRICS = ("excess_exposed_s", "exposed_copy_s")


def describe(rec: dict) -> str:
    params = " ".join(f"{k}={v}" for k, v in (rec.get("params") or {}).items())
    return f"{rec.get('benchmark')} {params}".strip()


def check_numbers(records, where: str) -> None:
    """One line naming the first corrupt number (benchmark, params, metric=value) and how many, as a UserError."""
    bad = [(r, corrupt_numbers(r)) for r in records]
    bad = [(r, b) for r, b in bad if b]
    if bad:
        r, b = bad[0]
        more = f" (and {len(bad) - 1} more point(s))" if len(bad) > 1 else ""
        raise UserError(f"{where}: corrupt number in {describe(r)}: {', '.join(b)}: a time or rate must be finite and "
                        f"> 0{more}; re-measure the point or remove the run")


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


def runs_without_records(paths: Iterable[Union[str, Path]]) -> list[tuple[Path, str]]:
    """[(run dir, what it is)] of runs under ``paths`` with a manifest and no records (failed before any point)."""
    out = []
    for p in paths:
        p = Path(p)
        mans = [p / MANIFEST] if (p / MANIFEST).exists() else sorted(p.rglob(MANIFEST)) if p.is_dir() else []
        for m in mans:
            if not (m.parent / RECORDS).exists():
                out.append((m.parent, run_state(read_manifest(m.parent), 0) or "complete, with no records"))
    return out


def read_manifest(run_dir: Union[str, Path]) -> dict:
    p = Path(run_dir) / MANIFEST
    return json.loads(p.read_text()) if p.exists() else {}


def load(*paths: Union[str, Path]) -> pd.DataFrame:
    """One tidy DataFrame of every record under ``paths``.

    Columns: run_id, benchmark, family, device, status, reason, verified, ``param.<axis>``, ``metric.<name>``,
    ``throttled``, ``implausible`` (why a bandwidth is above the physical peak: :func:`implausible_points`), plus from each run's manifest ``gpu_name``, ``host``, ``run_status`` (complete, interrupted,
    failed, running, no manifest), ``run_incomplete`` (None, or what the run is), ``slurm_job_id`` (``<array
    job>_<task>`` for an array task), ``slurm_array_job_id`` and ``slurm_array_task_id``. Runs that wrote a manifest
    but no record (a job that failed before its first point) have no rows: :func:`runs_without_records` names them.
    """
    rows = []
    for d in run_dirs(paths):
        man = read_manifest(d)
        hw = man.get("hardware", {})
        gpu = (hw.get("gpu") or {}).get("name")
        recs = read_records(d / RECORDS)
        state = run_state(man, len(recs))
        impossible = implausible_points(recs, man)
        sl = man.get("slurm") or {}
        slurm = sl.get("id") or (hw.get("host") or {}).get("slurm_job_id")
        for r in recs:
            row = {k: r.get(k) for k in ("run_id", "benchmark", "family", "device", "status", "reason", "verified",
                                         "l2_flushed", "timestamp", "repro")}
            row["throttled"] = (r.get("throttle") or {}).get("throttled")
            row["implausible"] = impossible.get(point_key(r))  # above the physical peak: never a result
            row["attention_kernel"] = (r.get("info") or {}).get("attention_kernel")
            row.update({f"param.{k}": v for k, v in (r.get("params") or {}).items()})
            row.update({f"metric.{k}": v for k, v in (r.get("metrics") or {}).items()})
            row["gpu_name"] = gpu
            row["host"] = (hw.get("host") or {}).get("hostname")
            row["run_dir"] = str(d)
            row["run_status"] = man.get("status") or "no manifest"
            row["run_incomplete"] = state
            row["slurm_job_id"] = slurm
            row["slurm_array_job_id"] = sl.get("array_job_id")
            row["slurm_array_task_id"] = sl.get("array_task_id")
            rows.append(row)
    return pd.DataFrame(rows)


# -- output locations --------------------------------------------------------------------------------------------
def check_writable_dir(path: Union[str, Path], what: str) -> Path:
    """``path`` is, or can be created as, a directory this process can write into; else one UserError naming
    ``what`` (the option or key the user typed) and the path. Checked before any work that would write there."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UserError(f"{what}={str(path)!r} is a file, not a directory; give a directory")
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{what}={str(path)!r}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or not _can_create(probe):
        raise UserError(f"{what}={str(path)!r} is not writable ({probe} is read-only for this user); give a "
                        "writable directory")
    return p


def _can_create(d: Path) -> bool:
    """A real probe: os.access says yes to root even on a read-only mount."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile(dir=d, prefix=".tierbench-probe-"):
            return True
    except OSError:
        return False


def check_writable_file(path: Union[str, Path], what: str) -> Path:
    """``path`` can be written as a file (its directory writable, not itself a directory)."""
    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what}={str(path)!r} is a directory; give a file path")
    check_writable_dir(p.parent if str(p.parent) else Path("."), what + " (its directory)")
    if p.exists() and not os.access(p, os.W_OK):
        raise UserError(f"{what}={str(path)!r} exists and is read-only")
    return p


# -- points a run itself shows to be off ---------------------------------------------------------------------------
SIZE_AXES = {"size_bytes", "request_bytes", "block_tokens"}
# how far GB/s may fall as a sweep's size grows before the point is suspect: on a GPU (L2 flushed, PCIe or HBM
# bound) not by half; on the CPU a size that leaves the caches really is 3-5x slower, so only a 10x fall counts
FALL_LIMIT = {"cuda": 0.5, "cpu": 0.1}


HOST_CEILING_GBPS = 2000.0  # no host memory system moves more (a 2-socket 24-channel DDR5 server: ~1 TB/s)


def physical_ceiling(rec: dict, manifest: dict) -> tuple[Optional[float], str]:
    """(the most GB/s a record's bandwidth can physically be, where that figure comes from): the peak the run
    itself held the point to (its ``gbps_peak``); else, on a GPU, its HBM peak or twice its link's peak, whichever
    is larger (every path a benchmark here takes is bounded by one of them); else what any host memory system
    moves. The same ceiling the run holds its points to (bench.harness.point.plausibility), from the fingerprint."""
    m = rec.get("metrics") or {}
    if m.get("gbps_peak"):
        return float(m["gbps_peak"]), "the peak the run held this point to"
    gpu = ((manifest.get("hardware") or {}).get("gpu") or {})
    if rec.get("device") == "cuda" and gpu:
        hbm = gpu.get("hbm_peak_gbps")
        link = (gpu.get("pcie") or {}).get("peak_gbps_per_direction")  # bench.hw.fingerprint.link_peak
        peak = max(x for x in (hbm, 2 * link if link else None, 0.0) if x is not None)
        if peak:
            return peak, "the GPU's HBM or link peak in the run's fingerprint"
    return HOST_CEILING_GBPS, "more than any host memory system moves"


def implausible_points(records: list, manifest: dict) -> dict:
    """{point key: why} for ok points whose bandwidth exceeds what the hardware can physically move (2% slack, as
    the run's own check) or that the run itself flagged as above its peak: a bug or an edited record, never a
    result, never a reference for another point."""
    out: dict = {}
    for r in records:
        if r.get("status") != "ok":
            continue
        own = (r.get("info") or {}).get("implausible")
        gbps = (r.get("metrics") or {}).get("gbps")
        if own:
            out[point_key(r)] = f"above the physical peak: {own} (flagged by the run itself)"
        elif gbps is not None:
            peak, where = physical_ceiling(r, manifest)
            if peak and float(gbps) > 1.02 * peak:
                out[point_key(r)] = (f"above the physical peak: {rate(float(gbps))} exceeds {rate(peak)} ({where}):"
                                     " a bug or an edited record, not a result")
    return out


def suspect_points(records: list, manifest: Optional[dict] = None) -> dict:
    """{point key: why} for ok points whose bandwidth is physically impossible (:func:`implausible_points`, when the
    run's ``manifest`` is given), far below what the same run measured for a smaller size of the same sweep (beyond
    FALL_LIMIT and the point's noise: a stall or a neighbour while it was timed; an impossible point is never the
    size they are judged against), and points timed under contention (another process busy, steal, a GPU
    shared)."""
    out: dict = implausible_points(records, manifest) if manifest is not None else {}
    groups: dict = {}
    for r in records:
        if r.get("status") != "ok" or point_key(r) in out:
            continue
        if (r.get("contention") or {}).get("contended"):
            out[point_key(r)] = "timed under contention: " + ", ".join(r["contention"].get("reasons") or [])
        params = r.get("params") or {}
        axis = next((a for a in SIZE_AXES if a in params), None)
        gbps = (r.get("metrics") or {}).get("gbps")
        if axis is None or gbps is None:
            continue
        rest = json.dumps({k: v for k, v in params.items() if k != axis}, sort_keys=True, default=str)
        groups.setdefault((r["benchmark"], axis, rest), []).append(r)
    for (bench, axis, _), recs in groups.items():
        recs = sorted(recs, key=lambda r: float(r["params"][axis]))
        best, best_r = 0.0, None
        for r in recs:
            m = r["metrics"]
            g, noise = float(m["gbps"]), float(m.get("noise") or 0)
            drop = FALL_LIMIT["cuda" if r.get("device") == "cuda" else "cpu"]
            if best_r is not None and g < drop * best * (1 - noise) and point_key(r) not in out:
                out[point_key(r)] = (f"{rate(g)} at {axis}={r['params'][axis]} is under {drop:.0%} of the "
                                     f"{rate(best)} the run measured at the smaller {axis}={best_r['params'][axis]}"
                                     " (beyond noise): a stall or a neighbour while it was timed")
            if g > best:
                best, best_r = g, r
    return out


def point_key(rec: dict) -> str:
    return rec["benchmark"] + " " + json.dumps(rec.get("params") or {}, sort_keys=True, default=str)
