"""A simulated CUDA timeline: a test double of the ``torch.cuda`` stream semantics the timing code relies on.

It is installed into bench.harness.timing through the same seam the real ``torch.cuda`` goes through
(:func:`bench.harness.timing.use_runtime`), so CudaClock, HostIssuedClock, CudaLanes and Handoff run their CUDA
branch on a machine without a GPU. It is a test tool: nothing it produces is ever a reported number.

Model:
- Host time is a virtual clock (plus the real perf_counter with ``real_time=True``): CUDA API calls cost
  ``host_cost_s`` each (launches, copies; events ``event_cost_s``), blocking calls (synchronize, a full stream
  queue) move the offset forward to the device time they wait for, and :meth:`host_work` advances it by a known
  duration (real host work, e.g. file I/O in a real benchmark, advances it by itself).
- Each host thread has its own clock (a core each; torch releases the GIL around its ops): a new thread starts at
  the main thread's time, and the main thread's time never runs behind a thread that has run (it joins them).
  The current device and stream are per thread, as in torch.
- Streams are FIFO queues with their own time: an operation starts at max(stream ready, host time at enqueue, its
  engine free) and takes its duration (kernels: seconds or ``_sleep`` cycles / ``sm_hz``; copies: bytes /
  bandwidth per direction on one copy engine per direction, shared by all streams).
- ``Event.record`` is stamped when its stream reaches it; ``query`` compares with host time; ``elapsed_time`` is
  the difference in ms; ``Stream.wait_event`` on an event never recorded is a no-op, as in CUDA.
- A stream holds at most ``queue_depth`` pending operations: one more blocks the host until the oldest finishes.
Every device operation is logged in ``ops`` (stream, tag, start, end) for assertions.
"""
from __future__ import annotations

import bisect
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from bench.harness.timing import Runtime


@dataclass
class Op:
    stream: int
    tag: str
    start: float
    end: float


class SimStream:
    def __init__(self, sim: "SimCuda", device: int):
        self.sim, self.device = sim, device
        self.id = len(sim.streams)
        sim.streams.append(self)
        self.ready = 0.0
        self.ends: list[float] = []  # end times of queued operations (nondecreasing: FIFO)
        self.cuda_stream = 0x1000 + self.id

    def wait_event(self, ev: "SimEvent") -> None:
        self.sim._api(self.sim.event_cost_s)
        if ev.t is not None:
            self.ready = max(self.ready, ev.t)

    def wait_stream(self, other: "SimStream") -> None:
        # torch: record an event on ``other`` now, wait for it here (it completes at max(other's work, now))
        self.sim._api(self.sim.event_cost_s)
        self.ready = max(self.ready, other.ready, self.sim.now())

    def synchronize(self) -> None:
        self.sim._block_until(self.ready)

    def query(self) -> bool:
        return self.sim.now() >= self.ready


class SimEvent:
    def __init__(self, sim: "SimCuda", enable_timing: bool = False):
        self.sim, self.enable_timing, self.t = sim, enable_timing, None

    def record(self, stream: SimStream | None = None) -> None:
        sim = self.sim
        with sim._lock:
            s = stream or sim.current_stream()
            sim._api(sim.event_cost_s)
            self.t = max(s.ready, sim.now())
            sim.events_recorded += 1

    def query(self) -> bool:
        return self.t is not None and self.sim.now() >= self.t

    def synchronize(self) -> None:
        if self.t is not None:
            self.sim._block_until(self.t)

    def elapsed_time(self, end: "SimEvent") -> float:
        if not (self.enable_timing and end.enable_timing):
            raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
        if self.t is None or end.t is None:
            raise RuntimeError("Both events must be recorded before calculating elapsed time.")
        return (end.t - self.t) * 1e3


class SimCuda:
    """Stand-in for ``torch.cuda`` (the subset bench.harness.timing and bench.hw.device use) plus ops for tests."""

    def __init__(self, host_cost_s: float = 5e-6, event_cost_s: float = 1e-6, queue_depth: int = 1000,
                 sm_hz: float = 1.98e9, h2d_gbps: float = 50.0, d2h_gbps: float = 50.0, d2d_gbps: float = 1500.0,
                 copy_latency_s: float = 2e-6, devices: int = 1, mem_free: int = 80 << 30,
                 real_time: bool = False):
        self.host_cost_s, self.event_cost_s, self.queue_depth = host_cost_s, event_cost_s, queue_depth
        self.sm_hz = sm_hz
        self.bw = {"h2d": h2d_gbps * 1e9, "d2h": d2h_gbps * 1e9, "d2d": d2d_gbps * 1e9}
        self.copy_latency_s = copy_latency_s
        self.n_devices, self.mem_free = devices, mem_free
        self.real_time = real_time
        self._lock = threading.RLock()
        self._tls = threading.local()
        self._main_offset = 0.0
        self._workers_max = 0.0
        self._fork = 0.0  # the main thread's time at its last call: where a new thread's clock starts
        self.streams: list[SimStream] = []
        self.engine_free = {"h2d": 0.0, "d2h": 0.0}
        self.ops: list[Op] = []
        self.events_recorded = 0
        self._default = {d: SimStream(self, d) for d in range(devices)}
        self.Event = lambda enable_timing=False, **kw: SimEvent(self, enable_timing)  # noqa: E731

    # -- host clock --------------------------------------------------------------------------------------------
    # per-thread state: host clock offset, current device and streams
    def _thread(self):
        t = self._tls
        if not hasattr(t, "offset"):
            main = threading.current_thread() is threading.main_thread()
            t.offset = self._main_offset if main else self._fork
            t.device = 0
            t.current = dict(self._default)
        return t

    def _main_now_offset(self) -> float:
        return max(self._main_offset, self._workers_max)

    @property
    def offset(self) -> float:
        if threading.current_thread() is threading.main_thread():
            self._fork = self._main_now_offset()
            return self._fork
        return self._thread().offset

    @offset.setter
    def offset(self, value: float) -> None:
        if threading.current_thread() is threading.main_thread():
            self._main_offset = self._fork = value
        else:
            self._thread().offset = value
            self._workers_max = max(self._workers_max, value)

    @property
    def _device(self) -> int:
        return self._thread().device

    @_device.setter
    def _device(self, d: int) -> None:
        self._thread().device = d

    @property
    def _current(self) -> dict:
        return self._thread().current

    def now(self) -> float:
        """Virtual host time of the calling thread; with ``real_time`` the real perf_counter runs under it too (real
        host work such as file I/O then takes its own time), else only what the simulation charges counts (exact,
        repeatable)."""
        return (time.perf_counter() if self.real_time else 0.0) + self.offset

    def now_ns(self) -> int:
        return int(self.now() * 1e9)

    def runtime(self) -> Runtime:
        return Runtime(self, self.now, self.now_ns)

    def host_work(self, seconds: float) -> None:
        """The host is busy for ``seconds`` (virtual): what a file read or a Python loop costs."""
        self.offset += seconds

    def _api(self, cost: float) -> None:
        self.offset += cost

    def _block_until(self, t: float) -> None:
        wait = t - self.now()
        if wait > 0:
            self.offset += wait

    # -- torch.cuda surface ------------------------------------------------------------------------------------
    def is_available(self) -> bool:
        return True

    def device_count(self) -> int:
        return self.n_devices

    def Stream(self, device=None, **kw) -> SimStream:  # noqa: N802 (torch's name)
        return SimStream(self, self._device if device is None else int(device))

    def current_stream(self, device=None) -> SimStream:
        return self._current[self._device if device is None else int(device)]

    def default_stream(self, device=None) -> SimStream:
        return self._default[self._device if device is None else int(device)]

    @contextmanager
    def stream(self, s: SimStream):
        old = self._current[s.device]
        self._current[s.device] = s
        try:
            yield s
        finally:
            self._current[s.device] = old

    @contextmanager
    def device(self, d):
        old, self._device = self._device, int(d)
        try:
            yield
        finally:
            self._device = old

    def synchronize(self, device=None) -> None:
        d = self._device if device is None else int(device)
        self._block_until(max((s.ready for s in self.streams if s.device == d), default=0.0))

    def _sleep(self, cycles: int) -> None:
        self._enqueue(cycles / self.sm_hz, "spin")

    def empty_cache(self) -> None:
        pass

    def mem_get_info(self, device=None):
        return self.mem_free, self.mem_free

    # -- device work for tests -----------------------------------------------------------------------------------
    def kernel(self, seconds: float, tag: str = "kernel") -> None:
        """A kernel of known device time on the current stream."""
        self._enqueue(seconds, tag)

    def copy(self, nbytes: int, kind: str = "h2d", tag: str = "copy") -> None:
        """An async copy on the current stream: latency + bytes / bandwidth, on the direction's copy engine."""
        self._enqueue(self.copy_latency_s + nbytes / self.bw[kind], tag, engine=kind if kind in self.engine_free
                      else None)

    def _enqueue(self, dur: float, tag: str, engine: str | None = None) -> None:
        with self._lock:
            self._enqueue_locked(dur, tag, engine)

    def _enqueue_locked(self, dur: float, tag: str, engine: str | None) -> None:
        s = self.current_stream()
        self._api(self.host_cost_s)
        h = self.now()
        pending = len(s.ends) - bisect.bisect_right(s.ends, h)
        if pending >= self.queue_depth:  # the queue is full: the host waits for the oldest pending op to finish
            self._block_until(s.ends[len(s.ends) - self.queue_depth])
            h = self.now()
        start = max(s.ready, h, self.engine_free.get(engine, 0.0) if engine else 0.0)
        end = start + dur
        if engine:
            self.engine_free[engine] = end
        s.ready = end
        s.ends.append(end)
        self.ops.append(Op(s.id, tag, start, end))

    def ops_tagged(self, prefix: str) -> list[Op]:
        return [o for o in self.ops if o.tag.startswith(prefix)]
