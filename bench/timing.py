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


def next_spin(spin_cycles: int, enqueue_s: float) -> int:
    """Spin length (cycles at ~2 GHz) for the next sample: when the host took longer to queue the timed work than
    half the spin lasted, the spin may have ended first, so lengthen it to 4x the enqueue time (at most ~50 ms)."""
    if enqueue_s * 2.0e9 > spin_cycles * 0.5:
        return min(int(enqueue_s * 2.0e9 * 4), 100_000_000)
    return spin_cycles


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
        if self.hold_stream:
            self.spin_cycles = next_spin(self.spin_cycles, enqueue_s)
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


# -- concurrent lanes --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lane:
    """One stream of work that runs beside others (a copy, a layer loop); ``device`` is the CUDA device index it
    runs on (None: the run's device)."""

    name: str
    fn: Callable[[], object]
    device: Optional[int] = None


class CpuLanes:
    """Host threads, one per lane, released together by a barrier; each lane's span runs from the common start
    to its own end (perf_counter_ns). Work that releases the GIL (torch ops, memmove) really runs in parallel."""

    name = "perf_counter_ns/threads"
    resolution_s = 1e-5

    def __init__(self, lanes: list[Lane]):
        self.lanes = lanes

    def sample_lanes(self) -> tuple[float, dict]:
        import threading

        barrier = threading.Barrier(len(self.lanes) + 1)
        ends: dict[str, int] = {}
        errors: list[BaseException] = []

        def work(lane: Lane) -> None:
            barrier.wait()
            try:
                lane.fn()
            except BaseException as e:  # surfaced below, in the caller's thread
                errors.append(e)
            finally:
                ends[lane.name] = time.perf_counter_ns()

        threads = [threading.Thread(target=work, args=(lane,), daemon=True) for lane in self.lanes]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.perf_counter_ns()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        spans = {name: (end - t0) * 1e-9 for name, end in ends.items()}
        return max(spans.values()), spans

    def sync(self) -> None:
        pass


class CudaLanes:
    """One CUDA stream per lane, queued in list order from this thread behind a spin kernel (as
    :class:`CudaClock`), so that every lane is queued before any starts. Each lane's span runs from its device's
    start event to the lane's end event; the total is the longest device span. Lanes on several devices start
    within the host's enqueue skew of each other (recorded as ``enqueue_skew_s``)."""

    name = "cuda_event/streams"
    resolution_s = 5e-6

    def __init__(self, lanes: list[Lane], default_device: int, hold_stream: bool = True):
        import torch

        self.torch = torch
        self.lanes = lanes
        self.dev = {lane.name: default_device if lane.device is None else lane.device for lane in lanes}
        self.devices = sorted(set(self.dev.values()))
        self.streams = {lane.name: torch.cuda.Stream(device=self.dev[lane.name]) for lane in lanes}
        self.hold_stream = hold_stream
        self.spin_cycles = 50_000
        self.enqueue_skew_s = 0.0

    def sample_lanes(self) -> tuple[float, dict]:
        torch = self.torch
        ev = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        starts, ends, done = {}, {}, {}
        t0 = time.perf_counter()
        for d in self.devices:
            with torch.cuda.device(d):
                if self.hold_stream:
                    torch.cuda._sleep(self.spin_cycles)
                starts[d] = ev()
                starts[d].record()
        self.enqueue_skew_s = time.perf_counter() - t0
        for lane in self.lanes:
            s = self.streams[lane.name]
            s.wait_event(starts[self.dev[lane.name]])
            with torch.cuda.stream(s):
                lane.fn()
                ends[lane.name] = ev()
                ends[lane.name].record(s)
        for d in self.devices:
            with torch.cuda.device(d):
                main = torch.cuda.current_stream()
                for lane in self.lanes:
                    if self.dev[lane.name] == d:
                        main.wait_stream(self.streams[lane.name])
                done[d] = ev()
                done[d].record()
        enqueue_s = time.perf_counter() - t0
        for d in self.devices:
            done[d].synchronize()
        if self.hold_stream:
            self.spin_cycles = next_spin(self.spin_cycles, enqueue_s)
        spans = {n: starts[self.dev[n]].elapsed_time(e) * 1e-3 for n, e in ends.items()}
        total = max(starts[d].elapsed_time(done[d]) * 1e-3 for d in self.devices)
        return total, spans

    def sync(self) -> None:
        for d in self.devices:
            self.torch.cuda.synchronize(d)


@dataclass
class LaneStats:
    """``total``: all lanes together, start to the last lane's end; ``lanes``: each lane's own span (same samples)."""

    total: Stats
    lanes: dict


def measure_lanes(lanes_clock, rule: StoppingRule, warmup_s: float = 0.05,
                  prepare: Optional[Callable[[], object]] = None) -> LaneStats:
    """Warm up and sample concurrent lanes like :func:`measure` (one call of every lane per sample; the stopping
    rule watches the total); each lane's span is summarised over the same timed samples."""
    spans: list[dict] = []

    class _Recorder:
        name, resolution_s = lanes_clock.name, lanes_clock.resolution_s

        def sample(self, _fn, inner: int) -> float:
            total, s = lanes_clock.sample_lanes()
            spans.append(s)
            return total

        def sync(self) -> None:
            lanes_clock.sync()

    total = measure(None, _Recorder(), rule, warmup_s, prepare=prepare, min_sample_s=0.0)
    timed = spans[total.warmup_calls:]
    per_lane = {name: summarize([s[name] for s in timed], 1, total.stop_reason, total.converged, total.warmup_calls)
                for name in timed[0]}
    return LaneStats(total, per_lane)


class Handoff:
    """Step-by-step ordering between lanes: the producer lane calls ``post(i)`` when step i is done, the consumer
    ``wait(i)`` before it needs it. CUDA: events on the lanes' current streams (the GPU orders them; the
    producer lane must come first in the lane list, as lanes are queued in order). CPU: threading.Event.
    ``reset()`` (untimed, before each sample) re-arms it."""

    def __init__(self, steps: int, cuda: bool):
        self.steps, self.cuda = steps, cuda
        self.reset()

    def reset(self) -> None:
        if self.cuda:
            import torch

            self.events = [torch.cuda.Event() for _ in range(self.steps)]
        else:
            import threading

            self.events = [threading.Event() for _ in range(self.steps)]

    def post(self, i: int) -> None:
        if self.cuda:
            self.events[i].record()
        else:
            self.events[i].set()

    def wait(self, i: int) -> None:
        if self.cuda:
            import torch

            torch.cuda.current_stream().wait_event(self.events[i])
        elif not self.events[i].wait(timeout=120):
            raise RuntimeError(f"handoff step {i} was never posted (the producer lane failed or is not running)")
