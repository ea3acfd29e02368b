"""Contiguous copies between host and GPU memory: latency (small sizes) and bandwidth (GB/s = 1e9 B/s).

On the CPU the "device" buffer is host memory too, so the same code measures host memcpy (records say device=cpu).
Every copy is verified outside the timed region: destination poisoned, seeded source compared after.
"""
from __future__ import annotations

import os

import torch

from bench.hw.hostmem import POISON, fill_pattern, first_mismatch, host_buffer, pattern
from bench.benchmarks.transfer import cost as C
from bench.core.registry import benchmark
from bench.harness import need

# direction -> (source side, destination side); "host" sides use pinned or pageable memory
DIRECTIONS = {"h2d": ("host", "dev"), "d2h": ("dev", "host"), "d2d": ("dev", "dev")}


def pcie_peak(state):
    """The one-direction link peak (GB/s) a host<->GPU rate is held to: the fingerprint's NVML figure
    (bench.hw.fingerprint.link_peak), or the pinned copy rate this run measured before the point
    (:func:`measured_pinned_gbps`) where that is higher, since NVML may under-report the link. The record says
    which (info.link_peak_source)."""
    pcie = state.gpu.get("pcie") or {}
    peak, source = pcie.get("peak_gbps_per_direction"), pcie.get("peak_source", "nvml link")
    measured = measured_pinned_gbps(state.ctx.records_path)
    if measured and not (peak and peak >= measured):
        peak, source = measured, "measured pinned copy"
    if peak:
        state.note(link_peak_source=source)
    return peak


def measured_pinned_gbps(records_path) -> float | None:
    """The higher of h2d_pinned's and d2h_pinned's GB/s at the largest size each measured on a GPU in the run
    whose records are at ``records_path`` (None: no run, or neither measured)."""
    from bench.core.store import read_records

    if records_path is None or not os.path.exists(records_path):
        return None
    largest: dict = {}  # benchmark -> (size_bytes, gbps)
    for r in read_records(records_path):
        gbps = (r.get("metrics") or {}).get("gbps")
        if r["benchmark"] in ("h2d_pinned", "d2h_pinned") and r["status"] == "ok" and r.get("device") == "cuda" \
                and gbps and int(r["params"]["size_bytes"]) >= largest.get(r["benchmark"], (-1, 0.0))[0]:
            largest[r["benchmark"]] = (int(r["params"]["size_bytes"]), float(gbps))
    return max((g for _, g in largest.values()), default=None)


def numa_node(state):
    return state.gpu.get("numa_node") if state.cfg.transfer.numa_pin else None


def alloc(state, side: str, nbytes: int, pinned: bool, seed: int | None):
    """A buffer on ``side`` ('host' or 'dev'): seeded pattern when ``seed`` is given, else poisoned."""
    if side == "host":
        buf, facts = host_buffer(nbytes, pinned, state.device, numa_node(state))
        state.note(**facts)
        if seed is not None:
            fill_pattern(buf, seed, state.device)
        else:
            buf.fill_(POISON)
        return buf
    if seed is not None:
        return pattern(nbytes, seed, state.device.torch)
    return torch.full((nbytes,), POISON, dtype=torch.uint8, device=state.device.torch)


def check_copy(state, dst, src, what: str) -> None:
    bad = first_mismatch(dst, src, unit=max(1, min(4096, dst.numel())))
    state.verify(bad is None, f"{what}: destination differs from source in 4 KiB page {bad}")


def set_link_peak(state, direction: str, streams_both_ways: bool = False) -> None:
    if not state.device.is_cuda:
        return
    if direction == "d2d":
        state.set_peak("gbps", state.gpu.get("hbm_peak_gbps"))
    else:
        peak = pcie_peak(state)
        state.set_peak("gbps", peak * 2 if (peak and streams_both_ways) else peak)


def fits_l2(state, working_set: int) -> bool:
    """Whether ``working_set`` bytes fit the GPU's L2 (then a copy may run from L2, not HBM)."""
    l2 = state.gpu.get("l2_bytes") or (state.device.l2_bytes() if state.device.is_cuda else None)
    return bool(state.device.is_cuda and l2 and working_set <= l2)


def d2d_peak(state, n: int) -> str:
    """Peak to hold a device-to-device copy of ``n`` bytes to, and which metric it applies to. When source and
    destination fit L2 the copy is timed L2-cold (flushed before each sample) so its reads come from HBM, but its
    writes may stay in L2: the HBM peak then bounds only the bytes read (``read_gbps``)."""
    hbm = state.gpu.get("hbm_peak_gbps")
    if fits_l2(state, 2 * n) and not (state.l2 is not None and state.l2.active):
        state.note(l2_resident=f"source + destination ({2 * n} bytes) fit L2 and harness.l2_flush is off: timed "
                               "L2-warm, so no HBM peak applies")
        return "l2_warm"
    if fits_l2(state, 2 * n):
        state.set_peak("read_gbps", hbm)
        state.note(l2_resident=f"source + destination ({2 * n} bytes) fit L2: flushed before each sample; writes may "
                               "stay in L2, so the HBM peak bounds read_gbps (bytes read / time) only")
        return "l2"
    state.set_peak("gbps", hbm)
    return "hbm"


def contiguous_need(direction: str):
    """The needs of a contiguous copy of size_bytes in ``direction``: its source and destination, on the device or
    in host memory."""
    def needs(state):
        n = int(state.params["size_bytes"])
        host_sides = list(DIRECTIONS[direction]).count("host")
        return need((2 - host_sides) * n, "source + destination", host_bytes=host_sides * n)
    return needs


def contiguous_copy(state, direction: str, pinned: bool, latency_max_bytes: int = 0) -> None:
    n = int(state.params["size_bytes"])
    src_side, dst_side = DIRECTIONS[direction]
    seed = int(state.cfg.transfer.seed)
    src = alloc(state, src_side, n, pinned, seed)
    dst = alloc(state, dst_side, n, pinned, None)
    copy = lambda: dst.copy_(src, non_blocking=True)  # noqa: E731
    copy()
    state.device.synchronize()
    check_copy(state, dst, src, direction)
    # d2d reads and writes HBM: count both, as the copy ceiling does; host<->device counts the payload once
    state.add_bytes(2 * n if direction == "d2d" else n)
    flush = False
    if direction == "d2d":
        flush = d2d_peak(state, n) == "l2"
    else:
        set_link_peak(state, direction)
    # pageable copies are staged by the driver and block the host until done: host-issued work
    work = "device" if (pinned or direction == "d2d") else "host_issued"
    with state.issue_on_node(numa_node(state) if direction != "d2d" else None):
        state.exec(copy, work=work, flush_l2=flush)
    if flush:
        state.set_metric("read_gbps", n / state.stats.median_s / 1e9)
    dst.fill_(POISON)
    copy()
    state.device.synchronize()
    check_copy(state, dst, src, direction + " (after timing)")
    if n <= latency_max_bytes:
        # back-to-back copies behind the spin give the amortised cost per copy; the latency a caller waits for is
        # one copy issued and completed (host round trip: issue + synchronize, one copy per sample)
        state.set_metric("amortized_us_per_copy", state.stats.median_s * 1e6)
        lat = state.reference(("latency", direction, pinned, n), copy, work="host_issued", inner=1)
        state.set_metric("latency_us", lat.median_s * 1e6)
        state.set_metric("latency_p90_us", lat.p90_s * 1e6)


def _sizes(c):
    return {"size_bytes": list(c.transfer.sizes)}


@benchmark("h2d_pinned", family="transfer", cost=C.contiguous("h2d", True), axes=_sizes, needs=contiguous_need("h2d"))
def h2d_pinned(state):
    """Host-to-device copy from pinned memory (one cudaMemcpyAsync); GB/s of payload, latency_us for small sizes.
    Times the copy only; allocation and verification are outside."""
    contiguous_copy(state, "h2d", True, int(state.cfg.transfer.latency_max_bytes))


@benchmark("d2h_pinned", family="transfer", cost=C.contiguous("d2h", True), axes=_sizes, needs=contiguous_need("d2h"))
def d2h_pinned(state):
    """Device-to-host copy into pinned memory (one cudaMemcpyAsync); GB/s of payload, latency_us for small sizes."""
    contiguous_copy(state, "d2h", True, int(state.cfg.transfer.latency_max_bytes))


@benchmark("h2d_pageable", family="transfer", cost=C.contiguous("h2d", False), axes=_sizes,
           needs=contiguous_need("h2d"))
def h2d_pageable(state):
    """Host-to-device copy from pageable memory (driver-staged, host-synchronous); GB/s of payload."""
    contiguous_copy(state, "h2d", False, int(state.cfg.transfer.latency_max_bytes))


@benchmark("d2h_pageable", family="transfer", cost=C.contiguous("d2h", False), axes=_sizes,
           needs=contiguous_need("d2h"))
def d2h_pageable(state):
    """Device-to-host copy into pageable memory (driver-staged, host-synchronous); GB/s of payload."""
    contiguous_copy(state, "d2h", False, int(state.cfg.transfer.latency_max_bytes))


@benchmark("d2d", family="transfer", cost=C.contiguous("d2d", True), axes=_sizes, needs=contiguous_need("d2d"))
def d2d(state):
    """Device-to-device copy across the size sweep; GB/s counts bytes read + written (compare with the HBM peak)."""
    contiguous_copy(state, "d2d", True, int(state.cfg.transfer.latency_max_bytes))


def _streams(state) -> list:
    if state.device.is_cuda:
        return [torch.cuda.Stream() for _ in range(int(state.params["streams"]))]
    return []


def concurrent_copies(state, pairs) -> None:
    """Time all ``(dst, src)`` copies issued at once, one CUDA stream each (sequential on the CPU)."""
    streams = _streams(state)

    def run():
        if not streams:
            for dst, src in pairs:
                dst.copy_(src)
            return
        main = torch.cuda.current_stream()
        for s, (dst, src) in zip(streams, pairs):
            s.wait_stream(main)
            with torch.cuda.stream(s):
                dst.copy_(src, non_blocking=True)
        for s in streams:
            main.wait_stream(s)

    run()
    state.device.synchronize()
    for i, (dst, src) in enumerate(pairs):
        check_copy(state, dst, src, f"stream {i}")
    with state.issue_on_node(numa_node(state)):
        state.exec(run, work="device")
    if not streams:
        state.note(streams="sequential on the CPU")


def _bidir_need(state):
    n = int(state.params["size_bytes"])
    return need(2 * n, "two source + two destination buffers", host_bytes=2 * n)


@benchmark("bidir_pinned", family="transfer", cost=C.bidir, axes=lambda c: {"size_bytes": list(c.transfer.sizes)},
           needs=_bidir_need)
def bidir_pinned(state):
    """H2D and D2H at once on two streams (pinned); GB/s is the total of both directions."""
    n = int(state.params["size_bytes"])
    seed = int(state.cfg.transfer.seed)
    state.params.setdefault("streams", 2)
    pairs = [(alloc(state, "dev", n, True, None), alloc(state, "host", n, True, seed)),
             (alloc(state, "host", n, True, None), alloc(state, "dev", n, True, seed + 1))]
    state.add_bytes(2 * n)
    set_link_peak(state, "h2d", streams_both_ways=True)
    concurrent_copies(state, pairs)


def _streams_need(state):
    k, n = int(state.params["streams"]), int(state.cfg.transfer.stream_bytes)
    return need(k * n, f"{k} source + destination buffers", host_bytes=k * n)


def multistream(state, direction: str) -> None:
    k = int(state.params["streams"])
    n = int(state.cfg.transfer.stream_bytes)
    src_side, dst_side = DIRECTIONS[direction]
    seed = int(state.cfg.transfer.seed)
    pairs = [(alloc(state, dst_side, n, True, None), alloc(state, src_side, n, True, seed + i)) for i in range(k)]
    state.add_bytes(k * n)
    set_link_peak(state, direction)
    concurrent_copies(state, pairs)


def _stream_axes(c):
    return {"streams": list(c.transfer.streams)}


@benchmark("h2d_pinned_streams", family="transfer", cost=C.streams, axes=_stream_axes, needs=_streams_need)
def h2d_pinned_streams(state):
    """H2D pinned copies of transfer.stream_bytes each on N concurrent streams; GB/s is the total (one link: streams
    share it)."""
    multistream(state, "h2d")


@benchmark("d2h_pinned_streams", family="transfer", cost=C.streams, axes=_stream_axes, needs=_streams_need)
def d2h_pinned_streams(state):
    """D2H pinned copies of transfer.stream_bytes each on N concurrent streams; GB/s is the total (one link: streams
    share it)."""
    multistream(state, "d2h")
