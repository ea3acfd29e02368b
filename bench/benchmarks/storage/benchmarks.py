"""Storage tier: KV blocks and raw requests between host memory (or the GPU) and files under storage.path.

Reads never come from the page cache: files are opened with O_DIRECT (aligned buffers) or, where the filesystem
refuses it, read buffered after a per-file page-cache drop; before every timed read the file's resident pages
are counted with mincore and must be 0, or the point fails. Every block read back is checked against its seeded
pattern outside timing. GB/s = 1e9 B/s of payload; iops = requests/s; lat_p50_us / lat_p99_us per request.
"""
from __future__ import annotations

import math
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bench.core.checks import check, positive_ints
from bench.core.errors import UserError
from bench.core.units import bytes_binary
from bench.hw.fileio import (IOPass, StorageFault, create_pattern_file, direct_alignment, drop_cache, expected_bytes,
                          first_bad_page, offsets, open_file, pass_bounds, pass_requests, pattern_tile)
from bench.benchmarks.storage import cost as C
from bench.benchmarks.storage.sizes import FIO_MIN_RUN_S
from bench.core.registry import benchmark
from bench.harness import need
from bench.llm.shapes import ModelShape
from bench.core.checks import validator

PATTERNS = ("sequential", "random", "repeat")
DIRECT = ("auto", "require", "off")
ENGINES = ("aio", "threads", "fio")  # host <-> file: Linux AIO (bench.hw.fileio.aio), synchronous threads, fio itself


def storage_root(cfg) -> str:
    """storage.path, or a temp dir on the root disk (/var/tmp: /tmp is tmpfs on many systems)."""
    if cfg.storage.path is not None:
        return str(cfg.storage.path)
    return "/var/tmp" if os.path.isdir("/var/tmp") else tempfile.gettempdir()


def request_sizes(c) -> list[int]:
    """Raw request sizes plus the KV block sizes of the model preset, ascending, no duplicates."""
    shape = ModelShape.from_cfg(c.model)
    sizes = set(int(s) for s in c.storage.request_bytes)
    sizes.update(shape.kv_block_bytes(int(b)) for b in c.storage.kv_block_tokens)
    return sorted(sizes)


def _axes(c):
    return {"engine": list(c.storage.engines), "request_bytes": request_sizes(c), "pattern": list(c.storage.patterns),
            "queue_depth": list(c.storage.queue_depths)}


class Workdir:
    """A private directory under storage.path holding the run's pattern files; removed at the end of the run
    (also on Ctrl-C/SIGTERM through the harness's cleanups)."""

    def __init__(self, root: str):
        host = socket.gethostname().split('.')[0]
        self.stale = remove_stale(Path(root), host)
        self.path = Path(root) / f".tierbench-{host}-{os.getpid()}"
        self.path.mkdir(exist_ok=True)
        self.files: dict = {}

    def pattern_file(self, nbytes: int, seed: int, direct: str) -> tuple[str, str]:
        key = (nbytes, seed, direct)
        if key not in self.files:
            p = str(self.path / f"kv-{nbytes}-{seed}.bin")
            self.files[key] = (p, create_pattern_file(p, nbytes, seed, direct))
        return self.files[key]

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale(root: Path, host: str) -> list[tuple[str, int]]:
    """Remove this host's work dirs under ``root`` left by runs that were killed (their process is gone);
    returns [(dir name, bytes freed)]."""
    out = []
    for d in root.glob(f".tierbench-{host}-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if not pid.isdigit() or int(pid) == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        size = sum(f.stat().st_size for f in d.glob("*") if f.is_file())
        shutil.rmtree(d, ignore_errors=True)
        out.append((d.name, size))
    return out


def workdir(state) -> Workdir:
    root = storage_root(state.cfg)
    wd = state.run_resource(("storage_workdir", root), lambda: Workdir(root), Workdir.remove)
    if wd.stale:
        print(f"storage: removed {len(wd.stale)} work dir(s) of killed runs under {root} "
              f"({sum(b for _, b in wd.stale) / 2**20:.0f} MiB): {', '.join(n for n, _ in wd.stale)}", flush=True)
        state.note(stale_workdirs_removed=[n for n, _ in wd.stale])
        wd.stale = []
    return wd


@dataclass
class Target:
    """The file a point works on and the request pass over it."""

    path: str
    fd: int
    mode: str  # o_direct | buffered+drop
    io: IOPass
    file_bytes: int
    tile: np.ndarray


def open_cached(state, path: str, write: bool) -> tuple[int, str]:
    direct = state.cfg.storage.direct
    return state.run_resource(("fd", path, write, direct), lambda: open_file(path, write, direct),
                              lambda fm: os.close(fm[0]))


def io_need(state, write: bool, own_buffers: bool = True, device_bytes: int = 0, host_bytes: int = 0,
            what: str = "", s=None):
    """The needs of a storage point: the engine's I/O buffers (host memory, engine_host_bytes) unless the requests
    go into the caller's buffers (``own_buffers=False``), the caller's ``device_bytes`` / ``host_bytes``
    (``what``), and the file. ``s``: the storage settings (default ``storage``; bench.benchmarks.warm.benchmarks reads its
    own file under them)."""
    req, qd, _, file_bytes, _, (_, most) = point_requests(state, write, s)
    engine = state.params.get("engine", "threads")
    own = engine_host_bytes(engine, req, qd, most, write) if own_buffers else 0
    return need(device_bytes, ", ".join(filter(None, [f"{engine} I/O buffers" if own else "", what])),
                host_bytes=own + host_bytes, file_bytes=file_bytes)


def setup(state, write: bool, targets_for=None, most_cap: int = 0, s=None) -> Target:
    """Pattern file, open descriptor and steady-state request pass for this point (skips with the reason when
    impossible); its memory is the point's needs (:func:`io_need`). ``targets_for(bytes)``: the caller's buffer
    the requests go into; ``most_cap``: at most this many requests per pass (a pass held in memory whole); ``s``:
    the storage settings (default ``storage``)."""
    s = state.cfg.storage if s is None else s
    req, qd, pattern, file_bytes, align, _ = point_requests(state, write, s)
    engine = state.params.get("engine", "threads")
    wd = workdir(state)
    path, _ = wd.pattern_file(file_bytes, int(s.seed), s.direct)
    fd, mode = open_cached(state, path, write)
    tile = pattern_tile(int(s.seed))
    offs = steady_offsets(state, write, req, qd, pattern, fd, mode, align, tile, most_cap, s)
    targets = targets_for(len(offs) * req) if targets_for else None
    io = make_pass(state, engine, mode, fd, offs, req, qd, write, align, tile, targets)
    state.note(io_mode=mode, alignment_bytes=align, file_bytes=file_bytes, path=str(wd.path),
               requests_per_pass=len(offs), engine=engine)
    return Target(path, fd, mode, io, file_bytes, tile)


def point_requests(state, write: bool, s=None) -> tuple[int, int, str, int, int, tuple[int, int]]:
    """The point's requests, the same for every engine: request bytes, queue depth, pattern, file bytes, O_DIRECT
    alignment and the (fewest, most) requests of one pass (bench.hw.fileio.pass_bounds). Skips (with why) a
    memory-backed storage.path and a request size that is not a multiple of the alignment. ``s``: the storage
    settings (default ``storage``)."""
    s = state.cfg.storage if s is None else s
    req = int(state.params["request_bytes"])
    qd = int(state.params.get("queue_depth", 1))
    pattern = state.params.get("pattern", "sequential")
    file_bytes = int(s.file_bytes)
    root = storage_root(state.cfg)
    refuse_memory_backed(state, root, write)
    align = direct_alignment(root)
    if req % align:
        state.skip(f"request {req} bytes is not a multiple of the O_DIRECT alignment {align}")
    if file_bytes < req:
        state.skip(f"request {req} bytes larger than the file (storage.file_bytes={file_bytes})")
    return req, qd, pattern, file_bytes, align, pass_bounds(pattern, req, qd, file_bytes, int(s.pass_depths),
                                                            int(s.pass_max_bytes))


PROBE_PASSES = 5  # at most this many untimed probe passes (at least 2, until they add up to half of storage.pass_s)


def steady_offsets(state, write: bool, req: int, qd: int, pattern: str, fd: int, mode: str, align: int, tile,
                   most_cap: int = 0, s=None):
    """The offsets of a steady-state pass: an untimed probe pass of the fewest requests (page cache dropped first
    for reads; the AIO engine where it runs, else threads) gives the rate, and the pass is sized to last about
    storage.pass_s at it, within bench.hw.fileio.pass_bounds. Measured once per (request, queue depth, pattern,
    direction) and run, so every engine (fio too) and the GPU paths time the same requests."""
    s = state.cfg.storage if s is None else s
    fewest, most = pass_bounds(pattern, req, qd, int(s.file_bytes), int(s.pass_depths), int(s.pass_max_bytes))
    if most_cap:  # a pass whose every request stays in memory at once (the GPU paths): at most what fits
        most, fewest = min(most, most_cap), min(fewest, most_cap)
    seed = int(s.seed) + req

    def probe():
        from bench.hw.fileio.aio import unavailable

        offs = offsets(pattern, req, fewest, int(s.file_bytes), seed)
        engine = "aio" if (mode == "o_direct" and unavailable() is None) else "threads"
        io = make_pass(state, engine, mode, fd, offs, req, qd, write, align, tile)
        took, spent = [], 0.0
        while len(took) < PROBE_PASSES and (len(took) < 2 or spent < float(s.pass_s) / 2):
            if not write:
                _drop_and_prove(fd, int(s.file_bytes))()
            t0 = time.perf_counter()
            io.run()
            took.append(time.perf_counter() - t0)
            spent += took[-1]
        if engine == "aio":
            io.close()
        best = min(took)  # the first passes after the pattern file was written can stall on a virtual disk
        n = pass_requests(len(offs) / max(best, 1e-9), float(s.pass_s), fewest, most)
        return n, {"pass_s": float(s.pass_s), "probe_requests": len(offs), "probe_passes_s": took,
                   "probe_engine": engine, "requests": n, "bounds": [fewest, most]}

    n, facts = state.run_resource(("steady_pass", req, qd, pattern, write, int(s.file_bytes), most), probe)
    state.note(pass_sizing=facts)
    return offsets(pattern, req, n, int(s.file_bytes), seed)


def engine_host_bytes(engine: str, req: int, qd: int, requests: int, write: bool) -> int:
    """Host memory of an engine's I/O buffers for a pass (bytes): a buffer per request in flight, of the request
    for reads and of the pattern's period + the request for writes (bench.hw.fileio.pattern_slots), both engines."""
    from bench.hw.fileio import PATTERN_PERIOD

    slots = max(1, min(qd, requests)) if engine == "aio" else qd
    return slots * (req + (PATTERN_PERIOD if write else 0))


def make_pass(state, engine: str, mode: str, fd: int, offs, req: int, qd: int, write: bool, align: int, tile,
              targets=None):
    """The request pass of ``engine``: aio (Linux AIO, qd in flight from one thread, bench.hw.fileio.aio) or threads (qd
    synchronous threads, bench.hw.fileio.IOPass). An engine that cannot run here skips the point with why."""
    if engine == "aio":
        from bench.hw.fileio.aio import AioPass, unavailable

        why = unavailable()
        if why:
            state.skip(f"storage.engine=aio: {why}")
        if mode != "o_direct":
            state.skip("storage.engine=aio: the filesystem refused O_DIRECT, and without it Linux completes AIO "
                       "inside io_submit (queue depth 1 in disguise); engine=threads measures buffered I/O")
        io = AioPass(fd, offs, req, qd, write, align, tile if write else None, targets=targets)
        state.ctx.cleanups.append(io.close)
        return io
    return IOPass(fd, offs, req, qd, write, align, tile if write else None,
                  targets=None if targets is None else [targets[i * req:(i + 1) * req] for i in range(len(offs))])


MEMORY_FILESYSTEMS = ("tmpfs", "ramfs", "hugetlbfs")


def filesystem_of(path: str):
    """The filesystem type of the mount holding ``path``, or None when /proc/mounts cannot tell."""
    from bench.hw.fingerprint import mount_of

    try:
        best = mount_of(path)
    except OSError:
        return None
    return best[2] if best else None


def refuse_memory_backed(state, path: str, write: bool = True) -> None:
    """A read or write on a memory-backed filesystem never reaches a storage device (its pages are the data, no
    drop can evict them): skip with the reason, never a memory copy reported as storage."""
    fs = filesystem_of(path)
    if fs in MEMORY_FILESYSTEMS:
        state.skip(f"storage.path {path} is on {fs} (memory): a {'write' if write else 'read'} there is a memory "
                   "copy, not a storage number; point storage.path at a disk")


def _drop_and_prove(fd: int, file_bytes: int):
    def prepare():
        left = drop_cache(fd, file_bytes)
        if left:
            raise StorageFault(f"{left} pages of the file still in the page cache after the drop: a read now "
                               "would measure memory, not the disk")
    return prepare


def _latency_metrics(state, io) -> None:
    """Per-request latency percentiles over every timed pass (us; threads: each pread/pwrite call; aio: submission
    to the io_getevents that reaped it, fio's total latency lat) and IOPS from the median pass."""
    lat = np.concatenate(io.latencies_s) if io.latencies_s else np.array([np.nan])
    for name, q in (("lat_p50_us", 50), ("lat_p99_us", 99), ("lat_p999_us", 99.9)):
        state.set_metric(name, float(np.percentile(lat, q)) * 1e6)
    state.set_metric("iops", len(io.offs) / state.stats.median_s)


def _expected(tile, offs, req: int) -> np.ndarray:
    """The file's content at each request offset, concatenated (what a buffer holding those requests must hold)."""
    return np.concatenate([expected_bytes(tile, int(o), req) for o in offs])


def _verify_buffer(state, data: np.ndarray, offs, req: int, tile, what: str) -> None:
    """``data`` holds the requests at ``offs`` back to back; each must match the file's pattern."""
    bad = [o for i, o in enumerate(offs) if first_bad_page(data[i * req:(i + 1) * req], tile, int(o)) is not None]
    state.verify(not bad, f"{len(bad)} request(s) {what}")


def _verify_written(state, t: "Target") -> None:
    """Read the written requests back (page cache dropped, synchronous reads: an engine never checks itself) and
    check them against the pattern."""
    rfd, _ = open_cached(state, t.path, False)
    drop_cache(rfd, t.file_bytes)
    _verify_reads(state, IOPass(rfd, t.io.offs, t.io.request, t.io.queue_depth, False, t.io.align), t.tile,
                  "read-back after writes")


def _verify_reads(state, io: IOPass, tile, what: str) -> None:
    bad = io.run(verify_tile=tile)
    state.verify(not bad, f"{what}: {len(bad)} request(s) read wrong data, first at offset {bad[0][0] if bad else 0} "
                          f"(page {bad[0][1] if bad else 0})")


def _rw_need(write: bool):
    def needs(state):
        return fio_need(state, write) if state.params.get("engine") == "fio" else io_need(state, write)
    return needs


@benchmark("file_read", family="storage", cost=C.file_rw, axes=_axes, needs=_rw_need(False))
def file_read(state):
    """Read requests from a file into host memory (O_DIRECT, or buffered after a proven page-cache drop) at
    queue_depth: engine aio (Linux AIO, one thread), threads (synchronous threads) or fio (fio itself on the same
    file, for reference); GB/s, iops, lat_p50/p99/p999_us. Times one pass of the requests."""
    if state.params.get("engine") == "fio":
        return fio_point(state, write=False)
    t = setup(state, write=False)
    prepare = _drop_and_prove(t.fd, t.file_bytes)
    prepare()
    _verify_reads(state, t.io, t.tile, "before timing")
    state.add_bytes(t.io.bytes)
    state.exec(t.io.run, work="host", prepare=prepare)
    _latency_metrics(state, t.io)
    state.note(page_cache="dropped and verified empty (mincore) before every timed pass")


@benchmark("file_write", family="storage", cost=C.file_rw, axes=_axes, needs=_rw_need(True))
def file_write(state):
    """Write requests from host memory to a file (O_DIRECT; buffered fallback adds fdatasync to the timed pass so
    bytes reach the device) with engine aio, threads or fio; GB/s, iops, latency percentiles. Data read back and
    checked afterwards (after fio's writes the file's pattern is rewritten, untimed)."""
    if state.params.get("engine") == "fio":
        return fio_point(state, write=True)
    t = setup(state, write=True)
    run = t.io.run if t.mode == "o_direct" else (lambda: (t.io.run(), os.fdatasync(t.fd)))
    state.add_bytes(t.io.bytes)
    state.exec(run, work="host")
    _latency_metrics(state, t.io)
    _verify_written(state, t)



def fio_need(state, write: bool):
    """fio's own buffers (a request per slot in flight), the probe that sizes the pass (the AIO engine's), the file."""
    from bench.hw.fileio import fio

    why = fio.unavailable()
    if why:
        state.skip(why)
    if state.params["pattern"] not in ("sequential", "random"):
        state.skip(f"pattern={state.params['pattern']}: fio runs sequential and random passes only")
    req, qd, _, file_bytes, _, (_, most) = point_requests(state, write)
    return need(0, "fio's own buffers and the probe pass", host_bytes=max(req * qd, engine_host_bytes(
        "aio", req, qd, most, write)), file_bytes=file_bytes)


def fio_point(state, write: bool) -> None:
    """fio on the same file, request size, pattern, queue depth and request count as the other engines' points;
    one fio process per sample, timed by fio itself (bench.hw.fileio.fio). Page cache dropped and proven empty before each
    read; after writes (fio's own data) the file's pattern is rewritten, untimed, so later points still verify."""
    from bench.hw.fileio import fio
    from bench.harness.timing import summarize

    s = state.cfg.storage
    req, qd, pattern, file_bytes, align, _ = point_requests(state, write)
    wd = workdir(state)
    path, mode = wd.pattern_file(file_bytes, int(s.seed), s.direct)
    if mode != "o_direct":
        state.skip("the filesystem refused O_DIRECT: fio --direct=1 cannot run there")
    probe_fd, _ = open_cached(state, path, write)  # the steady-state pass the other engines time: same requests
    n = len(steady_offsets(state, write, req, qd, pattern, probe_fd, mode, align, pattern_tile(int(s.seed))))
    seed = int(s.seed) + req
    fd = open_cached(state, path, False)[0] if not write else None
    runs, rule = [], state.rule
    warm = fio.run(fio.command(path, write, pattern, req, qd, n, file_bytes, seed), write)
    loops = int(min(1000, max(1, math.ceil(FIO_MIN_RUN_S / max(warm["seconds_per_pass"], 1e-6)))))
    cmd = fio.command(path, write, pattern, req, qd, n, file_bytes, seed, loops)
    t_warm = warm["runtime_s"]
    while t_warm < state.warmup_s:  # warm-up as long as the other engines' (harness.warmup_s), untimed
        t_warm += fio.run(cmd, write)["runtime_s"]
    stop = None
    while stop is None:  # the harness's own stopping rule, over fio's runtime: as many seconds of I/O as the
        if fd is not None:  # other engines' points (more would be a longer sustained write, a different number)
            _drop_and_prove(fd, file_bytes)()
        runs.append(fio.run(cmd, write))
        t = [r["seconds_per_pass"] for r in runs]
        stop = rule.check(t, sum(r["runtime_s"] for r in runs))
    reason, converged = stop
    state.stats = summarize(t, 1, reason, converged, 1, clock="fio (its own runtime)", work="host")
    state.add_bytes(n * req)
    med = runs[int(np.argsort(t)[len(t) // 2])]
    for k in ("lat_p50_us", "lat_p99_us", "lat_p999_us"):
        state.set_metric(k, float(np.median([r[k] for r in runs if r[k] is not None])))
    if write:  # fio wrote its own data over the pattern: restore it (untimed) for the points after this one
        create_pattern_file(path, file_bytes, int(s.seed), s.direct)
    state.set_metric("iops", n / state.stats.median_s)
    state.note(engine="fio", fio_version=med["fio_version"], fio_command=" ".join(cmd), io_mode="o_direct",
               requests_per_pass=n, file_bytes=file_bytes, fio_runs=len(runs), fio_loops_per_run=loops,
               fio_latency=med["latency_basis"], fio_usr_cpu_pct=med["usr_cpu"], fio_sys_cpu_pct=med["sys_cpu"],
               page_cache="fio --invalidate=1, and for reads dropped and verified empty (mincore) before each run",
               verification="fio checks every completion's length; the content is fio's own (not checked here)")


def _cache_check_need(state):
    """The threads engine's buffer for either pass (same request size and depth) and the file."""
    return io_need(state, False)


@benchmark("file_read_cache_check", family="storage", cost=C.cache_check, needs=_cache_check_need,
           axes=lambda c: {"request_bytes": [int(c.storage.cache_check_bytes)], "queue_depth": [1]})
def file_read_cache_check(state):
    """Proof that reads miss the page cache: the same block read over and over vs distinct random blocks.
    Reports repeat_over_distinct (speed ratio); above 1 + 3 x noise the point is flagged cache_suspect."""
    results = {}
    for pattern in ("random", "repeat"):
        state.params["pattern"] = pattern
        t = setup(state, write=False)
        _verify_reads(state, t.io, t.tile, pattern)
        prepare = _drop_and_prove(t.fd, t.file_bytes)
        results[pattern] = state.reference(("cache_check", pattern, t.io.request), t.io.run, work="host",
                                           prepare=prepare)
    state.params["pattern"] = "random+repeat"
    state.add_bytes(t.io.bytes)
    state.stats = results["random"]
    ratio = results["random"].median_s / results["repeat"].median_s
    noise = max(results["random"].noise, results["repeat"].noise)
    state.set_metric("repeat_over_distinct", ratio)
    state.set_metric("cache_suspect", bool(ratio > 1 + 3 * noise))


# -- GPU <-> file -------------------------------------------------------------------------------------------------
def _kvikio_supported(device):
    if not device.is_cuda:
        return "KvikIO GPU<->file needs a CUDA device"
    if not getattr(device, "packages_known", True):  # planning another machine (plan.gpu): count its time
        return None
    try:
        import kvikio  # noqa: F401
    except ImportError:
        return ("kvikio not installed (pip install -e '.[gds-cu13]' or '.[gds-cu12]', matching "
                "torch.version.cuda)")
    return None


def kvikio_settings() -> dict:
    import kvikio
    import kvikio.defaults as d

    out = {"kvikio": getattr(kvikio, "__version__", None)}
    for key in ("compat_mode", "num_threads", "task_size", "gds_threshold", "auto_direct_io_read",
                "auto_direct_io_write"):
        try:
            out[key] = str(d.get(key))
        except Exception:  # older KvikIO: per-setting functions
            fn = getattr(d, key, None) or getattr(d, f"get_{key}", None)
            out[key] = str(fn()) if callable(fn) else None
    return out


def _gpu_axes(c):
    return {"request_bytes": [int(x) for x in c.storage.gpu_request_bytes], "pattern": ["sequential", "random"],
            "queue_depth": list(c.storage.gpu_queue_depths)}


def _gpu_pass_most(state, write: bool, copies: int) -> int:
    """The most requests of a GPU path's pass, whose every request is held at once in ``copies`` buffers of the
    point's memory budget (a GPU buffer; the bounce path's pinned buffer too, both host memory on the CPU)."""
    req, qd, _, _, _, (_, most) = point_requests(state, write)
    return max(1, min(most, state.mem_budget_bytes // (copies * req)))


def kvikio_need(state, write: bool):
    req = int(state.params["request_bytes"])
    most = _gpu_pass_most(state, write, 1)
    return need(most * req, "GPU buffer" + (" and its pattern in host memory" if write else ""),
                host_bytes=most * req if write else 0, file_bytes=point_requests(state, write)[3])


def bounce_need(state, write: bool):
    req = int(state.params["request_bytes"])
    most = _gpu_pass_most(state, write, 1 if state.device.is_cuda else 2)
    return io_need(state, write, own_buffers=False, device_bytes=most * req, host_bytes=most * req,
                   what="pinned host and device buffers (the longest pass)")


def gpu_file_kvikio(state, write: bool) -> None:
    """KvikIO pread/pwrite of the point's requests between one GPU buffer and the pattern file. The CuFile is
    opened for this point and closed when it ends; a timed write pass ends with fdatasync so the bytes are on the
    device (KvikIO's compat mode writes through the page cache), as file_write's buffered fallback does."""
    import kvikio
    import kvikio.defaults as d

    s = state.cfg.storage
    req, qd, pattern, file_bytes, align, _ = point_requests(state, write)
    most = _gpu_pass_most(state, write, 1)
    try:
        d.set("num_threads", qd)
    except Exception:
        getattr(d, "num_threads_reset", lambda n: None)(qd)
    path, mode = workdir(state).pattern_file(file_bytes, int(s.seed), s.direct)
    tile = pattern_tile(int(s.seed))
    offs = steady_offsets(state, write, req, qd, pattern, open_cached(state, path, write)[0], mode, align, tile,
                          most)
    total = len(offs) * req
    gbuf = torch.empty(total, dtype=torch.uint8, device=state.device.torch)
    if write:  # the GPU buffer holds the file's own pattern for those offsets, so the file stays verifiable
        gbuf.copy_(torch.from_numpy(_expected(tile, offs, req)))
    views = [gbuf[i * req:(i + 1) * req] for i in range(len(offs))]
    sync_fd = os.open(path, os.O_RDWR) if write else None
    try:
        with kvikio.CuFile(path, "r+" if write else "r") as f:
            def run():
                futs = [(f.pwrite if write else f.pread)(v, req, int(o)) for v, o in zip(views, offs)]
                for fu in futs:
                    fu.get()
                if write:
                    os.fdatasync(sync_fd)

            fd, _ = open_cached(state, path, False)
            prepare = None if write else _drop_and_prove(fd, file_bytes)
            if prepare:
                prepare()
            run()
            state.device.synchronize()
            if not write:
                _verify_buffer(state, gbuf.cpu().numpy(), offs, req, tile, "read wrong data into the GPU")
            state.add_bytes(total)
            state.exec(run, work="host_issued", prepare=prepare)
    finally:
        if sync_fd is not None:
            os.close(sync_fd)
    if write:
        _verify_written(state, Target(path, -1, "kvikio", IOPass(-1, offs, req, qd, False, direct_alignment(path)),
                                      file_bytes, tile))
    state.note(**kvikio_settings(), write_durability="fdatasync inside the timed pass" if write else None)


@benchmark("gpu_file_read_kvikio", family="storage", cost=C.gpu_file, axes=_gpu_axes, supports=_kvikio_supported,
           needs=lambda state: kvikio_need(state, False))
def gpu_file_read_kvikio(state):
    """File -> GPU memory through KvikIO (GDS, or its POSIX compat mode: recorded); GB/s of payload. Page cache
    dropped and verified before every timed pass."""
    gpu_file_kvikio(state, write=False)


@benchmark("gpu_file_write_kvikio", family="storage", cost=C.gpu_file, axes=_gpu_axes, supports=_kvikio_supported,
           needs=lambda state: kvikio_need(state, True))
def gpu_file_write_kvikio(state):
    """GPU memory -> file through KvikIO (compat mode recorded); GB/s of payload."""
    gpu_file_kvikio(state, write=True)


def gpu_file_bounce(state, write: bool) -> None:
    """Two hops through pinned host memory: file <-> pinned (O_DIRECT threads) and pinned <-> GPU (one copy)."""
    from bench.hw.hostmem import host_buffer

    pinned = {}

    from bench.benchmarks.transfer.contiguous import numa_node

    def pinned_slices(total: int):  # page aligned (O_DIRECT), on the GPU's NUMA node like every transfer buffer
        pinned["t"], facts = host_buffer(total, True, state.device, numa_node(state))
        state.note(**facts)
        return memoryview(pinned["t"].numpy())

    # the whole pass lives in a pinned buffer and a device buffer (both host memory on the CPU): at most what fits
    t = setup(state, write, targets_for=pinned_slices, most_cap=_gpu_pass_most(state, write, 1 if state.device.is_cuda
                                                                               else 2))
    host, total = pinned["t"], t.io.bytes
    dev = torch.empty(total, dtype=torch.uint8, device=state.device.torch)
    if write:
        dev.copy_(torch.from_numpy(_expected(t.tile, t.io.offs, t.io.request)))

        def run():
            host.copy_(dev)  # synchronous D2H: the file writes need the bytes
            t.io.run()
            if t.mode != "o_direct":
                os.fdatasync(t.fd)
        prepare = None
    else:
        def run():
            t.io.run()
            dev.copy_(host, non_blocking=True)
            state.device.synchronize()
        prepare = _drop_and_prove(t.fd, t.file_bytes)
        prepare()
        run()
        _verify_buffer(state, dev.cpu().numpy(), t.io.offs, t.io.request, t.tile, "arrived wrong on the device")
    state.add_bytes(total)
    with state.issue_on_node(numa_node(state)):  # the I/O threads it starts inherit the binding
        state.exec(run, work="host_issued", prepare=prepare)
    if write:
        _verify_written(state, t)


@benchmark("gpu_file_read_bounce", family="storage", cost=C.gpu_file, axes=_gpu_axes,
           needs=lambda state: bounce_need(state, False))
def gpu_file_read_bounce(state):
    """File -> pinned host (O_DIRECT, queue_depth threads) -> GPU (one copy), not overlapped; GB/s of payload.
    On the CPU the second hop is a host copy."""
    gpu_file_bounce(state, write=False)


@benchmark("gpu_file_write_bounce", family="storage", cost=C.gpu_file, axes=_gpu_axes,
           needs=lambda state: bounce_need(state, True))
def gpu_file_write_bounce(state):
    """GPU -> pinned host (one copy) -> file (O_DIRECT, queue_depth threads), not overlapped; GB/s of payload."""
    gpu_file_bounce(state, write=True)


def check_storage_root(cfg) -> str:
    """storage.path exists and is writable (a real probe file) and storage.direct is known; returns the root."""
    root = storage_root(cfg)
    if not os.path.isdir(root):
        raise UserError(f"storage.path={root!r} does not exist or is not a directory; create it or pick another")
    try:  # a real probe: os.access says yes to root even on a read-only mount
        with tempfile.NamedTemporaryFile(dir=root, prefix=".tierbench-probe-"):
            pass
    except OSError as e:
        raise UserError(f"storage.path={root!r} is not writable ({e.strerror}); pick a writable directory") from None
    check(cfg.storage.direct in DIRECT, "storage.direct", cfg.storage.direct, f"one of {', '.join(DIRECT)}")
    return root


def check_file_fits(root: str, key: str, file_bytes: int) -> None:
    """A test file of ``file_bytes`` (config ``key``) fits the free space of ``root`` with a margin; checked before
    any point runs (the run has written nothing there yet)."""
    from bench.hw.fileio import FILE_MARGIN, free_bytes

    free = free_bytes(root)
    if file_bytes + FILE_MARGIN > free:
        raise UserError(f"{key}={file_bytes} ({bytes_binary(file_bytes)}) does not fit storage.path={root}: "
                        f"{bytes_binary(free)} free, {bytes_binary(file_bytes + FILE_MARGIN)} needed (the file and a "
                        "64 MiB margin); lower it, free space or pick another storage.path")


@validator("storage")
def _storage(cfg) -> None:
    s = cfg.storage
    root = check_storage_root(cfg)
    check(len(s.engines) > 0, "storage.engines", list(s.engines), f"at least one of {', '.join(ENGINES)}")
    for v in s.engines:
        check(v in ENGINES, "storage.engines", v, f"each one of {', '.join(ENGINES)}")
    for v in s.patterns:
        check(v in PATTERNS, "storage.patterns", v, f"each one of {', '.join(PATTERNS)}")
    for key in ("request_bytes", "queue_depths", "gpu_request_bytes", "gpu_queue_depths"):
        positive_ints(f"storage.{key}", s[key])
    positive_ints("storage.kv_block_tokens", s.kv_block_tokens, allow_empty=True)
    for key in ("file_bytes", "pass_depths", "pass_max_bytes", "cache_check_bytes"):
        positive_ints(f"storage.{key}", [s[key]])
    check(s.pass_s > 0 and math.isfinite(s.pass_s), "storage.pass_s", s.pass_s, "seconds > 0")
    for v in list(s.request_bytes) + list(s.gpu_request_bytes) + [s.cache_check_bytes]:
        check(v % 4096 == 0, "storage.request_bytes", v, "multiples of 4096 (O_DIRECT alignment)")
        check(v <= s.file_bytes, "storage.request_bytes", v, f"at most storage.file_bytes ({s.file_bytes})")
    check_file_fits(root, "storage.file_bytes", int(s.file_bytes))

