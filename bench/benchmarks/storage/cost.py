"""Cost models of the storage family (bench.harness.cost): steady-state passes of file requests at a queue
depth, on the target's storage rates, and the one-off pattern file, probe passes and page-cache drops."""
from __future__ import annotations

import math

from bench.benchmarks.storage.sizes import FIO_MIN_RUN_S
from bench.harness.cost import Ctx, Timed, Work


def io_pass_s(c: Ctx, req: int, count: int, qd: int, write: bool, engine: str = "threads") -> float:
    """One pass of ``count`` requests of ``req`` bytes at queue depth ``qd``: bandwidth or per-request latency,
    whichever binds (synchronous threads overlap the device but not their own call overhead; aio and fio keep qd
    requests in flight)."""
    rate = (c.t.storage_write_gbps if write else c.t.storage_read_gbps) * 1e9
    per_req = c.t.storage_latency_us * 1e-6
    return max(count * req / rate, count * per_req / (min(qd, 2) if engine == "threads" else qd)) + 1e-4


def drop_s(c: Ctx, file_bytes: int = 0) -> float:
    """fdatasync + fadvise + mincore over the file (``file_bytes``, default storage.file_bytes)."""
    return 2e-3 + (file_bytes or int(c.cfg.storage.file_bytes)) / (4096 * 2e9)


def pattern_file_once(c: Ctx, file_bytes: int = 0) -> dict:
    fb = file_bytes or int(c.cfg.storage.file_bytes)
    return {("pattern_file", fb): fb / (c.t.storage_write_gbps * 1e9) + fb / 3e9}  # pattern generation + write


def steady_requests(c: Ctx, req: int, pattern: str, qd: int = 1, write: bool = False, engine: str = "aio",
              file_bytes: int = 0) -> int:
    """Requests of the point's steady-state pass on the target (storage.benchmarks.steady_offsets: about
    storage.pass_s at the probe's rate, within the pass bounds): the rate is the target's, from io_pass_s.
    ``file_bytes``: the file the pass reads (default storage.file_bytes; the warm family's cold flows read theirs)."""
    from bench.hw.fileio import pass_bounds, pass_requests

    s = c.cfg.storage
    fewest, most = pass_bounds(pattern, req, qd, file_bytes or int(s.file_bytes), int(s.pass_depths),
                               int(s.pass_max_bytes))
    probe = "threads" if engine == "threads" else "aio"
    rate = fewest / io_pass_s(c, req, fewest, qd, write, probe)
    return pass_requests(rate, float(s.pass_s), fewest, most)


def probe_once(c: Ctx, req: int, pattern: str, qd: int, write: bool) -> dict:
    """The untimed probe pass that sizes a steady-state pass: once per (request, depth, pattern, direction) and run."""
    from bench.hw.fileio import pass_bounds

    s = c.cfg.storage
    fewest, _ = pass_bounds(pattern, req, qd, int(s.file_bytes), int(s.pass_depths), int(s.pass_max_bytes))
    return {("steady_pass", req, qd, pattern, write): io_pass_s(c, req, fewest, qd, write, "aio") +
            (0.0 if write else drop_s(c))}


def file_rw(c: Ctx) -> Work:
    write = c.benchmark == "file_write"
    req, qd, pattern = int(c.p["request_bytes"]), int(c.p["queue_depth"]), c.p["pattern"]
    engine = c.p.get("engine", "threads")
    count = steady_requests(c, req, pattern, qd, write, engine)
    call = io_pass_s(c, req, count, qd, write, engine)
    once = {**pattern_file_once(c), **probe_once(c, req, pattern, qd, write)}
    if engine == "fio":  # one fio process per sample, each repeating the pass for FIO_MIN_RUN_S; one warm-up run
        loops = max(1, math.ceil(FIO_MIN_RUN_S / call))
        run_s = loops * call + 0.05
        restore = next(iter(pattern_file_once(c).values())) if write else 0.0  # the pattern rewritten after
        return Work([Timed(run_s, "host", 0.0 if write else drop_s(c))], setup_s=call + 0.05 + restore,
                    once=once, io_bytes_per_call=loops * count * req,
                    io_setup_bytes=count * req + (int(c.cfg.storage.file_bytes) if write else 0))
    verify = io_pass_s(c, req, count, qd, False) + count * req / 1e9 + drop_s(c)
    return Work([Timed(call, "host", 0.0 if write else drop_s(c))], setup_s=verify + (0 if write else drop_s(c)),
                once=once, io_bytes_per_call=count * req, io_setup_bytes=count * req)


def cache_check(c: Ctx) -> Work:
    req = int(c.p["request_bytes"])
    timed, io = [], 0
    for pattern in ("random", "repeat"):
        count = steady_requests(c, req, pattern, 1, False, "threads")
        timed.append(Timed(io_pass_s(c, req, count, 1, False), "host", drop_s(c), key=("cache_check", pattern, req)))
        io = max(io, count * req)
    return Work(timed, setup_s=2 * timed[0].call_s, once=pattern_file_once(c), io_bytes_per_call=io,
                io_setup_bytes=2 * io)


def gpu_file(c: Ctx) -> Work:
    write = "write" in c.benchmark
    req, qd, pattern = int(c.p["request_bytes"]), int(c.p["queue_depth"]), c.p["pattern"]
    count = steady_requests(c, req, pattern, qd, write)
    total = count * req
    call = io_pass_s(c, req, count, qd, write) + c.link(total)
    verify = io_pass_s(c, req, count, qd, False) + total / 1e9 + drop_s(c)
    setup = c.pin(total) + (total / 1e9 if write else call) + verify
    return Work([Timed(call, "host_issued", 0.0 if write else drop_s(c))], setup_s=setup,
                once={**pattern_file_once(c), **probe_once(c, req, pattern, qd, write)},
                io_bytes_per_call=total, io_setup_bytes=2 * total)
