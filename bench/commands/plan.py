"""`python -m bench run --plan [--json] [overrides]`: compose each job's config exactly as the run would, plan it
on the target and print the points, per-family totals and the total (or the same as JSON for scripts)."""
from __future__ import annotations

import json
import sys

from bench.core.units import bytes_binary, seconds


def _bytes(n: float) -> str:
    return bytes_binary(n) if n else "-"


def plan_jobs(overrides: list[str]) -> list[tuple[list[str], object, list[str]]]:
    """[(job overrides, Plan, presets added for a CPU-only run)] for every job, composed as `bench run` composes."""
    from bench.benchmarks import validate_run
    from bench.core.config import apply_cpu_overrides, check_plan_target
    from bench.commands.overrides import compose_checked, cpu_defaults, jobs, keys_of
    from bench.plan import plan_run
    from bench.plan.targets import for_cfg

    out = []
    for job in jobs(overrides):
        cfg = compose_checked(job)
        check_plan_target(cfg)  # before the target is loaded: the same one line as the rest of validation
        target = for_cfg(cfg)
        added = []
        if not target.is_cuda:
            added = cpu_defaults(job + ["harness.device=cpu"])  # what a CPU-only run adds (model=tiny suite=quick)
            if added:
                cfg = compose_checked(job + added)
            apply_cpu_overrides(cfg, keys_of(job + added))
        validate_run(cfg)  # once, as the job would run
        plan = plan_run(cfg, target)
        check_total(plan, cfg)
        out.append((job, plan, added))
    return out


def check_total(plan, cfg) -> None:
    """Refuse a plan longer than run.max_hours (a typo'd budget or sample count), naming its largest family."""
    limit_s = float(cfg.run.max_hours) * 3600
    if plan.total_s <= limit_s:
        return
    from bench.core.errors import UserError

    name, fam = max(plan.families.items(), key=lambda kv: kv[1]["est_s"])
    raise UserError(f"the plan takes {seconds(plan.total_s)} on {plan.target.name} ({name}: {seconds(fam['est_s'])}), "
                    f"over run.max_hours={cfg.run.max_hours:g}; lower the sizes or budgets, or raise "
                    f"run.max_hours={max(plan.total_s / 3600 * 1.1, 1):.0f} to run it on purpose "
                    "(python -m bench run --plan ... shows every point)")


def print_plan(overrides: list[str], as_json: bool, wide: bool = False) -> int:
    planned = plan_jobs(overrides)
    if as_json:
        doc = {"total_s": round(sum(p.total_s for _, p, _ in planned), 3), "jobs": [], "points": []}
        for i, (job, plan, added) in enumerate(planned):
            d = plan.as_dict()
            doc["jobs"].append({"job": i, "overrides": job + added, "target": d["target"], "total_s": d["total_s"],
                                "families": d["families"]})
            doc["points"] += [{"job": i, **row} for row in d["points"]]
        json.dump(doc, sys.stdout, indent=1)
        print()
        return 0
    from rich.table import Table

    from bench.report.console import console as make_console, plain

    console = make_console(wide=wide)
    for i, (job, plan, added) in enumerate(planned):
        t = plan.target
        title = f"plan{f' job {i}' if len(planned) > 1 else ''}: {' '.join(job + added) or '(defaults)'} on {t.name}"
        table = Table(title=plain(title), show_lines=False)
        for col, just in (("family", "left"), ("benchmark", "left"), ("params", "left"), ("device", "right"),
                          ("host", "right"), ("file", "right"), ("status", "left"), ("est.", "right")):
            table.add_column(col, justify=just, overflow="fold")
        for p in plan.points:
            status = "run" if p.status == "run" else f"{p.status}: {p.reason}"
            table.add_row(p.family, p.benchmark, plain(" ".join(f"{k}={v}" for k, v in p.params.items())),
                          _bytes(p.device_bytes), _bytes(p.host_bytes), _bytes(p.file_bytes), plain(status),
                          f"{p.est_s:.1f} s")
        console.print(table)
        fam = Table(title="per family")
        for col in ("family", "points", "run", "skipped", "no fit", "over budget", "estimated", "budget",
                    "file I/O"):
            fam.add_column(col, justify="left" if col == "family" else "right")
        for name, f in plan.families.items():
            budget = f["budget_s"]
            io = _bytes(f["io_bytes"]) + (f" of {_bytes(f['budget_bytes'])}" if f.get("budget_bytes")
                                               else "")
            fam.add_row(name, str(f["points"]), str(f["run"]), str(f["skip"]), str(f["no_fit"]),
                        str(f["over_budget"]), seconds(f["est_s"]), "-" if budget is None else seconds(budget),
                        io if f["io_bytes"] else "-")
        console.print(fam)
        console.print(f"planned total: {seconds(plan.total_s)} on {t.name} ({len(plan.points)} points); "
                      f"rates: {t.source}")
        for note in t.notes:
            console.print(plain(f"note: {note}"))
    if len(planned) > 1:
        console.print(f"all {len(planned)} jobs: {seconds(sum(p.total_s for _, p, _ in planned))}")
    return 0
