"""Planning targets: the figures of a GPU (or a CPU run) the planner sizes points and times against.

A target is a yaml in conf/targets/ (``plan.gpu=h100_80gb``): its memory, host link, HBM and GEMM rates as this
suite measures them (not datasheet peaks), host-side rates (pinning, filling, comparing buffers), the storage it
assumes, and the fixed cost of a point. Without ``plan.gpu`` the target is the machine planning: its GPU's preset
(matched by name, memory from the device) or, on a CPU-only machine, the ``cpu`` preset re-measured there.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Optional

import yaml

from bench.core.config import conf_dir
from bench.core.errors import allowed

GiB = 1 << 30


@dataclass(frozen=True)
class Target:
    """Rates are what tierbench measures: GB/s = 1e9 B/s, TFLOP/s dense in the compute dtype, times in us / s."""

    name: str
    kind: str  # cuda | cpu
    memory_bytes: int  # device memory (0 on the CPU)
    l2_bytes: int
    host_memory_bytes: int  # 0 = MemAvailable of this machine
    hbm_gbps: float  # device copy, bytes read + written (CPU: memcpy)
    link_gbps: float  # pinned host <-> device, one direction
    pageable_h2d_gbps: float
    pageable_d2h_gbps: float
    tflops: float
    kernel_us: float  # device time of one small kernel in a back-to-back stream (CPU: one small op)
    issue_us: float  # host time to issue one eager op from Python
    storage_read_gbps: float
    storage_write_gbps: float
    storage_latency_us: float
    host_fill_gbps: float
    host_compare_gbps: float
    pin_gbps: float
    point_overhead_s: float
    description: str = ""
    source: str = ""
    calibrate: bool = False
    gpus: int = 1  # GPUs the node shows (a target preset plans one; warm_peer needs two)
    converge_share: float = 0.6  # points that reach harness.noise_target after min_samples (the rest: time budget)
    # what fraction of the GEMM rate (prefill) / copy rate (decode) each kind of kernel reaches here: attention
    # prefill per kernel [fraction at saturation, tokens (new + cached) at half of it], attention decode per kernel,
    # whole layers' FLOPs and bytes; ``source`` says which measured run they come from
    efficiency: dict = field(default_factory=dict)
    sdpa_native_gqa: tuple = ("flash",)  # SDPA kernels that take GQA K/V without expanding them (torch on this GPU)
    sdpa_auto: str = "flash"  # the kernel unforced SDPA dispatches here
    notes: tuple = field(default_factory=tuple)
    local: bool = False  # this machine (its installed packages are known); a preset plans another machine

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def hardware(self) -> dict:
        """What benchmarks read from the fingerprint (``state.gpu``), for this target."""
        if not self.is_cuda:
            return {}
        return {"gpu": {"name": self.name, "memory_bytes": self.memory_bytes, "l2_bytes": self.l2_bytes,
                        "hbm_peak_gbps": self.hbm_gbps / 0.89, "numa_node": None,
                        "pcie": {"peak_gbps_per_direction": self.link_gbps / 0.87},
                        "sdpa_native_gqa": list(self.sdpa_native_gqa), "sdpa_auto": self.sdpa_auto}}


def names() -> list[str]:
    from bench.core.config import target_names

    return target_names()


def load(name: str) -> Target:
    """The preset conf/targets/<name>.yaml; an unknown name is one line naming it and the choices."""
    path = conf_dir() / "targets" / f"{name}.yaml"
    if not path.is_file():
        raise allowed("plan.gpu target", name, names())
    data = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(Target)}
    data = {k: (tuple(v) if k == "sdpa_native_gqa" else v) for k, v in data.items() if k in known}
    return Target(**data)


GPU_NAMES = (("GH200", "gh200_96gb"), ("H200", "h200_141gb"), ("H100", "h100_80gb"), ("B200", "b200_192gb"))


def for_cfg(cfg, cuda_available: Optional[bool] = None) -> Target:
    """``plan.gpu`` when set; else this machine: its GPU's preset (memory and L2 from the device) or the CPU
    preset re-measured here."""
    name = cfg.plan.gpu if "plan" in cfg else None
    p = cfg.get("plan") or {}
    threads = cfg.harness.get("cpu_threads") if "harness" in cfg else None
    if name:
        t = load(str(name))
        if t.calibrate:
            t = calibrate_cpu(t, threads)
    else:
        t = local(cfg, cuda_available)
    over = {k: float(p[k]) for k in ("storage_read_gbps", "storage_write_gbps") if p.get(k) is not None}
    return dataclasses.replace(t, **over) if over else t


def local(cfg, cuda_available: Optional[bool] = None) -> Target:
    import torch

    if cuda_available is None:
        cuda_available = torch.cuda.is_available() and cfg.harness.device != "cpu"
    if not cuda_available:
        return dataclasses.replace(calibrate_cpu(load("cpu"), cfg.harness.get("cpu_threads")), local=True)
    idx = int(cfg.harness.device_index)
    props = torch.cuda.get_device_properties(idx)
    preset = next((p for key, p in GPU_NAMES if key in props.name), None)
    notes = ()
    if preset is None:
        preset = "h100_80gb"
        notes = (f"{props.name} has no target preset: H100 rates with this GPU's memory (name one with plan.gpu)",)
    t = load(preset)
    return dataclasses.replace(t, name=f"{t.name} (local {props.name})", memory_bytes=int(props.total_memory),
                               l2_bytes=int(getattr(props, "L2_cache_size", 0)) or t.l2_bytes, notes=notes,
                               gpus=torch.cuda.device_count(), local=True)


_CALIBRATED: dict = {}


def calibrate_cpu(t: Target, threads: Optional[int] = None) -> Target:
    """Re-measure the CPU figures that vary most between machines (about half a second, once per process and thread
    count): memcpy, float32 matmul, torch's random-byte generator, one small op's cost, and the machine's memory,
    with torch at ``threads`` intra-op threads (harness.cpu_threads, as the run times them)."""
    key = (t.name, threads)
    if key in _CALIBRATED:
        return _CALIBRATED[key]
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        out = _measure_cpu(t, torch)
    finally:
        torch.set_num_threads(old_threads)
    _CALIBRATED[key] = out
    return out


def _measure_cpu(t: Target, torch) -> Target:
    from bench.hw.fingerprint import _meminfo_available

    def best(fn, reps=5) -> float:
        fn()
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
        return min(out)

    n = 32 << 20
    src, dst = torch.ones(n, dtype=torch.uint8), torch.empty(n, dtype=torch.uint8)
    copy_gbps = 2 * n / best(lambda: dst.copy_(src)) / 1e9
    m = 512
    a, b = torch.randn(m, m), torch.randn(m, m)
    tflops = 2 * m ** 3 / best(lambda: a @ b) / 1e12
    g = torch.Generator().manual_seed(0)
    k = 4 << 20
    fill_gbps = k / best(lambda: torch.randint(0, 256, (k,), dtype=torch.uint8, generator=g), reps=2) / 1e9
    x = torch.zeros(16)
    op_us = best(lambda: [x.add_(1) for _ in range(200)]) / 200 * 1e6
    avail = _meminfo_available() or 0
    out = dataclasses.replace(t, hbm_gbps=copy_gbps, link_gbps=copy_gbps / 2, pageable_h2d_gbps=copy_gbps / 2,
                              pageable_d2h_gbps=copy_gbps / 2, tflops=tflops, host_fill_gbps=fill_gbps,
                              kernel_us=op_us, issue_us=op_us, host_memory_bytes=int(avail),
                              source=f"{t.source}; measured here: memcpy {copy_gbps:.3g} GB/s (read+write), float32 "
                                     f"matmul {tflops * 1e3:.3g} GFLOP/s, random bytes {fill_gbps:.3g} GB/s, "
                                     f"{op_us:.3g} us per small op")
    return out
