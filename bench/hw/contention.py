"""How busy the machine was around a run and each family: load average, CPU steal, the CPU share of processes
other than this one, torch's thread count, and (GPU) other processes on the device. A benchmark sharing its
node measures the neighbour too: h2d_pinned at 64 KiB read 0.0082 GB/s with another job on the node, 19-26 GB/s
alone. Readings come from /proc and NVML; a reading that is unavailable is None, never a guess."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# contention thresholds: another process using this much of a core on average, steal above this share of CPU time,
# or a load average above the cores this process may use
OTHER_CORES = 0.5
STEAL_SHARE = 0.05


@dataclass
class Snapshot:
    t: float
    loadavg: Optional[tuple]
    cpu_ticks: Optional[dict]  # /proc/stat aggregate: busy (user..softirq), steal, total
    self_ticks: Optional[int]  # this process's utime + stime (its threads and waited-for children included)
    gpu_processes: Optional[list] = field(default=None)


def _proc_stat() -> Optional[dict]:
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    v = [int(x) for x in parts[1:]] + [0] * 8
    user, nice, system, idle, iowait, irq, softirq, steal = v[:8]
    busy = user + nice + system + irq + softirq
    return {"busy": busy, "steal": steal, "total": busy + idle + iowait + steal}


def _self_ticks() -> Optional[int]:
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return sum(int(x) for x in fields[11:15])  # utime stime cutime cstime


def _pid_ticks(pid: int) -> int:
    """utime + stime of process ``pid`` (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2:].split()
    return int(fields[11]) + int(fields[12])


def gpu_processes(device_index: int = 0, helpers=()) -> Optional[list]:
    """PIDs (and memory) of compute processes on the GPU other than this one and its ``helpers`` (NVML), or None
    without NVML."""
    try:
        from bench.hw.nvml import handle_for, nvml

        lib = nvml()
        if lib is None:
            return None
        h = handle_for(device_index)
        procs = lib.nvmlDeviceGetComputeRunningProcesses(h)
    except Exception:
        return None
    return [{"pid": int(p.pid), "memory_bytes": int(getattr(p, "usedGpuMemory", 0) or 0)}
            for p in procs if int(p.pid) != os.getpid() and int(p.pid) not in set(helpers)]


def snapshot(cuda_index: Optional[int] = None, helpers=()) -> Snapshot:
    """Two small /proc reads (and one NVML call on a GPU): cheap enough around every point. ``helpers``: processes
    the run started for its own measurement (the handoff family's peer): their CPU counts as this process's and they
    are not other processes on the GPU."""
    try:
        la = os.getloadavg()
    except OSError:
        la = None
    mine = _self_ticks()
    if mine is not None:
        mine += sum(_pid_ticks(p) for p in helpers)
    return Snapshot(time.monotonic(), la, _proc_stat(), mine,
                    gpu_processes(cuda_index, helpers) if cuda_index is not None else None)


def between(a: Snapshot, b: Snapshot) -> dict:
    """What happened between two snapshots: other processes' CPU use in cores (the machine's busy time less this
    process's), steal share, load average at the end, other GPU processes; ``contended`` with the reasons when any
    crosses its threshold."""
    dt = max(b.t - a.t, 1e-6)
    out: dict = {"seconds": round(dt, 4), "loadavg_1m": None if b.loadavg is None else round(b.loadavg[0], 2)}
    if a.cpu_ticks and b.cpu_ticks and a.self_ticks is not None and b.self_ticks is not None:
        busy = b.cpu_ticks["busy"] - a.cpu_ticks["busy"]
        mine = b.self_ticks - a.self_ticks
        out["other_processes_cores"] = round(max(0, busy - mine) / CLK_TCK / dt, 3)
        tot = b.cpu_ticks["total"] - a.cpu_ticks["total"]
        out["steal_share"] = round((b.cpu_ticks["steal"] - a.cpu_ticks["steal"]) / tot, 4) if tot > 0 else 0.0
    if b.gpu_processes is not None:
        out["other_gpu_processes"] = b.gpu_processes
    reasons = []
    if dt >= MIN_WINDOW_S and out.get("other_processes_cores", 0) > OTHER_CORES:
        reasons.append(f"other processes used {out['other_processes_cores']:.2f} CPU cores")
    if dt >= MIN_WINDOW_S and out.get("steal_share", 0) > STEAL_SHARE:
        reasons.append(f"{out['steal_share']:.0%} of CPU time stolen by the hypervisor")
    if out.get("other_gpu_processes"):
        reasons.append(f"{len(out['other_gpu_processes'])} other process(es) on the GPU")
    out["contended"] = bool(reasons)
    out["reasons"] = reasons
    return out


MIN_WINDOW_S = 0.05  # CPU tick counts (10 ms) say nothing about shorter windows


def facts() -> dict:
    """Settings that change CPU timings: torch's intra-op threads, the CPUs this process may run on."""
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}
