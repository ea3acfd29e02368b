"""One point of a benchmark, run whole: supported here, the benchmark called with its :class:`State`, its metrics
derived and checked against physical peaks, any failure isolated into the record (skipped / error with the reason),
memory released. Never raises for the point (Ctrl-C and SystemExit pass)."""
from __future__ import annotations

import time
import traceback
from typing import Optional

import torch

from bench.core.errors import Skip
from bench.harness.state import Need, RunContext, State, VerificationError
from bench.harness.timing import MeasurementError, StoppingRule
from bench.hw.device import Device, L2Flusher
from bench.hw.nvml import ClockSampler


def plausibility(metrics: dict, peaks: dict) -> dict:
    """Flag a result above the physical ceiling (2% slack for clock/rounding): that is a bug, not a result."""
    out = {}
    for kind, peak in peaks.items():
        if kind in metrics:
            frac = metrics[kind] / peak
            out[f"{kind}_peak"] = peak
            out[f"{kind}_fraction_of_peak"] = frac
            if frac > 1.02:
                out["implausible"] = f"{kind}={metrics[kind]:.3g} exceeds theoretical peak {peak:.3g}"
    return out


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, (MemoryError, getattr(torch.cuda, "OutOfMemoryError", MemoryError))) or \
        "out of memory" in str(e).lower()


def point_need(bench, state: State) -> Need:
    """What the point will hold, as its benchmark declares it (bench.core.registry: ``needs``); it may skip."""
    return bench.needs(state) if bench.needs is not None else Need(what="no buffers declared")


def run_point(bench, params: dict, cfg, device: Device, rule: StoppingRule, warmup_s: float,
              l2: Optional[L2Flusher], mem_budget_bytes: int, sampler: ClockSampler,
              hardware: Optional[dict] = None, ctx: Optional[RunContext] = None) -> dict:
    """Run one point and return its record body (never raises, except KeyboardInterrupt/SystemExit).

    Clocks and throttle flags come from the point's timed regions only (``sampler.region()`` around every
    measurement): cumulative NVML counters diffed around them and clocks sampled during them."""
    state = State(bench, params, device, cfg, rule, warmup_s, l2, mem_budget_bytes, hardware, ctx, sampler)
    status, reason = "ok", None
    sampler.begin_point()
    t0 = time.perf_counter()
    metrics = {}
    try:
        reason = bench.supports(device)
        if reason:
            raise Skip(reason)
        state.require(point_need(bench, state))  # declared before anything is allocated; skips what cannot fit
        bench.fn(state)
        if state.stats is None and not state.metrics:
            raise RuntimeError(f"benchmark {bench.name} neither timed anything nor set a metric")
        if state.stats is not None:
            metrics.update(state.stats.as_metrics())
        metrics.update(state.derived())
        metrics.update(state.metrics)
        flags = plausibility(metrics, state.peaks)
        if "implausible" in flags:
            state.notes["implausible"] = flags.pop("implausible")
        metrics.update(flags)
    except Skip as e:
        status, reason = "skipped", str(e)
    except VerificationError as e:
        status, reason = "error", f"verification failed: {e}"
    except MeasurementError as e:
        status, reason = "error", f"measurement refused: {e}"
    except Exception as e:
        status = "skipped"
        kind = "out of memory" if _is_oom(e) else type(e).__name__
        first = (str(e).strip().splitlines() or [""])[0][:300]
        reason = f"{kind}: {first}"
        state.notes["traceback_tail"] = traceback.format_exc().strip().splitlines()[-3:]
    finally:
        device.release()
    clocks, throttle = sampler.end_point()
    return {
        "status": status,
        "reason": reason,
        "metrics": metrics if status == "ok" else {},
        "verified": state.verified,
        "l2_flushed": state.l2_flushed,
        "clocks": clocks,
        "throttle": throttle,
        "info": state.notes,
        "need": state.need.as_dict() if state.need is not None else None,
        "wall_s": time.perf_counter() - t0,
    }
