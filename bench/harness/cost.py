"""The vocabulary of a benchmark's cost model: what one point does, in time, on a planning target (its timed
measurements, each the seconds of one call and the clock that times it; the setup around them; the one-off work a
run does once), and the target's rates that price it.

Every benchmark declares its cost model beside its body (``@benchmark(..., cost=...)``, bench.core.registry), in its
family's ``cost`` module; the planner (bench.plan.estimate) turns a model's work into seconds with the harness's own
stopping rule. These are models, not measurements: per-call times come from the target's measured rates (bytes /
GB/s, FLOPs / TFLOP/s, small kernels and Python op issue for layer loops). Compute efficiencies are the fractions of
the GEMM/HBM rate each kind of kernel reached on the H100/H200 this suite ran on (conf/targets: efficiency).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from bench.llm.shapes import DTYPE_BYTES, ModelShape

LAUNCH_US = 10.0  # one copy issued and completed on a GPU: launch + DMA setup
SYNC_US = 15.0  # a host round trip (issue + synchronize)
# a kernel's efficiency where the target does not list it (fractions of its GEMM / copy rate); the measured ones
# are per target: conf/targets/<name>.yaml efficiency (with their source)
DEFAULT_EFF = {"attention_prefill": [0.3, 1700], "attention_decode": 0.3, "layer_flops": 0.65, "layer_bytes": 0.35}
OPS_PER_LAYER = {"gqa": 65, "mla": 85}


@dataclass
class Timed:
    """One measurement a point runs: ``call_s`` per call on ``clock`` (device | host | host_issued | lanes);
    ``prepare_s`` runs untimed before each sample (then each sample is one call); ``key``: a reference timed once
    per run and key; ``samples``: a distribution of single calls (State.distribution: that many, within the time
    budget, no noise stop)."""

    call_s: float
    clock: str
    prepare_s: float = 0.0
    inner: Optional[int] = None
    key: Optional[tuple] = None
    samples: Optional[int] = None
    io_bytes: Optional[int] = None  # file bytes one call reads or writes, where not the Work's io_bytes_per_call


@dataclass
class Work:
    timed: list = field(default_factory=list)
    setup_s: float = 0.0
    once: dict = field(default_factory=dict)  # key -> seconds, paid by the first point of a run that needs it
    io_bytes_per_call: int = 0  # storage: file bytes one timed call reads or writes (the family's bytes budget)
    io_setup_bytes: int = 0


class Ctx:
    """What a cost model sees: the composed config, the point's params (``p``), the target (``t``), the point's needs,
    the benchmark's name and, through ``state``, the benchmark's own planning state (bench.harness.State on the
    target, nothing allocated) for the sizing rules a benchmark and its model share."""

    def __init__(self, cfg, params: dict, target, need, benchmark: str = "",
                 state: Optional[Callable[[], object]] = None):
        self.cfg, self.p, self.t, self.need, self.benchmark = cfg, params, target, need, benchmark
        self.cuda = target.is_cuda
        self.shape = ModelShape.from_cfg(cfg.model)
        self._state, self._made = state, None

    @property
    def state(self):
        """The benchmark's state for this point on the target (made once, on first use)."""
        if self._made is None:
            if self._state is None:
                raise RuntimeError(f"{self.benchmark}: this cost model needs the benchmark's planning state")
            self._made = self._state()
        return self._made

    def with_params(self, **params) -> "Ctx":
        """The same point with ``params`` changed (a model that prices a sibling point, e.g. the replay's baseline)."""
        c = Ctx(self.cfg, {**self.p, **params}, self.t, self.need, self.benchmark, self._state)
        c._made = self._made
        return c

    def compute_elt(self, section: str, key: str = "dtype", cpu_key: str = "cpu_dtype") -> int:
        """Bytes per element of the family's compute dtype (the one rule: bench.llm.numerics.dtype_name)."""
        from bench.llm.numerics import dtype_name

        return DTYPE_BYTES.get(dtype_name(self.cfg, section, self.cuda, key, cpu_key), 2)

    # -- rates ----------------------------------------------------------------------------------------------
    def hbm(self, nbytes: float) -> float:
        return nbytes / (self.t.hbm_gbps * 1e9)

    def link(self, nbytes: float) -> float:
        return nbytes / (self.t.link_gbps * 1e9) + (LAUNCH_US * 1e-6 if self.cuda else 0.0)

    def flops(self, f: float, eff: float = 1.0) -> float:
        return f / (self.t.tflops * 1e12 * eff)

    def ops(self, n: float) -> float:
        return n * self.t.kernel_us * 1e-6

    def eff(self, kind: str, kernel: str = None, tokens: float = 0.0) -> float:
        """The target's measured efficiency of a kind of work (conf/targets efficiency): attention_prefill per
        kernel saturating with the tokens it runs over (e x L / (L + half)), attention_decode per kernel, layers."""
        table = (self.t.efficiency or {}).get(kind, DEFAULT_EFF[kind])
        if kernel is None:
            return float(table)
        v = table.get(kernel, DEFAULT_EFF[kind]) if isinstance(table, dict) else table
        if isinstance(v, (list, tuple)):
            e, half = float(v[0]), float(v[1])
            return e * tokens / (tokens + half) if half else e
        return float(v)

    def host_fill(self, nbytes: float) -> float:
        """Seeded bytes into a host buffer: generated on the GPU and copied over, or by torch's CPU generator."""
        return self.link(nbytes) if self.cuda else nbytes / (self.t.host_fill_gbps * 1e9)

    def dev_fill(self, nbytes: float) -> float:
        return self.hbm(nbytes) if self.cuda else nbytes / (self.t.host_fill_gbps * 1e9)

    def pin(self, nbytes: float) -> float:
        return nbytes / (self.t.pin_gbps * 1e9) if self.cuda else nbytes / (self.t.hbm_gbps * 1e9)

    def compare(self, nbytes: float, on_host: bool) -> float:
        return nbytes / (self.t.host_compare_gbps * 1e9) if (on_host or not self.cuda) else self.hbm(2 * nbytes)


Cost = Callable[[Ctx], Work]  # a benchmark's cost model: what one point does, in time, on the target
MEMCPY_ISSUE_SHARE = 0.7  # a cudaMemcpyAsync costs the host ~0.7 of an aten op's issue (issue_us), measured on H100
CUPY_COMPILE_S = 2.0  # NVRTC compile and load of one kernels/*.cu file, first use in a process
COMPUTE_INIT_S = {"cuda": 4.0, "cpu": 1.5}  # the first compute point loads cuBLAS/cuDNN/SDPA's libraries
NUMERICS_CHECK_S = {"cuda": 0.3, "cpu": 0.05}  # one kernel checked against float64 on small shapes, once per run


# -- one-off and shared work -------------------------------------------------------------------------------------
def l2_flush_s(c: Ctx) -> float:
    """The untimed L2 flush before an L2-cold sample: a read of twice the L2 and a synchronize."""
    return c.hbm(2 * c.t.l2_bytes) + SYNC_US * 1e-6 if (c.cuda and c.cfg.harness.l2_flush) else 0.0


def compute_init(c: Ctx) -> dict:
    """The first compute point of a run loads the kernels' libraries (cuBLAS, cuDNN, SDPA backends): once per run."""
    return {("compute_init",): COMPUTE_INIT_S["cuda" if c.cuda else "cpu"]}


def ceilings_s(c: Ctx) -> float:
    """The roofline's GEMM and copy ceilings, timed once per run by the first compute point."""
    if c.cuda:
        return 2 * (c.cfg.harness.warmup_s + 0.05) + c.flops(2.0 * 8192 ** 3) * 10 + c.hbm(2 << 30) * 10 + 0.3
    return 2 * (c.cfg.harness.warmup_s + 0.05) + c.flops(2.0 * 1024 ** 3) * 10 + c.hbm(64 << 20) * 10


def numerics_check_s(c: Ctx) -> float:
    return NUMERICS_CHECK_S["cuda" if c.cuda else "cpu"]
