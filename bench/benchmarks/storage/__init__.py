"""Storage tier: KV blocks and raw requests between host (or GPU) memory and files under storage.path, at queue depths,
with the page cache kept out of every figure (O_DIRECT, or a verified drop).

In the directory `storage.path` (default `/var/tmp`): `file_read` / `file_write` between host memory and a file,
request sizes `storage.request_bytes` plus the model's KV block sizes (`storage.kv_block_tokens`), `sequential` /
`random` offsets, queue depth 1..64, and an engine axis `storage.engines`: `aio` keeps queue-depth requests in
flight from one thread with Linux native AIO (`bench/hw/fileio/aio.py`: io_submit / io_getevents through libc's
`syscall`, driven by a numba loop, so no Python call per request; chosen over io_uring because Docker's and
containerd's default seccomp profiles block io_uring and the Python io_uring bindings are alpha, and over KvikIO's
host path because it needs libcuda and a Python call per request), `threads` (queue-depth synchronous threads, the
fallback), and `fio` (fio itself, libaio, O_DIRECT, on the same file, request size, pattern, queue depth and request
count, its JSON parsed, buffer scrambling off: by default fio rewrites part of its write buffer before each request,
10% of a 64 MiB QD 1 write, while tierbench's engines write stamped windows of buffers filled before the pass; after
its writes the file's pattern is rewritten, untimed; skipped with the reason where fio is not installed). An engine
that cannot run is a skipped point with why (aio needs O_DIRECT: on a buffered file Linux completes AIO inside
io_submit), never a silent fallback; every record names its engine. `scripts/fio_compare.sh` runs the aio and fio
points back to back, alternating which goes first, and prints the table (below). GB/s, `iops`, `lat_p50_us`,
`lat_p99_us`, `lat_p999_us` (per request; aio: submission to the io_getevents that reaped it, as fio's total latency
`lat`; the fio records use `--lat_percentiles=1` for the same). `file_read_cache_check` reads one block over and
over against distinct blocks and flags `cache_suspect` if the repeat is faster by more than noise. GPU <-> file:
`gpu_file_read_kvikio` / `gpu_file_write_kvikio` (KvikIO; its compat mode and direct-I/O settings recorded) and the
two-hop `gpu_file_read_bounce` / `gpu_file_write_bounce` through pinned host memory. Files are opened with O_DIRECT
and aligned buffers (alignment from the device's logical block size, at least a page); where the filesystem refuses
O_DIRECT (`storage.direct=auto`) reads go buffered after a page-cache drop. Either way, before every timed read the
file's resident pages are counted with `mincore` and must be zero, or the point is skipped with the reason: a cached
read is never reported as disk bandwidth. A memory-backed `storage.path` (tmpfs, ramfs) is refused for reads and
writes alike. Every block is checked against its seeded pattern; the test files live in
`storage.path/.tierbench-<host>-<pid>/` and are removed at the end, also on Ctrl-C and SIGTERM. Passes are steady
state by construction, in every suite: an untimed probe pass measures the rate, and each timed pass is sized to last
about `storage.pass_s` (0.2 s; 0.1 in the default suite, 0.05 in quick) with at least `storage.pass_depths` (32)
requests per queue slot, so the queue's ramp-up and drain are ~3% of it (`info.pass_sizing`); every engine and the
GPU paths time the same requests. A `storage.file_bytes` larger than the free space of `storage.path` is refused
before any point runs (one line, exit 2). A missing or read-only `storage.path` stops the run before it starts; too
little free space skips the points with the numbers.

Compare with fio on the same disk, file, request size, pattern, queue depth and request count (libaio,
`--direct=1`), four rounds that alternate which engine goes first; the summary gives the medians, fio's own
round-to-round swing, and aio/fio for each order:

    scripts/fio_compare.sh /mnt/nvme0 4096 16 random   # DIR REQUEST_BYTES QUEUE_DEPTH PATTERN [ROUNDS] [FILE_BYTES]
    scripts/fio_compare.sh /mnt/nvme0 67108864 1 sequential

On virtual disks (cloud VMs) consecutive fio runs can differ by 2x, and the point right after the pattern file is
written can run faster; compare on bare-metal NVMe. Against fio's steady state (`--time_based`), with tierbench's
points exactly as a default-suite run times them, on the one file, alternating A/B/A/B:

    python scripts/fio_steady.py /mnt/nvme0 --request 4096 --qd 16 --pattern random --rounds 4
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING

from bench.core.family import Family, Plot, family


@dataclass
class StorageConfig:
    budget_s: Optional[float] = None  # family time budget (s; null: none)
    budget_bytes: Optional[int] = None  # file bytes read + written by the family (null: no limit)
    path: Optional[str] = None  # directory for storage benchmarks; null = /var/tmp on the root disk
    direct: str = "auto"
    engines: list = field(default_factory=lambda: ["aio", "threads", "fio"])  # host <-> file engines (an axis)
    file_bytes: int = MISSING
    request_bytes: list = MISSING  # request sizes (bytes, an axis; multiples of 4096)
    kv_block_tokens: list = MISSING
    patterns: list = MISSING  # sequential, random (an axis)
    queue_depths: list = MISSING  # requests in flight (an axis)
    # a timed pass is sized by time, never a bare count, so that it runs at steady state (fio's time_based runs are
    # the reference): about pass_s seconds at the rate an untimed probe pass measured, and at least pass_depths
    # requests per queue slot (the queue's ramp-up and drain under ~3% of the pass); at most pass_max_bytes and the
    # file's distinct slots (sequential/random)
    pass_s: float = 0.1
    pass_depths: int = 32
    pass_max_bytes: int = 1073741824
    cache_check_bytes: int = MISSING
    gpu_request_bytes: list = MISSING  # request sizes of the GPU <-> file points (bytes)
    gpu_queue_depths: list = MISSING  # requests in flight of the GPU <-> file points
    seed: int = 99  # seed of the file's pattern


FAMILY = family(Family(
    "storage", order=70, config=StorageConfig, package=__name__, modules=('benchmarks',), budget_bytes=True,
    plots=(Plot("storage_vs_queue_depth", "Storage bandwidth vs queue depth", "plots:storage_vs_queue_depth",
                 ("file_read", "file_write")),),
    unplotted={"file_read_cache_check": "a check (repeat vs distinct blocks), not a rate: cache_suspect in the records",
                "gpu_file_read_kvikio": "GPU <- file GB/s: the model's storage tier and bench compare",
                "gpu_file_write_kvikio": "GPU -> file GB/s: the report's tables and bench compare",
                "gpu_file_read_bounce": "GPU <- file GB/s: the model's storage tier and bench compare",
                "gpu_file_write_bounce": "GPU -> file GB/s: the report's tables and bench compare"}))
