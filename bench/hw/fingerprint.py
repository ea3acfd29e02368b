"""Hardware fingerprint for the manifest: GPU, PCIe link, NUMA, CPU, host memory, library versions, storage.

Every probe is independent: a piece that cannot be read is null and its reason is listed under ``missing``
(``{"gpu.ecc": "NVMLError_NotSupported"}``); the fingerprint never raises.
"""
from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Callable, Optional

from bench.hw.nvml import handle_for, nvml, nvml_error

# PCIe per-lane data rate after encoding, GB/s (1e9 B/s), per generation (gen1-2: 8b/10b, gen3+: 128b/130b; gen6 ~FLIT).
PCIE_GBPS_PER_LANE = {1: 0.25, 2: 0.5, 3: 0.9846, 4: 1.9692, 5: 3.9385, 6: 7.5631}


def pcie_peak_gbps(gen: Optional[int], width: Optional[int]) -> Optional[float]:
    """Theoretical one-direction PCIe bandwidth in GB/s for a link (before TLP/DLLP protocol overhead)."""
    if not gen or not width or gen not in PCIE_GBPS_PER_LANE:
        return None
    return PCIE_GBPS_PER_LANE[gen] * width


def link_peak(pcie: dict) -> tuple[Optional[float], Optional[str]]:
    """(one-direction PCIe peak in GB/s that results are held to, where it comes from). NVML's link max
    generation is the lower of the GPU's and the system's; behind a virtual root port (a VM) the system side may be
    under-reported (gen 4 where the link runs gen 5), and a ceiling below the link's real rate flags true results
    as above peak. So the peak is the larger of the link's ("nvml link") and the GPU's own max generation's
    ("nvml gpu max gen"), at the max width: a Gen5 GPU in a real Gen4 slot is then held to Gen5's ~63 GB/s, and
    its fraction of peak reads ~0.45 at a full Gen4 link."""
    link = pcie_peak_gbps(pcie.get("gen_max"), pcie.get("width_max"))
    gpu = pcie_peak_gbps(pcie.get("gen_gpu_max"), pcie.get("width_max"))
    if gpu and (not link or gpu > link):
        return gpu, "nvml gpu max gen"
    return link, ("nvml link" if link else None)


class _Probe:
    def __init__(self):
        self.missing: dict[str, str] = {}

    def get(self, key: str, fn: Callable):
        try:
            return fn()
        except Exception as e:
            self.missing[key] = (f"{type(e).__name__}: {e}".splitlines() or [""])[0][:200]
            return None


def _read(path) -> str:
    return Path(path).read_text().strip()


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _meminfo(key: str) -> int:
    """A /proc/meminfo field in bytes (``MemTotal``, ``MemAvailable``)."""
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) * 1024
    raise ValueError(f"{key} not in /proc/meminfo")


def _meminfo_bytes() -> int:
    return _meminfo("MemTotal")


def _meminfo_available() -> Optional[int]:
    """MemAvailable in bytes (None when /proc/meminfo cannot be read)."""
    try:
        return _meminfo("MemAvailable")
    except (OSError, ValueError):
        return None


def _numa_nodes() -> int:
    return len([p for p in Path("/sys/devices/system/node").glob("node[0-9]*")])


def pci_numa_node(address: str) -> int:
    """NUMA node sysfs gives a PCI device (-1: none); ``address`` as NVML or CUDA write it ("00000000:19:00.0"),
    sysfs uses the 4-hex-digit domain form."""
    return int(_read(f"/sys/bus/pci/devices/{address.lower()[-12:]}/numa_node"))


def gpu_info(index: int, probe: _Probe) -> Optional[dict]:
    import torch

    if not torch.cuda.is_available():
        probe.missing["gpu"] = "no CUDA device visible to torch"
        return None
    props = torch.cuda.get_device_properties(index)
    g = {
        "index": index,
        "name": props.name,
        "sm_count": props.multi_processor_count,
        "memory_bytes": props.total_memory,
        "l2_bytes": getattr(props, "L2_cache_size", None),
        "compute_capability": f"{props.major}.{props.minor}",
        "cuda_runtime": torch.version.cuda,
    }
    lib = nvml()
    if lib is None:
        probe.missing["gpu.nvml"] = nvml_error() or "pynvml unavailable"
        return g
    h = probe.get("gpu.handle", lambda: handle_for(index))
    if h is None:
        return g
    g["driver"] = probe.get("gpu.driver", lambda: _s(lib.nvmlSystemGetDriverVersion()))
    g["cuda_driver"] = probe.get("gpu.cuda_driver", lambda: lib.nvmlSystemGetCudaDriverVersion_v2())
    g["uuid"] = probe.get("gpu.uuid", lambda: _s(lib.nvmlDeviceGetUUID(h)))
    g["bus_id"] = probe.get("gpu.bus_id", lambda: _s(lib.nvmlDeviceGetPciInfo(h).busId))
    g["sm_clock_max_mhz"] = probe.get("gpu.sm_clock_max", lambda: lib.nvmlDeviceGetMaxClockInfo(h, lib.NVML_CLOCK_SM))
    g["mem_clock_max_mhz"] = probe.get("gpu.mem_clock_max", lambda: lib.nvmlDeviceGetMaxClockInfo(h, lib.NVML_CLOCK_MEM))
    g["memory_bus_width_bits"] = probe.get("gpu.bus_width", lambda: lib.nvmlDeviceGetMemoryBusWidth(h))
    g["ecc_enabled"] = probe.get("gpu.ecc", lambda: bool(lib.nvmlDeviceGetEccMode(h)[0]))
    g["power_limit_w"] = probe.get("gpu.power_limit", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h) / 1000)
    pcie = {
        "gen_current": probe.get("pcie.gen_current", lambda: lib.nvmlDeviceGetCurrPcieLinkGeneration(h)),
        # the link's max is the lower of what the GPU and the slot/system support (a Gen5 GPU in a Gen4 slot trains
        # at Gen4 at best; nvmlDeviceGetMaxPcieLinkGeneration: device + system); the peak: link_peak
        "gen_max": probe.get("pcie.gen_max", lambda: lib.nvmlDeviceGetMaxPcieLinkGeneration(h)),
        "gen_gpu_max": probe.get("pcie.gen_gpu_max", lambda: lib.nvmlDeviceGetGpuMaxPcieLinkGeneration(h)),
        "width_current": probe.get("pcie.width_current", lambda: lib.nvmlDeviceGetCurrPcieLinkWidth(h)),
        "width_max": probe.get("pcie.width_max", lambda: lib.nvmlDeviceGetMaxPcieLinkWidth(h)),
    }
    # The link trains down when idle (gen_current 1 at idle is normal): the peak uses the max generation.
    pcie["peak_gbps_per_direction"], pcie["peak_source"] = link_peak(pcie)
    g["pcie"] = pcie
    if g.get("bus_id"):
        g["numa_node"] = probe.get("gpu.numa_node", lambda: pci_numa_node(g["bus_id"]))
    g["hbm_peak_gbps"] = _hbm_peak(g)
    return g


def _hbm_peak(g: dict) -> Optional[float]:
    """Theoretical DRAM bandwidth (GB/s) = 2 (DDR) x memory clock x bus width / 8, when NVML reports both."""
    mhz, bits = g.get("mem_clock_max_mhz"), g.get("memory_bus_width_bits")
    return 2 * mhz * 1e6 * bits / 8 / 1e9 if mhz and bits else None


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def mount_of(path: str) -> Optional[tuple[str, str, str]]:
    """(source, mountpoint, filesystem type) of the mount holding ``path``: the longest /proc/mounts prefix."""
    real = os.path.realpath(path)
    best = None
    for line in _read("/proc/mounts").splitlines():
        dev, mnt, fs = line.split()[:3]
        if real == mnt or real.startswith(mnt.rstrip("/") + "/"):
            if best is None or len(mnt) >= len(best[1]):
                best = (dev, mnt, fs)
    return best


def storage_info(path: str, probe: _Probe) -> dict:
    """Block device behind ``path``: model, filesystem, rotational flag (Linux sysfs + /proc/mounts)."""
    p = Path(path)
    out: dict = {"path": str(p), "exists": p.exists()}
    if not p.exists():
        probe.missing["storage"] = f"path {path} does not exist"
        return out
    real = str(p.resolve())
    best = probe.get("storage.mounts", lambda: mount_of(real))
    if best:
        out.update(source=best[0], mountpoint=best[1], filesystem=best[2])
    st = os.stat(real)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    out["dev"] = f"{major}:{minor}"
    sysdev = Path(f"/sys/dev/block/{major}:{minor}")
    if not sysdev.exists():
        probe.missing["storage.block_device"] = f"no block device for {major}:{minor} (virtual or network fs)"
        return out
    node = sysdev.resolve()
    disk = node.parent if (node / "partition").exists() else node  # a partition's parent is the disk
    out["block_device"] = disk.name
    out["rotational"] = probe.get("storage.rotational", lambda: _read(disk / "queue/rotational") == "1")
    out["model"] = probe.get("storage.model", lambda: _read(disk / "device/model"))
    out["logical_block_bytes"] = probe.get("storage.lbs", lambda: int(_read(disk / "queue/logical_block_size")))
    out["free_bytes"] = probe.get("storage.free", lambda: os.statvfs(real).f_bavail * os.statvfs(real).f_frsize)
    return out


def _version(mod: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(mod)
    except PackageNotFoundError:
        return None


def fingerprint(device_index: int = 0, storage_path: Optional[str] = None) -> dict:
    """The manifest's ``hardware`` section."""
    from bench.core.identity import job_ids

    _slurm_id = lambda: job_ids().get("id")  # noqa: E731
    probe = _Probe()
    import torch

    fp = {
        "host": {
            "hostname": socket.gethostname(),
            "os": platform.platform(),
            "cpu_model": probe.get("host.cpu_model", _cpu_model),
            "cpu_cores": os.cpu_count(),
            "memory_bytes": probe.get("host.memory", _meminfo_bytes),
            "numa_nodes": probe.get("host.numa_nodes", _numa_nodes),
            "slurm_job_id": _slurm_id(),
        },
        "gpu": probe.get("gpu", lambda: gpu_info(device_index, probe)),
        "software": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "cupy": _version("cupy-cuda12x") or _version("cupy-cuda13x") or _version("cupy"),
            "kvikio": _version("kvikio-cu13") or _version("kvikio-cu12") or _version("kvikio"),
            "nvidia_ml_py": _version("nvidia-ml-py"),
            "hydra_core": _version("hydra-core"),
        },
    }
    for k in ("cupy", "kvikio"):
        if fp["software"][k] is None:
            probe.missing[f"software.{k}"] = "not installed"
    if storage_path:
        fp["storage"] = probe.get("storage", lambda: storage_info(storage_path, probe))
    fp["missing"] = probe.missing
    return fp
