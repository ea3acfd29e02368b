"""What a benchmark function sees for one point (:class:`State`): its params, device and config, the declarations
it makes (bytes, FLOPs, items, peaks, notes), and the timers it hands its calls to; what outlives a point inside a
run (:class:`RunContext`); and the memory budgets a point is held to.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

from bench.core.errors import Skip
from bench.core.units import bytes_binary
from bench.harness.timing import (Lane, LaneStats, MeasurementError, StoppingRule, Stats, check_work, clock_for,
                                  lanes_for, measure, measure_lanes)
from bench.hw.device import Device, L2Flusher
from bench.hw.nvml import ClockSampler


class VerificationError(Exception):
    """A transfer or result failed its check: recorded as status=error, never as a number."""


@dataclass(frozen=True)
class Need:
    """What one point holds at once: device bytes (GPU memory; host memory on the CPU), pinned/host bytes, and
    bytes of files it creates or reads; ``what`` names the buffers."""

    device_bytes: int = 0
    host_bytes: int = 0
    file_bytes: int = 0
    what: str = ""

    def as_dict(self) -> dict:
        return {"device_bytes": self.device_bytes, "host_bytes": self.host_bytes, "file_bytes": self.file_bytes,
                "what": self.what}


def need(device_bytes: int = 0, what: str = "buffers", host_bytes: int = 0, file_bytes: int = 0) -> Need:
    """What a benchmark's ``needs`` declares: device bytes (GPU memory; host memory on the CPU), host (pinned)
    bytes, and the bytes of the files it works on (their space is checked where they are created)."""
    return Need(int(device_bytes), int(host_bytes), int(file_bytes), what)


def fit_problem(nd: Need, cuda: bool, device_budget: int, host_budget: Optional[int], device_what: str,
                host_what: str) -> Optional[str]:
    """The one memory-fit rule (a run's point and the planner alike): None when ``nd`` fits, else why not. On a GPU
    the device bytes against ``device_budget`` and the host bytes against ``host_budget`` (None: unknown, not
    checked); on the CPU both live in host memory and their sum must fit ``device_budget``. ``*_what`` say what
    each budget is."""
    if not cuda:
        total = nd.device_bytes + nd.host_bytes
        return None if total <= device_budget else f"{nd.what} need {bytes_binary(total)} > " \
                                                    f"{bytes_binary(device_budget)} allowed by {device_what}"
    if nd.device_bytes > device_budget:
        return (f"{nd.what} need {bytes_binary(nd.device_bytes)} of GPU memory > {bytes_binary(device_budget)} allowed "
                f"by {device_what}")
    if nd.host_bytes and host_budget is not None and nd.host_bytes > host_budget:
        return (f"{nd.what} need {bytes_binary(nd.host_bytes)} of host memory > {bytes_binary(host_budget)} allowed by "
                f"{host_what}")
    return None


class RunContext:
    """What outlives one point inside a run: reference timings, shared resources (pattern files, open files) and
    their cleanups, which run at the end of the run whatever ends it (normal end, error, Ctrl-C, SIGTERM)."""

    def __init__(self, records_path=None):
        self.refs: dict = {}
        self.resources: dict = {}
        self.cleanups: list = []
        self.records_path = records_path  # this run's records so far (benchmarks that build on earlier points)
        self.helpers: set = set()  # processes a benchmark started for its measurement (pids on this node): their
        # CPU and GPU use is the run's own, not contention (bench.hw.contention)

    def close(self) -> None:
        while self.cleanups:
            fn = self.cleanups.pop()
            try:
                fn()
            except Exception:
                pass
        self.resources.clear()


class State:
    """What a benchmark function sees for one point: its params, the device, the config, and the timer."""

    def __init__(self, bench, params: dict, device: Device, cfg, rule: StoppingRule, warmup_s: float,
                 l2: Optional[L2Flusher], mem_budget_bytes: int, hardware: Optional[dict] = None,
                 ctx: Optional[RunContext] = None, sampler: Optional[ClockSampler] = None, planning: bool = False):
        self.bench = bench
        self.planning = planning  # bench run --plan: the point's needs are read, the benchmark never runs
        self.need: Optional[Need] = None
        self.sampler = sampler or ClockSampler(device, enabled=False)
        self.ctx = ctx or RunContext()
        self.hardware = hardware or {}
        self.gpu = self.hardware.get("gpu") or {}  # fingerprint of the GPU ({} on CPU): peaks, PCIe link, L2
        self.params = params
        self.device = device
        self.cfg = cfg
        self.rule = rule
        self.warmup_s = warmup_s
        self.l2 = l2
        self.mem_budget_bytes = mem_budget_bytes
        self.stats: Optional[Stats] = None
        self.metrics: dict = {}
        self.bytes = 0
        self.flops = 0
        self.items: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.verified: Optional[bool] = None
        self.l2_flushed = False
        self.notes: dict = {}

    # -- declarations -------------------------------------------------------------------------------------
    def skip(self, reason: str) -> "NoReturn":  # noqa: F821
        raise Skip(reason)

    def require(self, nd: Need) -> None:
        """Hold the point to its declared needs (the harness calls it with the benchmark's ``needs`` before the
        benchmark runs): skip it unless the device bytes and host bytes fit their budgets: free GPU memory x
        harness.gpu_mem_fraction and available host memory x harness.host_mem_fraction; on the CPU both live in
        host memory and their sum must fit harness.cpu_max_bytes (bench.harness.state.fit_problem)."""
        self.need = nd
        why = fit_problem(nd, self.device.is_cuda, self.mem_budget_bytes,
                          host_budget_bytes(self.cfg) if nd.host_bytes else None,
                          "free GPU memory x harness.gpu_mem_fraction" if self.device.is_cuda else
                          "harness.cpu_max_bytes", "MemAvailable x harness.host_mem_fraction")
        if why:
            self.skip(why)

    def add_bytes(self, nbytes: int) -> None:
        """Bytes one call moves; gives ``gbps`` (1e9 bytes/s) from the median time."""
        self.bytes += int(nbytes)

    def add_flops(self, flops: float) -> None:
        """Floating-point operations of one call; gives ``tflops`` (1e12/s)."""
        self.flops += float(flops)

    def add_items(self, name: str, count: float) -> None:
        """Items per call (tokens, blocks, requests); gives ``<name>_per_s``."""
        self.items[name] = self.items.get(name, 0.0) + float(count)

    def set_peak(self, kind: str, value: float) -> None:
        """Theoretical ceiling of what this point is bounded by ('gbps' or 'tflops'); a result above it is flagged."""
        if value:
            self.peaks[kind] = float(value)

    def set_metric(self, name: str, value) -> None:
        self.metrics[name] = value

    def note(self, **kv) -> None:
        """Facts about how the point ran (backend used, fallbacks), recorded under ``info``."""
        self.notes.update(kv)

    def verify(self, ok: bool, detail: str = "") -> None:
        """Record a correctness check done outside the timed region; failing it fails the point loudly."""
        if not ok:
            self.verified = False
            raise VerificationError(detail or "verification failed")
        self.verified = True if self.verified is None else self.verified

    # -- timing ----------------------------------------------------------------------------------------------
    def exec(self, fn: Callable[[], object], *, work: str, prepare: Optional[Callable[[], object]] = None,
             flush_l2: bool = False, inner: Optional[int] = None) -> Stats:
        """Time ``fn`` (one call = what was declared). ``work`` says what the call is, and so which clock times
        it: 'device' (CUDA events behind a stream-hold spin), 'host' (perf_counter: file I/O, host memcpy) or
        'host_issued' (perf_counter around the issue + a final synchronize: thousands of small copies, calls
        that block the host); see bench.harness.timing. ``prepare`` runs untimed before each sample; ``flush_l2``
        evicts the GPU L2 before each sample when harness.l2_flush is on; ``inner`` fixes calls per sample."""
        self.stats = self._measure(fn, work, prepare, flush_l2, inner)
        return self.stats

    def exec_lanes(self, lanes: list[Lane], *, prepare: Optional[Callable[[], object]] = None) -> LaneStats:
        """Time ``lanes`` running at once (one CUDA stream or host thread each; each lane declares its work);
        the point's own timing is the total, each lane's span is in the returned :class:`LaneStats`."""
        res = self._measure_lanes(lanes, prepare)
        self.stats = res.total
        return res

    def reference(self, key, fn: Callable[[], object], *, work: str, prepare=None, flush_l2: bool = False,
                  inner: Optional[int] = None) -> Stats:
        """Time a reference operation (e.g. the contiguous copy a paged method is compared with) once per run
        and ``key``; same rules as :meth:`exec`, but not this point's own timing."""
        if key not in self.ctx.refs:
            self.ctx.refs[key] = self._measure(fn, work, prepare, flush_l2, inner)
        return self.ctx.refs[key]

    def distribution(self, fn: Callable[[], object], *, work: str, samples: int) -> Stats:
        """The spread of one call's time: up to ``samples`` single calls of ``fn`` (warm-up excluded), each its own
        sample, within harness.time_budget_s (at least 3); for per-call latency percentiles (p50/p99 from
        ``samples_s``). Same clocks as :meth:`exec`; not this point's own timing."""
        rule = StoppingRule(min_samples=int(samples), max_samples=int(samples), noise_target=0.0,
                            time_budget_s=float(self.rule.time_budget_s))
        check_work(work)
        with self.sampler.region():
            return measure(fn, clock_for(work, self.device), rule, self.warmup_s, inner=1, work=work)

    def time_shared(self, key, fn: Callable[[], object], *, work: str, prepare=None, flush_l2: bool = False,
                    inner: Optional[int] = None) -> Stats:
        """Time ``fn`` once per run and ``key`` (as :meth:`reference`) where several points measure the same call
        (a kernel's own row and the row that chooses the fastest kernel): the second point reuses the timing
        instead of measuring the same work again. Make it the point's own with :meth:`adopt`."""
        if key not in self.ctx.refs:
            self.ctx.refs[key] = self._measure(fn, work, prepare, flush_l2, inner)
        elif flush_l2 and self.l2 is not None and self.l2.active:
            self.l2_flushed = True
        return self.ctx.refs[key]

    def adopt(self, stats: Stats) -> Stats:
        """Make ``stats`` (from :meth:`time_shared`) this point's own timing."""
        self.stats = stats
        return stats

    def reference_lanes(self, key, lanes: list[Lane], *, prepare=None) -> LaneStats:
        """:meth:`exec_lanes` for a reference (e.g. a copy alone, to compare with the copy under load); once per
        run and ``key``."""
        if key not in self.ctx.refs:
            self.ctx.refs[key] = self._measure_lanes(lanes, prepare)
        return self.ctx.refs[key]

    def _measure_lanes(self, lanes, prepare) -> LaneStats:
        clock = lanes_for(lanes, self.device)
        with self.sampler.region():
            res = measure_lanes(clock, self.rule, self.warmup_s, prepare=prepare)
        if len(getattr(clock, "devices", ())) > 1:  # lanes on several GPUs start within this of each other
            self.notes["lanes_enqueue_skew_s"] = clock.enqueue_skew_s
        return res

    def issue_on_node(self, node: Optional[int]):
        """A context binding the calling thread (the one issuing the timed copies, and the threads it starts) to
        the CPUs of NUMA ``node`` (the GPU's: its host buffers are placed there too) for the body; the record says
        which node (``issue_numa_node``) or why it was not bound. No-op for None."""
        from contextlib import contextmanager

        from bench.hw.hostmem import on_numa_node

        @contextmanager
        def bound():
            with on_numa_node(node) as used:
                if node is not None:
                    self.notes["issue_numa_node"] = used
                yield used
        return bound()

    def run_resource(self, key, create: Callable[[], object], cleanup: Optional[Callable[[object], object]] = None):
        """A resource shared by the points of a run (created once per ``key``; ``cleanup`` runs at run end)."""
        if key not in self.ctx.resources:
            obj = create()
            self.ctx.resources[key] = obj
            if cleanup is not None:
                self.ctx.cleanups.append(lambda: cleanup(obj))
        return self.ctx.resources[key]

    def _measure(self, fn, work: str, prepare, flush_l2: bool, inner: Optional[int]) -> Stats:
        check_work(work)
        flush = self.l2 if (flush_l2 and self.l2 is not None and self.l2.active) else None
        steps = [p for p in (prepare, flush) if p is not None]
        if flush is not None:
            self.l2_flushed = True
        pre = None if not steps else (steps[0] if len(steps) == 1 else (lambda: [s() for s in steps]))
        with self.sampler.region():
            return measure(fn, clock_for(work, self.device), self.rule, self.warmup_s, prepare=pre, inner=inner,
                           work=work)

    def derived(self) -> dict:
        out = {}
        if self.stats is None:
            return out
        t = self.stats.median_s
        if not (t > 0 and math.isfinite(t)):
            raise MeasurementError(f"median time {t!r} s per call ({self.stats.clock}, n={self.stats.n}): the clock "
                                   "could not resolve the call, so no rate can be derived from it")
        if self.bytes:
            out["bytes"] = self.bytes
            out["gbps"] = self.bytes / t / 1e9
            out["gbps_best"] = self.bytes / self.stats.min_s / 1e9
        if self.flops:
            out["flops"] = self.flops
            out["tflops"] = self.flops / t / 1e12
        for name, count in self.items.items():
            out[name] = count
            out[f"{name}_per_s"] = count / t
        return out


def host_budget_bytes(cfg) -> Optional[int]:
    """Host memory a point may take for its host buffers: MemAvailable x harness.host_mem_fraction (None when
    /proc/meminfo cannot be read)."""
    from bench.hw.fingerprint import _meminfo_available

    avail = _meminfo_available()
    return None if avail is None else int(avail * float(cfg.harness.host_mem_fraction))


def memory_budget(device: Device, hcfg) -> int:
    if device.is_cuda:
        return int(device.mem_free() * float(hcfg.gpu_mem_fraction))
    return int(hcfg.cpu_max_bytes)
