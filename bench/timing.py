"""Timing primitives: warm-up, per-sample clocks and the noise-based stopping rule.

All times are seconds. A *sample* is the time of one call of the timed function (averaged over ``inner``
back-to-back calls when one call is shorter than the clock can resolve). Benchmarks never time themselves:
the harness calls :func:`measure` with the clock that fits the device.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class StoppingRule:
    """Stop once ``min_samples`` are in and IQR/median < ``noise_target``; give up after ``time_budget_s``
    of sampling or ``max_samples`` samples (then ``converged`` is False)."""

    min_samples: int = 5
    max_samples: int = 1000
    noise_target: float = 0.02
    time_budget_s: float = 2.0

    def check(self, samples: list[float], elapsed_s: float) -> Optional[tuple[str, bool]]:
        """None to go on, else (stop_reason, converged)."""
        n = len(samples)
        if n >= self.min_samples and relative_iqr(samples) < self.noise_target:
            return "noise_target", True
        if n >= self.max_samples:
            return "max_samples", False
        if elapsed_s >= self.time_budget_s and n >= min(self.min_samples, 3):
            return "time_budget", False
        return None


def relative_iqr(samples) -> float:
    """(p75 - p25) / median; inf for fewer than two samples."""
    if len(samples) < 2:
        return math.inf
    q25, q50, q75 = np.percentile(samples, [25, 50, 75])
    return float((q75 - q25) / q50) if q50 > 0 else math.inf


@dataclass
class Stats:
    """Summary of one measured point; every time in seconds per call."""

    n: int
    inner: int
    min_s: float
    median_s: float
    mean_s: float
    p10_s: float
    p90_s: float
    iqr_s: float
    noise: float
    converged: bool
    stop_reason: str
    warmup_calls: int
    samples_s: list = field(repr=False, default_factory=list)

    def as_metrics(self) -> dict:
        d = asdict(self)
        d.pop("samples_s")
        return d


def summarize(samples: list[float], inner: int, stop_reason: str, converged: bool, warmup_calls: int) -> Stats:
    a = np.asarray(samples, dtype=np.float64)
    p10, q25, q50, q75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return Stats(
        n=len(a), inner=inner, min_s=float(a.min()), median_s=float(q50), mean_s=float(a.mean()),
        p10_s=float(p10), p90_s=float(p90), iqr_s=float(q75 - q25),
        noise=float((q75 - q25) / q50) if q50 > 0 else math.inf,
        converged=converged, stop_reason=stop_reason, warmup_calls=warmup_calls, samples_s=a.tolist(),
    )


class CpuClock:
    """Host wall clock (perf_counter_ns) around ``inner`` calls."""

    name = "perf_counter_ns"
    resolution_s = 1e-6  # perf_counter_ns itself resolves ~100 ns; keep samples well above call overhead

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        return (time.perf_counter_ns() - t0) * 1e-9 / inner

    def sync(self) -> None:
        pass


class CudaClock:
    """CUDA events on the current stream around ``inner`` calls.

    With ``hold_stream`` a spin kernel is queued ahead of the start event so that the host's enqueue time
    of the timed calls is not measured (the nvbandwidth trick; essential for small copies). If the host
    took longer to enqueue than the spin lasted, the spin is lengthened for the next sample.
    """

    name = "cuda_event"
    resolution_s = 5e-6  # event timestamps resolve ~0.5 us; keep a sample >= 10x that

    def __init__(self, hold_stream: bool = True):
        import torch

        self.torch = torch
        self.hold_stream = hold_stream
        self.spin_cycles = 50_000  # grows on demand; ~25 us at 2 GHz

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        torch = self.torch
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        if self.hold_stream:
            torch.cuda._sleep(self.spin_cycles)
        t0 = time.perf_counter()
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        enqueue_s = time.perf_counter() - t0
        end.synchronize()
        if self.hold_stream and enqueue_s * 2.0e9 > self.spin_cycles * 0.5:
            # the spin may have ended before the last call was queued: lengthen it (bounded at ~50 ms)
            self.spin_cycles = min(int(enqueue_s * 2.0e9 * 4), 100_000_000)
        return start.elapsed_time(end) * 1e-3 / inner

    def sync(self) -> None:
        self.torch.cuda.synchronize()


def measure(
    fn: Callable[[], object],
    clock,
    rule: StoppingRule,
    warmup_s: float = 0.05,
    prepare: Optional[Callable[[], object]] = None,
    min_sample_s: Optional[float] = None,
) -> Stats:
    """Warm up, then sample ``fn`` until ``rule`` says stop.

    ``prepare`` runs before every sample and is never timed (L2 flush, input rotation); when it is given,
    each sample is a single call so the preparation applies to every timed call.
    Warm-up runs for ``warmup_s`` (at least two calls) and is excluded; it also sizes ``inner``.
    """
    warmup_calls = 0
    t_start = time.perf_counter()
    while True:
        if prepare is not None:
            prepare()
        per_call = clock.sample(fn, 1)
        warmup_calls += 1
        if warmup_calls >= 2 and time.perf_counter() - t_start >= warmup_s:
            break
    min_sample_s = clock.resolution_s * 10 if min_sample_s is None else min_sample_s
    inner = 1 if prepare is not None else max(1, min(10_000, math.ceil(min_sample_s / max(per_call, 1e-9))))

    samples: list[float] = []
    t0 = time.perf_counter()
    while True:
        if prepare is not None:
            prepare()
            clock.sync()
        samples.append(clock.sample(fn, inner))
        verdict = rule.check(samples, time.perf_counter() - t0)
        if verdict is not None:
            reason, converged = verdict
            return summarize(samples, inner, reason, converged, warmup_calls)
