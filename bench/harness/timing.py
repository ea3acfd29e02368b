"""Timing primitives: warm-up, per-sample clocks, the noise-based stopping rule, and the clock rule per kind of work.

All times are seconds. A *sample* is the time of one call of the timed function (averaged over ``inner``
back-to-back calls when one call is shorter than the clock can resolve). Benchmarks never time themselves: each
timed call declares its kind of work and the harness picks the clock from it (:func:`clock_for`):

  ``device``       work queued on the current CUDA stream (kernels, async copies): CUDA events around it, queued
                   behind a stream-hold spin so the host's enqueue time is not measured. Refused when the call
                   turns out to do its work on the host (the events would measure max(0, work - spin)) or when
                   the spin cannot hide its enqueue (more calls than the stream queue holds: host-issued work).
  ``host``         work done by the host (file I/O, host memcpy): perf_counter around it.
  ``host_issued``  device work whose issue rate is part of its cost (thousands of small cudaMemcpyAsync, calls
                   that block the host such as pageable copies or MoE routing reads): perf_counter around the
                   issue plus a final device synchronize.
On the CPU every kind is host work (torch CPU ops are synchronous) and runs on the host clock.

CUDA is reached only through :func:`bench.hw.runtime.runtime` (``torch.cuda`` and the host clock): tests swap in a
simulated timeline with :func:`bench.hw.runtime.use_runtime` to check the CUDA branch of this module on a machine
without a GPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np

WORK_KINDS = ("device", "host", "host_issued")


class MeasurementError(Exception):
    """A timing that would be wrong if reported (clock misuse, a zero time): the point is recorded as an error."""


def check_work(work) -> str:
    if work not in WORK_KINDS:
        raise ValueError(f"work={work!r}: a timed call must declare one of {', '.join(WORK_KINDS)}")
    return work


# the seam (torch.cuda and the host clock, swapped by tests for a simulated timeline) is bench.hw.runtime
from bench.hw.runtime import Runtime, runtime, use_runtime  # noqa: E402,F401


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
    """Summary of one measured point; every time in seconds per call. ``clock`` names the clock that measured it
    and ``work`` the kind of work the call declared."""

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
    clock: str = ""
    work: str = ""
    discarded: int = 0  # timed samples redone because the stream-hold spin ended before the host finished queuing
    samples_s: list = field(repr=False, default_factory=list)

    def as_metrics(self) -> dict:
        d = asdict(self)
        d.pop("samples_s")
        return d


def summarize(samples: list[float], inner: int, stop_reason: str, converged: bool, warmup_calls: int,
              clock: str = "", work: str = "") -> Stats:
    a = np.asarray(samples, dtype=np.float64)
    p10, q25, q50, q75, p90 = np.percentile(a, [10, 25, 50, 75, 90])
    return Stats(
        n=len(a), inner=inner, min_s=float(a.min()), median_s=float(q50), mean_s=float(a.mean()),
        p10_s=float(p10), p90_s=float(p90), iqr_s=float(q75 - q25),
        noise=float((q75 - q25) / q50) if q50 > 0 else math.inf,
        converged=converged, stop_reason=stop_reason, warmup_calls=warmup_calls, clock=clock, work=work,
        samples_s=a.tolist(),
    )


# -- clocks ------------------------------------------------------------------------------------------------------
class HostClock:
    """Host wall clock (perf_counter_ns) around ``inner`` calls: host work (file I/O, host memcpy, CPU runs)."""

    name = "perf_counter_ns"
    resolution_s = 1e-6  # perf_counter_ns itself resolves ~100 ns; keep samples well above call overhead
    max_inner = 10_000
    settled = True

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        now_ns = runtime().now_ns
        t0 = now_ns()
        for _ in range(inner):
            fn()
        return (now_ns() - t0) * 1e-9 / inner

    def sync(self) -> None:
        pass


class HostIssuedClock:
    """Host clock around the issue of ``inner`` calls plus a final device synchronize (the device is idle when
    the clock starts): device work whose issue rate is part of its cost."""

    name = "perf_counter_ns+synchronize"
    resolution_s = 1e-5  # a synchronize round trip costs a few us
    max_inner = 10_000
    settled = True

    def __init__(self, device_index: int = 0):
        self.index = device_index

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        rt = runtime()
        rt.cuda.synchronize(self.index)
        t0 = rt.now_ns()
        for _ in range(inner):
            fn()
        rt.cuda.synchronize(self.index)
        return (rt.now_ns() - t0) * 1e-9 / inner

    def sync(self) -> None:
        runtime().cuda.synchronize(self.index)


SPIN_HZ_NOMINAL = 2.0e9  # torch.cuda._sleep counts SM cycles; ~2 GHz on datacenter GPUs
SPIN_MAX_CYCLES = 100_000_000  # ~50 ms: a stream queue cannot hold more work than that anyway
HOST_WORK_MIN_S = 50e-6  # below this host time a call is too short to tell host work from launch overhead
HOST_WORK_FRACTION = 0.02  # device span under this fraction of a hidden enqueue: the work ran on the host


def next_spin(spin_cycles: int, enqueue_s: float) -> int:
    """Spin length (cycles at ~2 GHz) for the next sample: when the host took longer to queue the timed work than
    half the spin lasted, the spin may have ended first, so lengthen it to 4x the enqueue time (at most ~50 ms)."""
    if enqueue_s * SPIN_HZ_NOMINAL > spin_cycles * 0.5:
        return min(int(enqueue_s * SPIN_HZ_NOMINAL * 4), SPIN_MAX_CYCLES)
    return spin_cycles


def _not_device_work(enqueue_s: float, span_s: float, what: str) -> MeasurementError:
    return MeasurementError(
        f"{what}: the host spent {enqueue_s * 1e3:.3g} ms in the call but the stream saw only "
        f"{span_s * 1e6:.3g} us of work behind the stream-hold spin: the call does its work on the host, which the "
        "CUDA event clock cannot time (it would report max(0, work - spin)); declare work='host' (host-only work) "
        "or work='host_issued' (device work whose host issue is part of its cost)")


def _enqueue_not_hidden(enqueue_s: float, spin_cycles: int, what: str) -> MeasurementError:
    return MeasurementError(
        f"{what}: the host needed {enqueue_s * 1e3:.3g} ms to queue one sample and the stream-hold spin "
        f"({spin_cycles} cycles) ended before it finished, so the events would time the host's issue rate: more "
        "calls than the stream queue holds, or a host-bound call; declare work='host_issued'")


def _settle_spin(clock, spin: int, device_span_s: float, what: str) -> None:
    """After a spin-held sample of ``clock`` (its ``hidden`` and ``enqueue_s`` set): size the spin for the next
    sample, say whether this one was settled, and refuse host work (long host time, ~no stream time)."""
    clock.spin_cycles = next_spin(spin, clock.enqueue_s)
    clock.settled = clock.hidden and clock.spin_cycles == spin
    if clock.hidden and clock.enqueue_s >= HOST_WORK_MIN_S and device_span_s < HOST_WORK_FRACTION * clock.enqueue_s:
        raise _not_device_work(clock.enqueue_s, device_span_s, what)


class CudaClock:
    """CUDA events on the current stream around ``inner`` calls of device work.

    A spin kernel is queued ahead of the start event so that the host's enqueue time of the timed calls is not
    measured (the nvbandwidth trick; essential for small copies). If the host took longer to enqueue than the
    spin lasted, the spin is lengthened for the next sample; ``settled`` says whether the last sample's enqueue
    was hidden (the start event had not yet run when the host finished queuing) with a spin that needs no
    growth. A call whose host time is long but whose stream span is ~0 did its work on the host: refused.
    """

    name = "cuda_event"
    resolution_s = 5e-6  # event timestamps resolve ~0.5 us; keep a sample >= 10x that
    max_inner = 256  # a stream queue holds ~1000 operations: never batch more calls than that behind one spin

    def __init__(self, device_index: int = 0):
        self.index = device_index
        self.spin_cycles = 50_000  # grows on demand; ~25 us at 2 GHz
        self.settled = False
        self.hidden = False
        self.enqueue_s = 0.0

    def sample(self, fn: Callable[[], object], inner: int) -> float:
        rt = runtime()
        cuda = rt.cuda
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        spin = self.spin_cycles
        cuda._sleep(spin)
        t0 = rt.now()
        start.record()
        for _ in range(inner):
            fn()
        self.hidden = not start.query()  # the spin still holds the stream: everything was queued before it ran
        end.record()
        self.enqueue_s = rt.now() - t0
        end.synchronize()
        span = start.elapsed_time(end) * 1e-3 / inner
        _settle_spin(self, spin, span * inner, "work='device' timed on the CUDA event clock")
        return span

    def unsettled_error(self) -> MeasurementError:
        return _enqueue_not_hidden(self.enqueue_s, self.spin_cycles, "work='device'")

    def sync(self) -> None:
        runtime().cuda.synchronize(self.index)


def lanes_for(lanes: list, device) -> object:
    """The timer for concurrent ``lanes`` on ``device``: CUDA streams (one per lane) or host threads."""
    return CudaLanes(lanes, device.index) if device.is_cuda else CpuLanes(lanes)


def clock_for(work: str, device) -> object:
    """The clock for a call of kind ``work`` on ``device`` (see the module docstring)."""
    check_work(work)
    if not device.is_cuda or work == "host":
        return HostClock()
    if work == "host_issued":
        return HostIssuedClock(device.index)
    return CudaClock(device.index)


CALIBRATION_SAMPLES = 4  # untimed samples at the final inner, until the clock has settled (spin sized)
MAX_DISCARDED = 10  # timed samples whose enqueue the spin did not hide are redone; more than this (and more than
# the samples kept) and the clock is refused


def measure(
    fn: Callable[[], object],
    clock,
    rule: StoppingRule,
    warmup_s: float = 0.05,
    prepare: Optional[Callable[[], object]] = None,
    min_sample_s: Optional[float] = None,
    inner: Optional[int] = None,
    work: str = "",
) -> Stats:
    """Warm up, then sample ``fn`` until ``rule`` says stop.

    ``prepare`` runs before every sample and is never timed (L2 flush, input rotation); when it is given,
    each sample is a single call so the preparation applies to every timed call. ``inner`` fixes the calls per
    sample (1 for a per-call latency); otherwise warm-up sizes it. Warm-up runs for ``warmup_s`` (at least two
    calls) and is excluded; then the clock is calibrated at the final ``inner`` (stream-hold spin sized) before
    the first timed sample, and a clock that cannot settle is refused (:class:`MeasurementError`).
    """
    now = runtime().now
    warmup_calls = 0
    t_start = now()

    def one(k: int) -> float:
        if prepare is not None:
            prepare()
            clock.sync()
        return clock.sample(fn, k)

    while True:
        per_call = one(1)
        warmup_calls += 1
        if warmup_calls >= 2 and now() - t_start >= warmup_s:
            break
    min_sample_s = clock.resolution_s * 10 if min_sample_s is None else min_sample_s
    if inner is None:
        inner = 1 if prepare is not None else \
            max(1, min(clock.max_inner, math.ceil(min_sample_s / max(per_call, 1e-9))))
    for _ in range(CALIBRATION_SAMPLES):  # at least one: the spin was sized at inner=1
        one(inner)
        warmup_calls += 1
        if clock.settled:
            break
    if not clock.settled:
        raise clock.unsettled_error()

    samples: list[float] = []
    discarded = 0
    t0 = now()
    while True:
        x = one(inner)
        if getattr(clock, "hidden", True):
            samples.append(x)
        else:  # the host fell behind the spin this time (GC pause, page fault): the sample timed its issue
            discarded += 1
            if discarded > max(MAX_DISCARDED, len(samples)):
                raise clock.unsettled_error()
            continue
        verdict = rule.check(samples, now() - t0)
        if verdict is not None:
            reason, converged = verdict
            st = summarize(samples, inner, reason, converged, warmup_calls, clock.name, work)
            st.discarded = discarded
            return st


# -- concurrent lanes --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lane:
    """One stream of work that runs beside others (a copy, a layer loop). ``work`` is its kind as for a single
    call ('device' or 'host_issued' on a GPU); ``device`` is the CUDA device index it runs on (None: the run's)."""

    name: str
    fn: Callable[[], object]
    work: str
    device: Optional[int] = None

    def __post_init__(self):
        check_work(self.work)


class CpuLanes:
    """Host threads, one per lane, released together by a barrier; each lane's span runs from the common start
    to its own end (perf_counter_ns). Work that releases the GIL (torch ops, memmove) really runs in parallel."""

    name = "perf_counter_ns/threads"
    resolution_s = 1e-5
    max_inner = 1
    settled = True

    def __init__(self, lanes: list[Lane]):
        self.lanes = lanes

    def sample_lanes(self) -> tuple[float, dict]:
        now_ns = runtime().now_ns
        ends: dict[str, int] = {}
        start: list[int] = []

        def run(lane: Lane) -> None:
            try:
                lane.fn()
            finally:
                ends[lane.name] = now_ns()

        _in_threads(run, self.lanes, released=lambda: start.append(now_ns()))
        spans = {name: (end - start[0]) * 1e-9 for name, end in ends.items()}
        return max(spans.values()), spans

    def sync(self) -> None:
        pass

    def unsettled_error(self) -> MeasurementError:  # pragma: no cover - always settled
        raise AssertionError


class CudaLanes:
    """One CUDA stream per lane, all waiting on one start event per device, so that every lane starts together.

    Device-work lanes are queued first, from this thread, in list order (each must fit a stream queue: a lane of
    more launches than that is host-issued work). Host-issued lanes follow: one is issued from this thread; two
    or more are issued at once, one host thread each (torch's current stream is per thread; its ops release the
    GIL while the driver blocks on a full queue), so that no slowly issued lane (thousands of copies; the stream
    queue blocks the host after ~1000) waits for another's issue. When every lane is device work, a spin kernel
    holds the start until all are queued (as :class:`CudaClock`; refused like it when the spin cannot hide the
    enqueue). With a host-issued lane there is no spin: the start event runs at once and the spans include the
    host's issue, as the host-issued clock's do. Each lane's span runs from its device's start event to the
    lane's end event; the total is the longest device span. Lanes on several devices start within the host's
    enqueue skew of each other (``enqueue_skew_s``). A :class:`Handoff` producer must be queued before its
    consumer: a device lane, or the first of host-issued lanes issued from this thread."""

    name = "cuda_event/streams"
    resolution_s = 5e-6
    max_inner = 1

    def __init__(self, lanes: list[Lane], default_device: int):
        cuda = runtime().cuda
        bad = [lane.name for lane in lanes if lane.work == "host"]
        if bad:
            raise ValueError(f"lanes {bad} declare work='host': a CUDA lane must queue its work on its stream")
        self.lanes = [lane for lane in lanes if lane.work == "device"] + \
            [lane for lane in lanes if lane.work == "host_issued"]
        host_issued = [lane for lane in self.lanes if lane.work == "host_issued"]
        # queued from this thread in order; two or more host-issued lanes are issued at once, a thread each
        self.threaded = host_issued if len(host_issued) >= 2 else []
        self.in_order = [lane for lane in self.lanes if lane not in self.threaded]
        self.dev = {lane.name: default_device if lane.device is None else lane.device for lane in lanes}
        self.devices = sorted(set(self.dev.values()))
        self.streams = {lane.name: cuda.Stream(device=self.dev[lane.name]) for lane in lanes}
        self.hold_stream = all(lane.work == "device" for lane in lanes)
        self.spin_cycles = 50_000
        self.enqueue_skew_s = 0.0
        self.enqueue_s = 0.0
        self.hidden = not self.hold_stream
        self.settled = not self.hold_stream
        self.clock = "cuda_event/streams" + ("+spin" if self.hold_stream else "+host_issue")

    def sample_lanes(self) -> tuple[float, dict]:
        rt = runtime()
        cuda = rt.cuda
        ev = lambda: cuda.Event(enable_timing=True)  # noqa: E731
        starts, ends, done = {}, {}, {}
        spin = self.spin_cycles
        t0 = rt.now()
        for d in self.devices:
            with cuda.device(d):
                if self.hold_stream:
                    cuda._sleep(spin)
                starts[d] = ev()
                starts[d].record()
        self.enqueue_skew_s = rt.now() - t0
        def issue(lane: Lane) -> None:
            s = self.streams[lane.name]
            with cuda.device(self.dev[lane.name]):
                s.wait_event(starts[self.dev[lane.name]])
                with cuda.stream(s):
                    lane.fn()
                    end = ev()
                    end.record(s)
                    ends[lane.name] = end

        for lane in self.in_order:
            issue(lane)
        if self.threaded:
            _in_threads(issue, self.threaded)
        if self.hold_stream:
            self.hidden = not any(starts[d].query() for d in self.devices)
        for d in self.devices:
            with cuda.device(d):
                main = cuda.current_stream()
                for lane in self.lanes:
                    if self.dev[lane.name] == d:
                        main.wait_stream(self.streams[lane.name])
                done[d] = ev()
                done[d].record()
        self.enqueue_s = rt.now() - t0
        for d in self.devices:
            done[d].synchronize()
        spans = {n: starts[self.dev[n]].elapsed_time(e) * 1e-3 for n, e in ends.items()}
        total = max(starts[d].elapsed_time(done[d]) * 1e-3 for d in self.devices)
        if self.hold_stream:
            _settle_spin(self, spin, total, f"lanes {[lane.name for lane in self.lanes]}")
        return total, spans

    def unsettled_error(self) -> MeasurementError:
        return _enqueue_not_hidden(self.enqueue_s, self.spin_cycles,
                                   f"lanes {[lane.name for lane in self.lanes]} (all work='device')")

    def sync(self) -> None:
        for d in self.devices:
            runtime().cuda.synchronize(d)


def _in_threads(run: Callable[[Lane], None], lanes: list[Lane],
                released: Optional[Callable[[], object]] = None) -> None:
    """Run ``run(lane)`` for every lane at once, one host thread each, released together by a barrier the caller
    also waits on (``released`` runs in the caller's thread right after the release); waits for all and re-raises
    the first error in the caller's thread."""
    import threading

    barrier = threading.Barrier(len(lanes) + 1)
    errors: list[BaseException] = []

    def work(lane: Lane) -> None:
        barrier.wait()
        try:
            run(lane)
        except BaseException as e:  # surfaced below, in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(lane,), daemon=True, name=f"lane-{lane.name}") for lane in lanes]
    for t in threads:
        t.start()
    barrier.wait()
    if released is not None:
        released()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


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
        name, resolution_s, max_inner = lanes_clock.name, lanes_clock.resolution_s, 1

        @property
        def settled(self):
            return lanes_clock.settled

        @property
        def hidden(self):
            return getattr(lanes_clock, "hidden", True)

        def sample(self, _fn, inner: int) -> float:
            total, s = lanes_clock.sample_lanes()
            spans.append((s, self.hidden))
            return total

        def sync(self) -> None:
            lanes_clock.sync()

        def unsettled_error(self):
            return lanes_clock.unsettled_error()

    work = "+".join(sorted({lane.work for lane in lanes_clock.lanes}))
    total = measure(None, _Recorder(), rule, warmup_s, prepare=prepare, min_sample_s=0.0, inner=1, work=work)
    total.clock = getattr(lanes_clock, "clock", lanes_clock.name)
    timed = [s for s, kept in spans[total.warmup_calls:] if kept]  # the samples measure() kept
    per_lane = {name: summarize([s[name] for s in timed], 1, total.stop_reason, total.converged, total.warmup_calls,
                                total.clock, work)
                for name in timed[0]}
    return LaneStats(total, per_lane)


class Handoff:
    """Step-by-step ordering between lanes: the producer lane calls ``post(i)`` when step i is done, the consumer
    ``wait(i)`` before it needs it. CUDA: an event recorded on the producer's stream, waited on by the consumer's
    stream (the GPU orders them; the producer lane must be queued first, and a wait on a step not yet posted is
    refused, since CUDA would treat it as already complete). CPU: threading.Event. ``reset()`` (untimed, before
    each sample) re-arms it."""

    def __init__(self, steps: int, cuda: bool):
        self.steps, self.cuda = steps, cuda
        self.reset()

    def reset(self) -> None:
        if self.cuda:
            cuda = runtime().cuda
            self.events = [cuda.Event() for _ in range(self.steps)]
            self.posted = [False] * self.steps
        else:
            import threading

            self.events = [threading.Event() for _ in range(self.steps)]

    def post(self, i: int) -> None:
        if self.cuda:
            self.events[i].record()
            self.posted[i] = True
        else:
            self.events[i].set()

    def wait(self, i: int) -> None:
        if self.cuda:
            if not self.posted[i]:
                raise RuntimeError(f"handoff step {i} waited on before it was posted: the producer lane must be "
                                   "queued before the consumer lane")
            runtime().cuda.current_stream().wait_event(self.events[i])
        elif not self.events[i].wait(timeout=120):
            raise RuntimeError(f"handoff step {i} was never posted (the producer lane failed or is not running)")
