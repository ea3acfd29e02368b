"""`python -m bench <command>`: dispatch to the subcommands. Later commands plug in through COMMANDS."""
from __future__ import annotations

import sys
from typing import Callable

from bench.core.errors import UserError, allowed, fail

RUN_HELP = """usage: python -m bench run [--plan [--json|--wide]] [OVERRIDE ...] [-m] [--cfg job]

Run benchmarks and write results/<run-id>/{manifest.json,records.jsonl}, then the verdict. Configuration is Hydra:
  suite=quick|default|full     which benchmarks and sizes (conf/suite/)
  benchmark=FAMILY|[a,b]|all   load and run these families (see `python -m bench list`)
  only=NAME|[a,b]              run only these benchmarks of the loaded families
  model=llama3_8b|...          model preset for KV shapes (conf/model/)
  harness.KEY=VALUE            warmup_s (<= 600), min_samples, max_samples (<= 1,000,000), noise_target,
                               time_budget_s (<= 3600), l2_flush, device=auto|cuda|cpu, cpu_max_bytes, progress
  storage.path=DIR             directory for storage benchmarks
  run.root=DIR run.id=NAME     where results go
  run.max_hours=24             a plan longer than this is refused before it starts (raise it on purpose)
  FAMILY.AXIS=[a,b,c]          an axis of a benchmark: every value measured in the one run
  -m KEY=a,b,c                 a sweep: one job (one run directory) per value
  -m hydra/launcher=slurm ...  submit the sweep to SLURM GPU nodes (needs the [slurm] extra);
                               hydra/launcher=slurm_cpu for CPU-only partitions
  --plan                       print every point, its memory and estimated time; run nothing
  --plan --json                the same as JSON, for scripts
  --plan --wide                every column at full width (default: the terminal's, or 120 columns in a file)
  --cfg job                    print the composed config and exit
Every key with its default: docs/config.md.
Examples:
  python -m bench run --plan suite=quick
  python -m bench run suite=quick
  python -m bench run benchmark=transfer model=llama3_70b transfer.block_tokens=[16,64,256]
  python -m bench run -m model=llama3_8b,llama3_70b suite=quick
"""


def cmd_run(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(RUN_HELP)
        return 0
    from bench.commands.run import run

    return run(argv)


def cmd_list(argv: list[str]) -> int:
    """List benchmarks, presets and workloads with one-line descriptions."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m bench list", description=cmd_list.__doc__)
    p.add_argument("what", nargs="?", default="all", choices=["all", "benchmarks", "presets"],
                   help="what to list (default: all)")
    args = p.parse_args(argv)
    from bench.commands.listing import print_listing

    print_listing(args.what)
    return 0


# name -> (the function, or "module:function" imported only when the command runs, and its one-line summary):
# `bench --help` imports nothing heavy (no torch, pandas or matplotlib)
COMMANDS: dict[str, tuple[object, str]] = {
    "run": (cmd_run, "run benchmarks (Hydra overrides, -m sweeps) into results/<run-id>/"),
    "list": (cmd_list, "list benchmarks, presets and workloads"),
    "model": ("bench.commands.model:cmd_model", "throughput model + 2x verdict from a run's measurements"),
    "compare": ("bench.commands.compare:cmd_compare", "compare runs point by point (noise-aware; hardware shown side by side)"),
    "report": ("bench.commands.report:cmd_report", "HTML + markdown report with plots and the fingerprint"),
    "validate": ("bench.commands.validate:cmd_validate", "end-to-end agentic replay vs the cost model's prediction"),
    "workload": ("bench.commands.workload:cmd_workload", "real agent traces and usage logs: the seed's figures, the fleet they make"),
    "docs": ("bench.commands.docs:cmd_docs", "regenerate the reference docs (docs/) from the code; --check: stale?"),
    "status": ("bench.commands.slurm:cmd_status", "every job of a sweep (SLURM or local): status, records, what to run next"),
    "handoff-peer": ("bench.commands.handoff:cmd_peer", "the peer process of benchmark=handoff (a run starts it; or a "
                     "second SLURM task: scripts/handoff_srun.sh)"),
}


def register(name: str, fn: Callable[[list[str]], int], summary: str) -> None:
    COMMANDS[name] = (fn, summary)


def usage() -> str:
    lines = ["usage: python -m bench <command> [args]   (python -m bench <command> --help)", "", "commands:"]
    width = max(9, *(len(n) for n in COMMANDS))
    lines += [f"  {n:<{width}} {s}" for n, (_, s) in COMMANDS.items()]
    return "\n".join(lines)


def resolve(name: str) -> Callable[[list[str]], int]:
    fn = COMMANDS[name][0]
    if isinstance(fn, str):
        import importlib

        mod, _, attr = fn.partition(":")
        fn = getattr(importlib.import_module(mod), attr)
    return fn


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """Warnings print as one line (no Python source line under them)."""
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        import bench

        print(f"tierbench {bench.__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    try:
        if name not in COMMANDS:
            raise allowed("command", name, COMMANDS)
        return resolve(name)(rest) or 0
    except UserError as e:
        fail(e)
