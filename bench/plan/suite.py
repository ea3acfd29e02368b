"""The suite loop: every point of a run's benchmarks, each planned first on this machine's target (its needs and
estimated seconds, bench.plan) and skipped when it would take its family past its budget, else run
(bench.harness.run_point) and appended to the run's store; the progress bar, torch's CPU threads while timing, and
the run's shared resources closed at the end whatever ends it."""
from __future__ import annotations

from contextlib import nullcontext
from typing import Optional

import torch

from bench.harness.point import run_point
from bench.harness.state import RunContext, memory_budget
from bench.harness.timing import StoppingRule
from bench.hw.device import Device, L2Flusher
from bench.hw.nvml import ClockSampler
from bench.plan import SKIP_S, Budgets, Estimate, estimate, point_needs
from bench.plan.targets import for_cfg


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
                before = snapshot(gpu, ctx.helpers)
                body = run_point(bench, params, cfg, device, rule, float(h.warmup_s), l2,
                                 memory_budget(device, h), sampler, hardware, ctx)
                body["contention"] = between(before, snapshot(gpu, ctx.helpers))
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
