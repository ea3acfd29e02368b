"""The harness: runs each benchmark point with warm-up, timing, stopping, clock sampling and failure isolation.

A benchmark function receives a :class:`State`; it allocates and prepares its buffers, declares what one call
moves (``add_bytes``) or computes (``add_flops``), hands the call to ``state.exec`` and verifies the result.
Everything about timing, stopping, records and failures belongs here.
"""
from __future__ import annotations

import math
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from bench.hw.device import Device, L2Flusher
from bench.errors import Skip
from bench.hw.nvml import ClockSampler
from bench.harness.timing import (Lane, LaneStats, MeasurementError, StoppingRule, Stats, check_work, measure,
                          measure_lanes)


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


class Planned(Exception):
    """Raised by :meth:`State.require_bytes` when planning (``bench run --plan``): the point's needs are known and
    nothing has been allocated; the planner stops the benchmark there."""

    def __init__(self, need: Need):
        super().__init__(need.what)
        self.need = need


class RunContext:
    """What outlives one point inside a run: reference timings, shared resources (pattern files, open files) and
    their cleanups, which run at the end of the run whatever ends it (normal end, error, Ctrl-C, SIGTERM)."""

    def __init__(self, records_path=None):
        self.refs: dict = {}
        self.resources: dict = {}
        self.cleanups: list = []
        self.records_path = records_path  # this run's records so far (benchmarks that build on earlier points)

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
        self.planning = planning  # bench run --plan: require_bytes raises Planned before anything is allocated
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

    def require_bytes(self, nbytes: int, what: str = "buffers", host_bytes: int = 0, file_bytes: int = 0) -> None:
        """Declare everything the point holds at once, before it allocates anything (one call per point: the
        planner, ``bench run --plan``, reads the point's needs from this very call and stops the benchmark here).
        Skip the point unless ``nbytes`` of device memory and ``host_bytes`` of host memory (pinned buffers, host
        copies) fit their budgets: free GPU memory x harness.gpu_mem_fraction and available host memory x
        harness.host_mem_fraction; on the CPU both live in host memory and their sum must fit
        harness.cpu_max_bytes. ``file_bytes``: the files the point works on (their space is checked where they are
        created)."""
        self.need = Need(int(nbytes), int(host_bytes), int(file_bytes), what)
        if self.planning:
            raise Planned(self.need)
        if not self.device.is_cuda:
            total = int(nbytes) + int(host_bytes)
            if total > self.mem_budget_bytes:
                self.skip(f"{what} need {total} bytes > {self.mem_budget_bytes} allowed by harness.cpu_max_bytes")
            return
        if nbytes > self.mem_budget_bytes:
            self.skip(f"{what} need {nbytes} bytes of GPU memory > {self.mem_budget_bytes} allowed by free GPU "
                      "memory x harness.gpu_mem_fraction")
        if host_bytes:
            budget = host_budget_bytes(self.cfg)
            if budget is not None and host_bytes > budget:
                self.skip(f"{what} need {host_bytes} bytes of host memory > {budget} allowed by MemAvailable x "
                          "harness.host_mem_fraction")

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
        clock = self.device.lanes(lanes)
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
            return measure(fn, self.device.clock(work), self.rule, self.warmup_s, prepare=pre, inner=inner,
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


def progress_bar(enabled: bool):
    if not enabled:
        return nullcontext(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[point]}"), transient=False,
                    console=Console(stderr=True))


def run_suite(benches, cfg, device: Device, store, repro_prefix: str = "python -m bench run",
              hardware: Optional[dict] = None, budgets=None) -> dict:
    """Run every point of every benchmark, appending one record per point to ``store``. Returns counts.

    Each point is planned first (bench.plan: its needs and estimated seconds on this machine's target); a point
    that would take its family past ``<family>.budget_s`` (time used so far + its estimate) or the storage family
    past ``storage.budget_bytes`` is recorded as skipped with that reason instead of run. ``budgets``
    (bench.plan.Budgets) keeps planned vs actual time per family for the manifest."""
    from bench.plan import Budgets, estimate, point_needs
    from bench.plan.targets import for_cfg

    h = cfg.harness
    rule = StoppingRule(h.min_samples, h.max_samples, h.noise_target, h.time_budget_s)
    sampler = ClockSampler(device)
    l2 = L2Flusher(device) if h.l2_flush and device.is_cuda else None
    plan = [(b, p) for b in benches for p in b.points(cfg)]
    counts = {"ok": 0, "skipped": 0, "error": 0}
    ctx = RunContext(getattr(store, "records_path", None))
    budgets = budgets if budgets is not None else Budgets(cfg)
    target = for_cfg(cfg, cuda_available=device.is_cuda)
    seen: set = set()
    from bench.hw.contention import between, snapshot

    gpu = device.index if device.is_cuda else None
    with progress_bar(bool(h.progress)) as prog, _closing(ctx), _cpu_threads(device, h.get("cpu_threads")):
        task = prog.add_task("tierbench", total=len(plan), point="") if prog else None
        for bench, params in plan:
            if prog:
                prog.update(task, description=bench.name, point=_short(params))
            trial = set(seen)  # once-per-run work (checks, ceilings, pattern files) the estimate counted
            est = _planned(bench, params, cfg, target, trial, point_needs, estimate)
            over = budgets.check(bench.family, est) if (est is not None and "skip" not in est.parts) else None
            budgets.plan(bench.family, est.total_s if est is not None else 0.0)
            if not over:
                seen |= trial
            if over:
                body = {"status": "skipped", "reason": over, "metrics": {}, "verified": None, "info": {},
                        "wall_s": 0.0}
            else:
                before = snapshot(gpu)
                body = run_point(bench, params, cfg, device, rule, float(h.warmup_s), l2,
                                 memory_budget(device, h), sampler, hardware, ctx)
                body["contention"] = between(before, snapshot(gpu))
                budgets.contend(bench.family, body["contention"])
            body["planned_s"] = None if est is None else round(est.total_s, 4)
            budgets.spend(bench.family, body["wall_s"], io_bytes(body, est))
            counts[body["status"]] = counts.get(body["status"], 0) + 1
            store.append({"benchmark": bench.name, "family": bench.family, "params": params,
                          "device": device.kind, **body,
                          "repro": f"{repro_prefix} benchmark={bench.family} only={bench.name}"})
            if prog:
                prog.advance(task)
    return counts


def _planned(bench, params, cfg, target, seen: set, point_needs, estimate):
    """The point's estimate on this machine (None when the plan cannot price it: it then runs unbudgeted)."""
    from bench.plan import SKIP_S, Estimate

    try:
        need, skip = point_needs(bench, params, cfg, target)
        if skip is not None:  # it will skip before allocating: never held back by a budget
            return Estimate(target.point_overhead_s * SKIP_S, parts={"skip": skip})
        return estimate(bench, params, cfg, target, need, seen)
    except Exception:  # planning is advice: a point the planner cannot price still runs
        return None


def io_bytes(body: dict, est) -> int:
    """File bytes a storage point read + wrote: bytes per timed call x calls (warm-up + samples), plus one pass of
    verification; the estimate when the point did not finish."""
    m = body.get("metrics") or {}
    if body.get("status") == "ok" and m.get("bytes") and m.get("n"):
        calls = int(m["n"]) * int(m.get("inner", 1)) + int(m.get("warmup_calls", 0)) + 1
        return int(m["bytes"]) * calls
    return int(getattr(est, "io_bytes", 0) or 0) if body.get("wall_s") else 0


class _cpu_threads:
    """On the CPU, torch's intra-op threads pinned to harness.cpu_threads while the points run (as
    torch.utils.benchmark times with one thread by default); restored after."""

    def __init__(self, device: Device, threads):
        self.n = None if (device.is_cuda or not threads) else int(threads)

    def __enter__(self):
        if self.n:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.n:
            torch.set_num_threads(self.old)
        return False


class _closing:
    def __init__(self, ctx: RunContext):
        self.ctx = ctx

    def __enter__(self):
        return self.ctx

    def __exit__(self, *exc):
        self.ctx.close()
        return False


def _short(params: dict) -> str:
    return " ".join(f"{v}" for v in params.values())[:48]
