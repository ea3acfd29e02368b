"""`python -m bench run`: the Hydra entry point. Thin: validate, fingerprint, run the suite, store results."""
from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

import bench
from bench.core.identity import git_sha
from bench.benchmarks import validate_run
from bench.core.config import apply_cpu_overrides, conf_dir
from bench.commands.overrides import cpu_defaults, key_of, keys_of  # noqa: F401
from bench.core.errors import UserError, fail




def _stop_signal(signum, frame):
    """SIGTERM (scancel, a scheduler's stop) and SIGUSR2 (submitit / `sbatch --signal=B:USR2@S` before the time
    limit) end the run like Ctrl-C: the point in progress is dropped, the manifest says interrupted and why."""
    name = signal.Signals(signum).name
    why = {"SIGUSR2": " (SLURM: the time limit is near)", "SIGTERM": " (SLURM: scancel, or the time limit reached)"}
    raise KeyboardInterrupt(name + (why.get(name, "") if os.environ.get("SLURM_JOB_ID") else ""))


def execute(cfg: DictConfig) -> dict:
    """Run the selected benchmarks into this job's output directory; returns the status counts."""
    from bench.plan.suite import run_suite

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    run_id = cfg.run.id if hc.mode.name == "RUN" else f"{cfg.run.id}-job{hc.job.num}"
    for sig in (signal.SIGTERM, signal.SIGUSR2):  # before anything: submitit installs its own USR2 handler
        signal.signal(sig, _stop_signal)
    try:
        store, manifest, benches, device, cpu_defaults, hardware = _start(cfg, hc, run_dir, run_id)
    except BaseException as e:  # a job that fails before its first point still leaves a manifest saying why
        from bench.commands.slurm import failed_manifest

        failed_manifest(run_dir, run_id, cfg, e)
        raise
    overrides = list(hc.overrides.task)
    repro = "python -m bench run " + " ".join(shlex.quote(o) for o in overrides if not o.startswith(("benchmark=", "only=")))
    from bench.plan import Budgets

    budgets = Budgets(cfg)
    try:
        counts = run_suite(benches, cfg, device, store, repro_prefix=repro.strip(), hardware=hardware,
                           budgets=budgets)
    except KeyboardInterrupt as e:
        why = str(e) or "Ctrl-C"
        store.finish("interrupted", reason=why, families=budgets.summary())
        print(f"\ninterrupted ({why}): completed points kept in {run_dir}", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # the results filesystem (full, gone read-only): keep what was written, say so in one line
        try:
            store.finish("failed", error=f"{type(e).__name__}: {e}", families=budgets.summary())
            kept = "manifest says failed"
        except OSError:
            kept = "the manifest could not be updated either (its last good version stays)"
        raise UserError(f"results in {run_dir}: {e.strerror or e} while writing; every record written before is "
                        f"kept ({kept}); free space or pick another run.root") from None
    except BaseException as e:
        store.finish("failed", error=f"{type(e).__name__}: {e}", families=budgets.summary())
        raise
    fams = budgets.summary()
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGTERM, signal.SIGUSR2)}
    try:  # every point is measured: a stop signal now must not leave the manifest at "running"
        store.finish("complete", counts=counts, families=fams,
                     machine={**manifest["machine"], "load_at_end": load_now(device),
                              "contended_points": sum((v.get("contention") or {}).get("contended_points", 0)
                                                      for v in fams.values())})
    finally:
        for sig, h in held.items():
            signal.signal(sig, h)
    contended = {f: v["contention"] for f, v in fams.items() if (v.get("contention") or {}).get("contended_points")}
    if contended:
        print("contention: " + "; ".join(f"{f}: {c['contended_points']} of {c['points']} point(s) "
                                         f"({', '.join(c['reasons'])})" for f, c in contended.items()) +
              ": those points measured the neighbours too; compare excludes them from its verdicts")
    over = {f: v["skipped_for_budget"] for f, v in budgets.summary().items() if v["skipped_for_budget"]}
    if over:
        print("family budgets: " + ", ".join(f"{n} point(s) of {f} skipped (over {f}.budget_s/budget_bytes)"
                                             for f, n in over.items()) + "; suite=full or a larger budget runs them")
    print(f"run {run_id}: {counts['ok']} ok, {counts['skipped']} skipped, {counts['error']} error "
          f"on {device.kind} -> {run_dir}")
    if cpu_defaults:
        print(f"CPU-only machine: ran {' '.join(cpu_defaults)} (no GPU, and none named on the command line); its "
              "verdict is a CPU rehearsal of the pipeline, not a hardware verdict")
    if not counts.get("ok"):  # a run that measured nothing must not pass (a batch job, a CI step)
        print(nothing_measured(store.records_path, counts), file=sys.stderr)
        if hc.mode.name == "RUN":
            sys.exit(EXIT_NOTHING)
        return counts
    if cfg.run.analyze:
        after_run(run_dir)
    return counts


EXIT_NOTHING = 3  # `bench run` measured no point (every one skipped or refused); `bench compare` compared none


def nothing_measured(records_path, counts: dict) -> str:
    """One line: no point was measured, the counts, and the commonest reasons (why and how many)."""
    from collections import Counter

    from bench.core.store import read_records

    why = Counter((r.get("reason") or r["status"])[:160] for r in read_records(records_path))
    top = "; ".join(f"{n} x {w}" for w, n in why.most_common(3))
    return (f"error: no point was measured ({counts.get('skipped', 0)} skipped, {counts.get('error', 0)} error): "
            f"{top}{' ...' if len(why) > 3 else ''} (exit {EXIT_NOTHING})")


def _start(cfg, hc, run_dir: Path, run_id: str):
    """Pick the device, validate, fingerprint, and write the run's manifest (status running)."""
    from bench.hw.device import select_device
    from bench.hw.fingerprint import fingerprint
    from bench.core.identity import job_ids
    from bench.core.store import RunStore, now_iso

    device = select_device(cfg.harness.device, cfg.harness.device_index)
    overrides = list(hc.overrides.task)
    cpu_defaults = list(cfg.run.cpu_defaults) if not device.is_cuda else []
    cpu_sized = apply_cpu_overrides(cfg, keys_of(overrides)) if not device.is_cuda else []
    benches = validate_run(cfg)  # once per job, as it will run (a CPU-only job with its families' cpu: blocks)
    store = RunStore(run_dir, run_id)
    hardware = fingerprint(device.index if device.is_cuda else 0, cfg.storage.path)
    manifest = {
        "schema_version": 1,
        "run_id": run_id,
        "status": "running",
        "started": now_iso(),
        "finished": None,
        "tool": {"name": "tierbench", "version": bench.__version__, **git_sha()},
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "bench", "run", *overrides]),
        "overrides": overrides,
        "device": device.kind,
        "benchmarks": [b.name for b in benches],
        "cpu_profile_keys": cpu_sized,  # family.key values a CPU-only run took from the family's cpu: block
        "cpu_defaults": cpu_defaults,  # presets chosen for a CPU-only machine because none was named
        "hardware": hardware,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "machine": {"threads": contention_facts(device, cfg), "load_at_start": load_now(device)},
        "slurm": job_ids(),
    }
    try:
        store.write_manifest(manifest)
    except OSError as e:
        raise UserError(f"cannot write the run's manifest in {run_dir}: {e.strerror or e}; free space or pick "
                        "another run.root") from None
    return store, manifest, benches, device, cpu_defaults, hardware


def contention_facts(device, cfg) -> dict:
    """torch's threads while timing (harness.cpu_threads on the CPU) and the CPUs this process may use."""
    from bench.hw.contention import facts

    f = facts()
    if not device.is_cuda and cfg.harness.cpu_threads:
        f["torch_threads"] = int(cfg.harness.cpu_threads)
    return f


def load_now(device) -> dict:
    """Load average and other processes' CPU share over the next 0.2 s, and other GPU processes."""
    import time

    from bench.hw.contention import between, snapshot

    idx = device.index if device.is_cuda else None
    a = snapshot(idx)
    time.sleep(0.2)
    return between(a, snapshot(idx))


def after_run(run_dir: Path) -> None:
    """End a run with its own analysis: the short verdict and where it was written, or one line per missing input
    (which points were skipped and why, and the command that would supply them)."""
    from bench.model.analyze import analyze
    from bench.commands.model import write_result
    from bench.model.prose import short
    from bench.commands.overrides import compose_checked

    try:  # a run without an input the model needs: analyze says which, why, and how to supply it
        result = analyze(run_dir, compose_checked([], config_name="analysis"))
        out = write_result(result)
    except UserError as e:
        print(f"no verdict from this run: {e}")
        return
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM during the analysis: the run itself is complete and kept
        print(f"\nanalysis interrupted; the run is complete in {run_dir}: python -m bench model {run_dir}",
              file=sys.stderr)
        sys.exit(130)
    print(f"verdict: {short(result)}")
    print(f"  full verdict and caveats: {out / 'model.json'} (python -m bench model {run_dir}); plots in {out}; "
          f"report: python -m bench report {run_dir}")


@hydra.main(config_path=str(conf_dir()), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig):
    try:
        return execute(cfg)
    except UserError as e:
        fail(e)


def run(argv: list[str]) -> int:
    """Hand ``argv`` (overrides and Hydra flags) to Hydra after checking every override gives a valid config."""
    from bench.commands.overrides import precheck, split_args

    if "--plan" in argv:  # plan only: nothing is allocated, no run directory is made
        from bench.commands.plan import print_plan

        rest = [a for a in argv if a not in ("--plan", "--json", "--wide", "-m", "--multirun")]
        bad = [a for a in rest if a.startswith("-")]
        if bad:
            raise UserError(f"{bad[0]}: with --plan only --json, --wide and -m are allowed (python -m bench run "
                            "--plan [--json|--wide] [-m] [overrides])")
        return print_plan(rest, "--json" in argv, "--wide" in argv)  # composes and validates every job once
    if "--wide" in argv:
        raise UserError("--wide: only with --plan (python -m bench run --plan --wide [overrides])")
    if "--json" in argv:
        raise UserError("--json: only with --plan (python -m bench run --plan --json [overrides])")
    flags, overrides = split_args(argv)
    info_only = any(f in ("--cfg", "-c", "--help", "-h", "--info", "--hydra-help") for f in flags)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    launcher = next((o.split("=", 1)[1] for o in overrides if o.startswith("hydra/launcher=")), None)
    slurm = bool(launcher and launcher.startswith("slurm"))
    if slurm and not multirun and not info_only:
        raise UserError(f"hydra/launcher={launcher} submits a sweep: add -m (python -m bench run -m "
                        f"hydra/launcher={launcher} ...); without it Hydra would run here, not on the cluster")
    if not info_only:
        # the jobs of a SLURM sweep pick their own device on their node; slurm_cpu means CPU nodes
        added = [] if launcher == "slurm" else cpu_defaults(overrides, force=launcher == "slurm_cpu")
        if added:  # the presets a CPU-only machine gets, and a record of them the job reads (run.cpu_defaults)
            overrides = overrides + added + ["run.cpu_defaults=[" + ",".join(f"'{a}'" for a in added) + "]"]
    sweep_dir = None
    if multirun and not info_only:
        overrides, sweep_dir = fix_sweep_dir(overrides)
    argv = flags + overrides
    precheck(argv)
    if not slurm and not info_only:  # here, on this machine: a plan over run.max_hours is refused before it starts
        from bench.commands.plan import plan_jobs

        plan_jobs(overrides)
    if slurm and not info_only:
        from bench.commands.slurm import presubmit_check

        print(f"SLURM request: {presubmit_check(overrides)}", flush=True)
        from bench.commands.slurm_launcher import install

        install()  # wait for every job; a failed one is reported from its manifest, not as a traceback
    if sweep_dir is not None:
        print(f"sweep directory: {sweep_dir} (job<N>/ per job). The jobs run on if this terminal closes: "
              f"python -m bench status {sweep_dir}", flush=True)
    flags, overrides = split_args(argv)
    sys.argv = ["python -m bench run", *flags, *overrides]  # argparse wants flags before the overrides
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        hydra_main()
    except ValueError as e:  # Hydra's own flag checks (e.g. -m with --cfg) raise before any job runs
        raise UserError(f"hydra: {e}") from None
    except Exception as e:  # a job of a sweep failed (submitit re-raises it here): the summary says which
        if sweep_dir is None:
            raise
        print(f"a job of the sweep ended badly: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return _sweep_summary(sweep_dir) or 1
    except SystemExit:
        if sweep_dir is not None:
            _sweep_summary(sweep_dir)
        raise
    return _sweep_summary(sweep_dir) if sweep_dir is not None else 0


def fix_sweep_dir(overrides: list[str]) -> tuple[list[str], Path]:
    """Resolve run.root (absolute) and run.id once, here: every job then writes under the directory printed now,
    <run.root>/<run.id>/job<N>, instead of re-resolving the time and host inside each job."""
    from bench.core.identity import host_tag as _host_tag
    from bench.commands.overrides import compose_checked, variants

    cfg = compose_checked(variants(overrides)[0])
    given = keys_of(overrides)
    import time

    root = Path(str(cfg.run.root)).expanduser().resolve()
    run_id = str(cfg.run.id) if "run.id" in given else f"{time.strftime('%Y%m%d-%H%M%S')}-{_host_tag()}"
    keep = [o for o in overrides if key_of(o) not in ("run.root", "run.id")]
    return keep + [f"run.root={root}", f"run.id={run_id}"], root / run_id


def _sweep_summary(sweep_dir: Path) -> int:
    from bench.commands.slurm import sweep_report

    lines, bad = sweep_report(sweep_dir)
    print(f"sweep {sweep_dir}:\n  " + "\n  ".join(lines))
    return 1 if bad else 0
