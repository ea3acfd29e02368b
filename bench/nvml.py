"""NVML helpers: clocks and clock-event (throttle) reasons around a measured point.

pynvml (nvidia-ml-py) is optional at run time: without it, or without a GPU, the sampler records
``available: False`` with the reason and never raises.
"""
from __future__ import annotations

from typing import Optional

# Clock-event reasons that mean the GPU ran below its requested clocks for a reason outside our control.
# (GPU idle, application-clock settings and the display clock setting are not throttling.)
THROTTLE_BITS = {
    0x0000000000000004: "sw_power_cap",
    0x0000000000000008: "hw_slowdown",
    0x0000000000000020: "sw_thermal_slowdown",
    0x0000000000000040: "hw_thermal_slowdown",
    0x0000000000000080: "hw_power_brake_slowdown",
}


def decode_reasons(mask: int) -> list[str]:
    return [name for bit, name in sorted(THROTTLE_BITS.items()) if mask & bit]


_nvml = None
_nvml_error: Optional[str] = None


def nvml():
    """The initialised pynvml module, or None (see :func:`nvml_error`)."""
    global _nvml, _nvml_error
    if _nvml is None and _nvml_error is None:
        try:
            import pynvml

            pynvml.nvmlInit()
            _nvml = pynvml
        except Exception as e:  # no library, no driver, no GPU
            _nvml_error = f"{type(e).__name__}: {e}".splitlines()[0]
    return _nvml


def nvml_error() -> Optional[str]:
    nvml()
    return _nvml_error


def handle_for(cuda_index: int):
    """NVML handle of the GPU torch calls ``cuda_index``. NVML numbers all GPUs, CUDA only the visible ones
    (CUDA_VISIBLE_DEVICES), so match by PCI bus id when torch reports it; fall back to the index."""
    lib = nvml()
    if lib is None:
        raise RuntimeError(nvml_error() or "pynvml unavailable")
    try:
        import torch

        p = torch.cuda.get_device_properties(cuda_index)
        bus = f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
        return lib.nvmlDeviceGetHandleByPciBusId(bus.encode())
    except Exception:
        return lib.nvmlDeviceGetHandleByIndex(cuda_index)


class ClockSampler:
    """Samples SM/memory clocks and throttle reasons before and after a point."""

    def __init__(self, device):
        self.handle = None
        self.reason = "device is cpu"
        if device.is_cuda:
            lib = nvml()
            if lib is None:
                self.reason = f"pynvml unavailable ({nvml_error()})"
            else:
                try:
                    self.handle = handle_for(device.index)
                except Exception as e:
                    self.reason = f"nvml handle: {e}"

    def read(self) -> dict:
        if self.handle is None:
            return {}
        lib = _nvml
        out = {}
        try:
            out["sm_mhz"] = lib.nvmlDeviceGetClockInfo(self.handle, lib.NVML_CLOCK_SM)
            out["mem_mhz"] = lib.nvmlDeviceGetClockInfo(self.handle, lib.NVML_CLOCK_MEM)
            get = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or lib.nvmlDeviceGetCurrentClocksThrottleReasons
            out["reasons_mask"] = int(get(self.handle))
            out["temp_c"] = lib.nvmlDeviceGetTemperature(self.handle, lib.NVML_TEMPERATURE_GPU)
        except Exception as e:
            out["error"] = str(e)
        return out

    def around(self, before: dict, after: dict) -> tuple[dict, dict]:
        """(clocks, throttle) record fields from two readings."""
        if self.handle is None:
            return {"available": False, "reason": self.reason}, {"throttled": None, "reasons": [], "available": False}
        clocks = {"available": True, **{f"{k}_before": v for k, v in before.items() if k != "reasons_mask"},
                  **{f"{k}_after": v for k, v in after.items() if k != "reasons_mask"}}
        mask = before.get("reasons_mask", 0) | after.get("reasons_mask", 0)
        reasons = decode_reasons(mask)
        return clocks, {"throttled": bool(reasons), "reasons": reasons, "available": True}
