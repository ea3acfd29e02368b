"""NVML helpers: clocks and clock-event (throttle) reasons around a measured point.

pynvml (nvidia-ml-py) is optional at run time: without it, or without a GPU, the sampler records
``available: False`` with the reason and never raises.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
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


# Cumulative NVML counters of time spent below requested clocks, in ns (nvml.h): diffed around timed regions, they
# catch a throttle event of any length inside the region, which a reading before and after the point cannot.
# Field ids come from the installed binding: 269-271 were 251-253 before nvidia-ml-py 13.580 (251 is now another
# field), so a hard-coded number would read the wrong counter on one side of that change.
COUNTER_CONSTANTS = {
    "sw_power_cap": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_POWER_CAP",
    "sw_thermal_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN",
    "hw_thermal_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN",
    "hw_power_brake_slowdown": "NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN",
}


def counter_fields(lib) -> dict:
    """{field id: reason} of the clock-event duration counters the binding ``lib`` defines."""
    return {int(getattr(lib, const)): reason for reason, const in COUNTER_CONSTANTS.items() if hasattr(lib, const)}


VIOLATION_POLICIES = {"power": 0, "thermal": 1}  # NVML_PERF_POLICY_POWER / _THERMAL (nvmlDeviceGetViolationStatus)
GPU_IDLE_BIT = 0x1  # nvmlClocksEventReasonGpuIdle: a sample of an idle GPU says nothing about the work's clocks


class ClockSampler:
    """Clocks and throttling of a point's timed regions.

    ``region()`` wraps every measurement: cumulative counters (clock-event reason durations, power/thermal
    violation time; ns) are read before and after it and diffed, and a thread samples the SM/memory clocks,
    temperature and the clock-event reason mask every ``period_s`` while it runs. ``begin_point()`` /
    ``end_point()`` bracket a point and give its ``clocks`` and ``throttle`` record fields: min/mean/max SM clock
    over the busy samples (the idle reason unset), reasons seen, counter deltas, and ``throttled``."""

    def __init__(self, device, enabled: bool = True, period_s: float = 0.01):
        self.handle = None
        self.period_s = period_s
        self.reason = "device is cpu" if not device.is_cuda else "sampling disabled"
        if device.is_cuda and enabled:
            lib = nvml()
            if lib is None:
                self.reason = f"pynvml unavailable ({nvml_error()})"
            else:
                try:
                    self.handle = handle_for(device.index)
                except Exception as e:
                    self.reason = f"nvml handle: {e}"
        self._depth = 0
        self._fields = counter_fields(_nvml) if self.handle is not None else {}
        self.begin_point()

    # -- readings ---------------------------------------------------------------------------------------------
    def read(self) -> dict:
        """One instantaneous reading: sm_mhz, mem_mhz, reasons_mask, temp_c ({} without NVML)."""
        if self.handle is None:
            return {}
        lib = _nvml
        out = {}
        try:
            out["sm_mhz"] = lib.nvmlDeviceGetClockInfo(self.handle, lib.NVML_CLOCK_SM)
            out["mem_mhz"] = lib.nvmlDeviceGetClockInfo(self.handle, lib.NVML_CLOCK_MEM)
            get = getattr(lib, "nvmlDeviceGetCurrentClocksEventReasons", None) or \
                lib.nvmlDeviceGetCurrentClocksThrottleReasons
            out["reasons_mask"] = int(get(self.handle))
            out["temp_c"] = lib.nvmlDeviceGetTemperature(self.handle, lib.NVML_TEMPERATURE_GPU)
        except Exception as e:
            out["error"] = str(e)
        return out

    def counters(self) -> dict:
        """Cumulative throttle-time counters in ns: {reason: ns}; a counter NVML does not support is left out."""
        if self.handle is None:
            return {}
        lib = _nvml
        out = {}
        fields = self._fields
        try:
            for v in lib.nvmlDeviceGetFieldValues(self.handle, list(fields)) if fields else ():
                if int(v.nvmlReturn) == 0:  # the value is undefined otherwise
                    out[fields[int(v.fieldId)]] = int(v.value.ullVal)
        except Exception as e:
            self._errors.add(f"field values: {e}")
        for name, policy in VIOLATION_POLICIES.items():
            try:
                out[f"violation_{name}"] = int(lib.nvmlDeviceGetViolationStatus(self.handle, policy).violationTime)
            except Exception as e:
                self._errors.add(f"violation {name}: {e}")
        return out

    # -- point and region bookkeeping ---------------------------------------------------------------------------
    def begin_point(self) -> None:
        self._samples: list[dict] = []
        self._deltas: dict[str, int] = {}
        self._timed_s = 0.0
        self._errors: set[str] = set()

    @contextmanager
    def region(self):
        """Around one measurement (nested regions count once)."""
        if self.handle is None or self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self._depth += 1
        stop = threading.Event()

        def poll():
            while True:
                self._samples.append(self.read())
                if stop.wait(self.period_s):
                    return

        before = self.counters()
        t0 = time.perf_counter()
        th = threading.Thread(target=poll, daemon=True, name="tierbench-nvml")
        th.start()
        try:
            yield
        finally:
            stop.set()
            th.join()
            self._samples.append(self.read())
            self._timed_s += time.perf_counter() - t0
            after = self.counters()
            for k, v in after.items():
                if k in before:
                    self._deltas[k] = self._deltas.get(k, 0) + max(0, v - before[k])
            self._depth -= 1

    def end_point(self) -> tuple[dict, dict]:
        """(clocks, throttle) record fields of the point's timed regions."""
        if self.handle is None:
            return {"available": False, "reason": self.reason}, {"throttled": None, "reasons": [], "available": False}
        good = [s for s in self._samples if "sm_mhz" in s]
        busy = [s for s in good if not s.get("reasons_mask", 0) & GPU_IDLE_BIT]
        clocks: dict = {"available": True, "timed_s": self._timed_s, "samples": len(good), "busy_samples": len(busy)}
        for key in ("sm_mhz", "mem_mhz"):
            vals = [s[key] for s in busy]
            if vals:
                clocks[f"{key}_min"], clocks[f"{key}_max"] = min(vals), max(vals)
                clocks[f"{key}_mean"] = sum(vals) / len(vals)
        temps = [s["temp_c"] for s in good if "temp_c" in s]
        if temps:
            clocks["temp_c_max"] = max(temps)
        mask = 0
        for s in good:
            mask |= s.get("reasons_mask", 0)
        reasons = set(decode_reasons(mask))
        reasons.update(k for k, v in self._deltas.items() if v > 0 and not k.startswith("violation_"))
        reasons.update(f"{k}" for k, v in self._deltas.items() if v > 0 and k.startswith("violation_"))
        timed = bool(self._timed_s)
        throttle = {"available": True, "throttled": bool(reasons) if timed else None, "reasons": sorted(reasons),
                    "counters_ns": dict(self._deltas), "timed_s": self._timed_s}
        if self._errors:
            throttle["errors"] = sorted(self._errors)
        return clocks, throttle
