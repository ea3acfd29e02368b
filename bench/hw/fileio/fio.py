"""fio beside tierbench's own engines: the same file, request size, pattern, queue depth and request count, run
through fio (libaio, O_DIRECT) and read back from its JSON, so a run shows both in adjacent records.

GB/s is fio's ``bw_bytes`` (1e9 B/s), the time per pass ``io_bytes / bw_bytes`` (fio's own runtime: its process
start and file layout are not in it); latency percentiles are fio's total latency (``lat``: submission to
completion, ``--lat_percentiles=1``) in microseconds, as tierbench's engines time a request; a JSON without
them (older commands) falls back to fio's completion latency (``clat``: submission left out) and says so.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from typing import Optional

PERCENTILES = ("50.000000", "99.000000", "99.900000")


def unavailable() -> Optional[str]:
    if shutil.which("fio") is None:
        return "fio not installed (apt-get install fio / dnf install fio): no fio record beside tierbench's"
    return None


def version() -> Optional[str]:
    try:
        return subprocess.run(["fio", "--version"], capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def command(path: str, write: bool, pattern: str, request: int, queue_depth: int, requests: int, file_bytes: int,
            seed: int, loops: int = 1) -> list[str]:
    """The fio command of ``loops`` passes: ``requests`` requests of ``request`` bytes, sequential from offset 0 or
    random distinct blocks (fio's random map, like tierbench's permutation), ``queue_depth`` in flight (libaio),
    O_DIRECT. fio reports its runtime in whole milliseconds: several loops keep that rounding small.
    ``--scramble_buffers=0``: by default fio rewrites part of its write buffer before every request, in series
    with the I/O at queue depth 1 (64 MiB sequential writes: 8.8% user CPU and 10% lower GB/s than without, five
    alternations on a virtio disk); tierbench's engines write from buffers filled before the pass, whose pages
    carry their own stamps (a word a page), so neither side's number holds per-request buffer work."""
    rw = {("sequential", False): "read", ("sequential", True): "write",
          ("random", False): "randread", ("random", True): "randwrite"}[(pattern, write)]
    return ["fio", "--name=tierbench", f"--filename={path}", f"--rw={rw}", f"--bs={request}",
            f"--size={file_bytes}", f"--io_size={requests * request}", "--ioengine=libaio",
            f"--iodepth={queue_depth}", "--direct=1", "--numjobs=1", "--thread", "--invalidate=1",
            "--scramble_buffers=0", "--randrepeat=1", f"--randseed={seed}", f"--loops={int(loops)}",
            "--lat_percentiles=1", "--percentile_list=50:99:99.9", "--output-format=json"]


def parse(doc: dict, write: bool, loops: int = 1) -> dict:
    """The figures of one fio JSON result (one job of ``loops`` passes): GB/s, IOPS, bytes, runtime, seconds per
    pass, latency percentiles (us) and which latency they are."""
    jobs = doc.get("jobs") or []
    if not jobs:
        raise ValueError("fio JSON without jobs")
    d = jobs[0]["write" if write else "read"]
    if not d.get("io_bytes"):
        raise ValueError(f"fio moved no bytes ({'write' if write else 'read'} section empty; error "
                         f"{jobs[0].get('error')})")
    pct = (d.get("lat_ns") or {}).get("percentile") or {}
    basis = "lat (submission to completion)"
    if not pct:
        pct, basis = (d.get("clat_ns") or {}).get("percentile") or {}, "clat (completion only: submission left out)"
    lat = {k: (pct[p] / 1e3 if p in pct else None) for k, p in zip(("lat_p50_us", "lat_p99_us", "lat_p999_us"),
                                                                  PERCENTILES)}
    return {"gbps": d["bw_bytes"] / 1e9, "iops": float(d["iops"]), "io_bytes": int(d["io_bytes"]),
            "runtime_s": d["runtime"] / 1e3, "seconds_per_pass": d["io_bytes"] / d["bw_bytes"] / loops,
            "fio_version": doc.get("fio version"), "usr_cpu": jobs[0].get("usr_cpu"),
            "sys_cpu": jobs[0].get("sys_cpu"), "latency_basis": basis, **lat}


def run(cmd: list[str], write: bool, timeout_s: float = 600) -> dict:
    """Run fio once; its parsed figures, or RuntimeError with fio's own message."""
    loops = next((int(a.split("=", 1)[1]) for a in cmd if a.startswith("--loops=")), 1)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0:
        msg = (p.stderr or p.stdout).strip().splitlines()
        raise RuntimeError(f"fio failed (exit {p.returncode}): {msg[-1] if msg else 'no output'}")
    start = p.stdout.find("{")  # fio may print notes before the JSON
    return parse(json.loads(p.stdout[start:]), write, loops)
