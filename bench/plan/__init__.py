"""The planner (``python -m bench run --plan``): every point of a run, what it holds, whether it fits the target,
and its estimated time, before anything is allocated; and the family budgets a run keeps.

Bytes are the benchmark's own: each benchmark declares what a point holds (``needs``, bench.core.registry), the
harness checks it before the point runs and the planner reads it without running the benchmark. Times come from
each benchmark's cost model (declared with it, in its family's ``cost`` module: what a call costs on the target),
turned into seconds by the harness's own stopping rule (:func:`measure_s`): warm-up, calibration, min_samples /
noise target / time budget / max_samples.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

import torch

from bench.core.errors import Skip
from bench.core.units import bytes_binary
from bench.harness.cost import Ctx, Timed
from bench.plan.targets import Target



class PlanDevice:
    """The target as the benchmarks see it while planning: kind and index, and a 'meta' torch device (a tensor
    made by a needs function would allocate nothing). ``packages_known``: the target is this machine, so a point
    that needs a package this machine lacks is skipped; a preset (``plan.gpu``) plans another machine, whose
    packages this one cannot see: such a point is planned as run (its time counted, never hidden)."""

    def __init__(self, target: Target, index: int = 0):
        self.target, self.kind, self.index = target, ("cuda" if target.is_cuda else "cpu"), index
        self.packages_known = target.local

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    @property
    def torch(self):
        return torch.device("meta")

    def l2_bytes(self):
        return self.target.l2_bytes or None

    def synchronize(self) -> None:
        pass

    def release(self) -> None:
        pass


@dataclass
class PlannedPoint:
    benchmark: str
    family: str
    params: dict
    status: str  # run | skip | no_fit | over_budget
    reason: str = ""
    device_bytes: int = 0
    host_bytes: int = 0
    file_bytes: int = 0
    what: str = ""
    est_s: float = 0.0
    io_bytes: int = 0  # storage: file bytes read + written

    def row(self) -> dict:
        d = asdict(self)
        d["params"] = " ".join(f"{k}={v}" for k, v in self.params.items())
        return d


def gpu_budget_bytes(cfg, target: Target) -> int:
    """Device bytes a point may hold: free memory (total less ~1 GiB of CUDA context) x harness.gpu_mem_fraction;
    on the CPU, harness.cpu_max_bytes."""
    if not target.is_cuda:
        return int(cfg.harness.cpu_max_bytes)
    return int(max(0, target.memory_bytes - (1 << 30)) * float(cfg.harness.gpu_mem_fraction))


def host_budget_bytes(cfg, target: Target) -> Optional[int]:
    if not target.host_memory_bytes:
        from bench.harness import host_budget_bytes as local

        return local(cfg)
    return int(target.host_memory_bytes * float(cfg.harness.host_mem_fraction))


SKIP_S = 0.9  # a point skipped before it allocates costs about this share of the target's point overhead


def point_needs(bench, params: dict, cfg, target: Target):
    """What a point of ``bench`` needs on the target, read from its declared ``needs`` (the benchmark itself never
    runs, nothing is allocated): (Need or None, skip reason or None)."""
    from bench.harness.point import point_need

    state = _state_for(bench, params, cfg, target)
    try:
        reason = bench.supports(state.device)
        if reason:
            return None, reason
        return point_need(bench, state), None
    except Skip as e:
        return None, str(e)
    except Exception as e:  # a benchmark that cannot be planned says so in the plan, never a traceback
        return None, f"cannot plan: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def fits(nd, cfg, target: Target) -> Optional[str]:
    """None when ``nd`` fits the target's budgets, else why not (the harness's own rule: fit_problem)."""
    from bench.harness import fit_problem

    return fit_problem(nd, target.is_cuda, gpu_budget_bytes(cfg, target), host_budget_bytes(cfg, target),
                       f"{target.name}: {bytes_binary(target.memory_bytes)} less 1 GiB x harness.gpu_mem_fraction"
                       if target.is_cuda else "harness.cpu_max_bytes", "the target's host memory x "
                       "harness.host_mem_fraction")


# -- time --------------------------------------------------------------------------------------------------------
SAMPLE_OVERHEAD_S = {"device": 60e-6, "host": 2e-6, "host_issued": 30e-6, "lanes": 150e-6}
# CPU lanes: host threads started, released and joined each sample (5-14 ms on 2 cores)
CPU_SAMPLE_OVERHEAD_S = {"lanes": 5e-3}


def _clock_limits(clock: str, cuda: bool) -> tuple[float, int]:
    """(resolution_s, max_inner) of the clock the harness would pick (the timing module's own constants)."""
    from bench.harness.timing import CudaClock, HostClock, HostIssuedClock

    if clock == "lanes":
        return 0.0, 1
    if not cuda or clock == "host":
        return HostClock.resolution_s, HostClock.max_inner
    if clock == "host_issued":
        return HostIssuedClock.resolution_s, HostIssuedClock.max_inner
    return CudaClock.resolution_s, CudaClock.max_inner


def measure_s(t: Timed, cfg, target: Target) -> tuple[float, int]:
    """Seconds :func:`bench.harness.timing.measure` spends on ``t`` (warm-up, calibration, sampling until the
    noise target, the time budget or max_samples) and the calls it makes. Sampling stops at the noise target
    after min_samples for ``target.converge_share`` of points and runs to the time budget for the rest."""
    h = cfg.harness
    res, max_inner = _clock_limits(t.clock, target.is_cuda)
    call = max(t.call_s, 1e-7)
    over = SAMPLE_OVERHEAD_S.get(t.clock, 2e-6) if target.is_cuda else CPU_SAMPLE_OVERHEAD_S.get(t.clock, 2e-6)
    if t.inner is not None:
        inner = t.inner
    elif t.prepare_s or t.clock == "lanes":
        inner = 1
    else:
        inner = max(1, min(max_inner, math.ceil(10 * res / call)))
    per = inner * call + t.prepare_s + over
    one = call + t.prepare_s + over
    warm_calls = max(2, math.ceil(float(h.warmup_s) / one))
    warm = warm_calls * one
    calib = per * (2 if (target.is_cuda and t.clock == "device") else 1)
    conv = h.min_samples * per
    budget = min(max(float(h.time_budget_s), min(int(h.min_samples), 3) * per) + per / 2, h.max_samples * per)
    share = target.converge_share
    sampling = share * min(conv, budget) + (1 - share) * budget
    if t.samples is not None:  # a distribution: its own count, cut by the time budget, never by the noise
        sampling = min(t.samples * per, max(float(h.time_budget_s), 3 * per) + per / 2)
    calls = warm_calls + inner * (1 + round(sampling / per))
    return warm + calib + sampling, calls


@dataclass
class Estimate:
    total_s: float
    io_bytes: int = 0
    parts: dict = field(default_factory=dict)


def estimate(bench, params: dict, cfg, target: Target, need, seen: set) -> Estimate:
    """Estimated seconds of one point (``seen``: the once-per-run keys earlier points already paid; updated): the
    benchmark's own cost model (declared with it: bench.core.registry) turned into seconds by the harness's
    stopping rule."""
    c = Ctx(cfg, params, target, need, bench.name, state=lambda: _state_for(bench, params, cfg, target))
    w = bench.cost(c)
    timed_s, io = 0.0, w.io_setup_bytes
    for t in w.timed:
        if t.key is not None:
            if t.key in seen:
                continue
            seen.add(t.key)
        s, calls = measure_s(t, cfg, target)
        timed_s += s
        io += calls * (w.io_bytes_per_call if t.io_bytes is None else t.io_bytes)
    once_s = 0.0
    for key, s in w.once.items():
        if key not in seen:
            seen.add(key)
            once_s += s
            if key[0] == "pattern_file":
                io += key[1]
    total = target.point_overhead_s + w.setup_s + timed_s + once_s
    return Estimate(total, io, {"setup_s": w.setup_s, "timed_s": timed_s, "once_s": once_s})


def _state_for(bench, params, cfg, target):
    from bench.harness import RunContext, State
    from bench.harness.timing import StoppingRule

    return State(bench, dict(params), PlanDevice(target), cfg, StoppingRule(), 0.0, None,
                 gpu_budget_bytes(cfg, target), target.hardware(), RunContext(), planning=True)


# -- budgets -----------------------------------------------------------------------------------------------------
def family_budget_s(cfg, family: str) -> Optional[float]:
    sec = cfg.get(family)
    v = sec.get("budget_s") if sec is not None else None
    return None if v is None else float(v)


def family_budget_bytes(cfg, family: str) -> Optional[int]:
    """``<family>.budget_bytes`` (file bytes read + written) of a family that declares one (Family.budget_bytes)."""
    from bench.core.family import FAMILIES

    f = FAMILIES.get(family)
    sec = cfg.get(family) if (f is not None and f.budget_bytes) else None
    v = sec.get("budget_bytes") if sec is not None else None
    return None if v is None else int(v)


class Budgets:
    """A run's family budgets as it goes: a point that would take its family past ``<family>.budget_s`` (time used
    so far + the point's estimate), or the storage family past ``storage.budget_bytes`` (file bytes read +
    written), is skipped with that reason. The same rule prices the plan (with estimates) and the run (with the
    time and bytes actually used)."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.used_s: dict = {}
        self.used_io: dict = {}
        self.planned_s: dict = {}
        self.skipped: dict = {}
        self.contention: dict = {}

    def contend(self, family: str, c: dict) -> None:
        """Fold one point's contention reading into its family's (max of other processes' cores and steal)."""
        f = self.contention.setdefault(family, {"points": 0, "contended_points": 0, "other_processes_cores_max": 0.0,
                                                "steal_share_max": 0.0, "reasons": []})
        f["points"] += 1
        f["contended_points"] += int(bool(c.get("contended")))
        f["other_processes_cores_max"] = max(f["other_processes_cores_max"], c.get("other_processes_cores") or 0.0)
        f["steal_share_max"] = max(f["steal_share_max"], c.get("steal_share") or 0.0)
        for r in c.get("reasons") or []:
            kind = r.split(" used ")[0] if " used " in r else r.split(" of ")[-1]
            if all(kind not in x for x in f["reasons"]):
                f["reasons"].append(r)

    def plan(self, family: str, seconds: float) -> None:
        self.planned_s[family] = self.planned_s.get(family, 0.0) + seconds

    def check(self, family: str, est: Estimate) -> Optional[str]:
        b = family_budget_s(self.cfg, family)
        used = self.used_s.get(family, 0.0)
        if b is not None and used + est.total_s > b:
            self.skipped[family] = self.skipped.get(family, 0) + 1
            return (f"family budget: {family}.budget_s={b:g} s, {used:.1f} s used, this point is estimated at "
                    f"{est.total_s:.1f} s")
        bb = family_budget_bytes(self.cfg, family)
        io = self.used_io.get(family, 0)
        if bb is not None and est.io_bytes and io + est.io_bytes > bb:
            self.skipped[family] = self.skipped.get(family, 0) + 1
            return (f"{family} bytes budget: {family}.budget_bytes={bb} ({bytes_binary(bb)}), {bytes_binary(io)} read "
                    f"+ written so far, this point would move ~{bytes_binary(est.io_bytes)}")
        return None

    def spend(self, family: str, seconds: float, io_bytes: int = 0) -> None:
        self.used_s[family] = self.used_s.get(family, 0.0) + seconds
        self.used_io[family] = self.used_io.get(family, 0) + int(io_bytes)

    def summary(self) -> dict:
        fams = list(dict.fromkeys(list(self.planned_s) + list(self.used_s)))
        out = {}
        for f in fams:
            out[f] = {"planned_s": round(self.planned_s.get(f, 0.0), 3), "actual_s": round(self.used_s.get(f, 0.0), 3),
                      "budget_s": family_budget_s(self.cfg, f), "skipped_for_budget": self.skipped.get(f, 0)}
            if family_budget_bytes(self.cfg, f) is not None or self.used_io.get(f):
                out[f]["io_bytes"] = self.used_io.get(f, 0)
                out[f]["budget_bytes"] = family_budget_bytes(self.cfg, f)
            if f in self.contention:
                out[f]["contention"] = self.contention[f]
        return out


# -- the plan of a whole run -------------------------------------------------------------------------------------
@dataclass
class Plan:
    target: Target
    points: list
    families: dict
    total_s: float

    def as_dict(self) -> dict:
        t = asdict(self.target)
        return {"target": t, "total_s": round(self.total_s, 3), "families": self.families,
                "points": [p.row() for p in self.points]}


def plan_run(cfg, target: Target) -> Plan:
    """Every point of the run ``cfg`` describes, in run order, on ``target``."""
    from bench.benchmarks import select

    budgets = Budgets(cfg)
    seen: set = set()
    points = []
    for bench in select(cfg):
        for params in bench.points(cfg):
            points.append(plan_point(bench, params, cfg, target, seen, budgets))
    fams: dict = {}
    for p in points:
        f = fams.setdefault(p.family, {"points": 0, "run": 0, "skip": 0, "no_fit": 0, "over_budget": 0,
                                       "est_s": 0.0, "io_bytes": 0, "budget_s": family_budget_s(cfg, p.family)})
        f["points"] += 1
        f[p.status] += 1
        f["est_s"] = round(f["est_s"] + p.est_s, 3)
        f["io_bytes"] += p.io_bytes
        if family_budget_bytes(cfg, p.family) is not None:
            f["budget_bytes"] = family_budget_bytes(cfg, p.family)
    return Plan(target, points, fams, sum(p.est_s for p in points))


def plan_point(bench, params: dict, cfg, target: Target, seen: set, budgets: Budgets) -> PlannedPoint:
    """One point: its needs, whether it fits, its estimate, and whether its family's budget lets it run (the
    budget is charged with the estimate, as the run would charge the time it took)."""
    need, skip = point_needs(bench, params, cfg, target)
    pp = PlannedPoint(bench.name, bench.family, dict(params), "run")
    if skip is not None:
        pp.status, pp.reason, pp.est_s = "skip", skip, target.point_overhead_s * SKIP_S
        budgets.plan(bench.family, pp.est_s)
        budgets.spend(bench.family, pp.est_s)
        return pp
    pp.device_bytes, pp.host_bytes, pp.file_bytes, pp.what = need.device_bytes, need.host_bytes, need.file_bytes, \
        need.what
    why = fits(need, cfg, target)
    if why:
        pp.status, pp.reason, pp.est_s = "no_fit", why, target.point_overhead_s * SKIP_S
        budgets.plan(bench.family, pp.est_s)
        budgets.spend(bench.family, pp.est_s)
        return pp
    trial = set(seen)
    est = estimate(bench, params, cfg, target, need, trial)
    over = budgets.check(bench.family, est)
    if over:
        pp.status, pp.reason, pp.est_s = "over_budget", over, 0.0
        budgets.plan(bench.family, pp.est_s)
        budgets.spend(bench.family, pp.est_s)
        return pp
    budgets.plan(bench.family, est.total_s)
    seen |= trial
    pp.est_s, pp.io_bytes = est.total_s, est.io_bytes
    budgets.spend(bench.family, est.total_s, est.io_bytes)
    return pp
