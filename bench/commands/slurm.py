"""SLURM: a job's identity, a pre-submit check of a launcher's request against the partition's limits (sinfo),
and the state of every job of a sweep (what the submitter prints at the end, and `python -m bench status`).

A sweep's jobs all write under the directory the submitter prints: ``<run.root>/<run.id>/job<N>`` (the submitter
fixes run.root and run.id before submitting, so nothing is re-resolved inside a job). The submitter's launch,
waiting for every job, is :mod:`bench.commands.slurm_launcher`.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from bench.core.errors import UserError
from bench.core.identity import job_ids


# -- pre-submit check ----------------------------------------------------------------------------------------------
def launcher_request(overrides: list[str]) -> dict:
    """The composed hydra.launcher node for these overrides (the request every job of the sweep makes)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from bench.core.config import conf_dir
    from bench.commands.overrides import key_of, variants

    ovs = [o for o in overrides if key_of(o).startswith("hydra")] + variants(overrides)[0]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=ovs, return_hydra_config=True)
        out = OmegaConf.to_container(cfg.hydra.launcher, resolve=False)
    GlobalHydra.instance().clear()
    return out


def parse_time_min(s: str) -> Optional[float]:
    """sinfo's time limit (``infinite``, ``D-HH:MM:SS``, ``HH:MM:SS``, ``MM:SS``, ``MM``) in minutes; None = none."""
    s = s.strip()
    if not s or s.lower() in ("infinite", "unlimited", "n/a"):
        return None
    days = 0
    if "-" in s:
        d, s = s.split("-", 1)
        days = int(d)
    parts = [int(p) for p in s.split(":")]
    if len(parts) == 3:
        h, m, sec = parts
    elif len(parts) == 2:
        h, m, sec = 0, parts[0], parts[1]
    else:
        h, m, sec = 0, parts[0], 0
    return days * 1440 + h * 60 + m + sec / 60


def parse_gpus(gres: str) -> int:
    """GPUs in a node's GRES string (``gpu:4``, ``gpu:h100:8(S:0-1)``, ``gpu:a:2,gpu:b:2``, ``(null)``)."""
    n = 0
    for item in gres.split(","):
        item = re.sub(r"\(.*?\)", "", item).strip()
        if item.startswith("gpu"):
            last = item.split(":")[-1]
            n += int(last) if last.isdigit() else 1
    return n


def partition_nodes(partition: Optional[str]) -> tuple[str, list[dict]]:
    """(partition, its nodes' CPUs / memory MB / GPUs / time limit min) from sinfo; the default partition when
    ``partition`` is None."""
    if shutil.which("sinfo") is None:
        raise UserError("hydra/launcher=slurm: sinfo not found: submit from a host with the SLURM client commands "
                        "(sbatch, sinfo, squeue)")
    p = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l|%N"], capture_output=True, text=True,
                       timeout=30)
    if p.returncode != 0:
        raise UserError(f"sinfo failed: {(p.stderr or p.stdout).strip().splitlines()[0] if (p.stderr or p.stdout) else p.returncode}")
    rows = [line.split("|") for line in p.stdout.splitlines() if line.count("|") == 5]
    parts = {}
    default = None
    for part, cpus, mem, gres, limit, node in rows:
        name = part.rstrip("*")
        if part.endswith("*"):
            default = name
        parts.setdefault(name, []).append({"node": node, "cpus": int(re.sub(r"\D", "", cpus) or 0),
                                           "mem_mb": int(re.sub(r"\D", "", mem) or 0), "gpus": parse_gpus(gres),
                                           "time_min": parse_time_min(limit)})
    name = partition or default
    if name is None:
        raise UserError("hydra.launcher.partition=null and the cluster has no default partition: set "
                        f"hydra.launcher.partition to one of {', '.join(sorted(parts)) or '(none found)'}")
    if name not in parts:
        raise UserError(f"hydra.launcher.partition={name} is not allowed: this cluster's partitions are "
                        f"{', '.join(sorted(parts))}")
    return name, parts[name]


def check_request(req: dict, partition: str, nodes: list[dict]) -> None:
    """A request no node of the partition can ever satisfy is an error now (SLURM would leave it pending)."""
    per_node = {"cpus": (req.get("cpus_per_task") or 1) * (req.get("tasks_per_node") or 1),
                "mem_mb": (req.get("mem_gb") or 0) * 1024, "gpus": req.get("gpus_per_node") or 0}
    keys = {"gpus": ("hydra.launcher.gpus_per_node", req.get("gpus_per_node"), "GPUs"),
            "cpus": ("hydra.launcher.cpus_per_task", req.get("cpus_per_task"), "CPUs"),
            "mem_mb": ("hydra.launcher.mem_gb", req.get("mem_gb"), "MB of memory")}
    for k, (key, val, unit) in keys.items():
        best = max(n[k] for n in nodes)
        if per_node[k] > best:
            have = f"{best / 1024:.0f} GB" if k == "mem_mb" else f"{best} {unit}"
            hint = " (no GRES gpu: for a CPU partition use hydra/launcher=slurm_cpu)" if k == "gpus" and best == 0 \
                else ""
            raise UserError(f"{key}={val} is not allowed: partition {partition}'s largest node has {have}{hint}; "
                            "SLURM would leave the job pending forever")
    limits = [n["time_min"] for n in nodes]
    t = req.get("timeout_min") or 0
    if all(x is not None for x in limits) and t > max(limits):
        raise UserError(f"hydra.launcher.timeout_min={t} is not allowed: partition {partition}'s time limit is "
                        f"{max(limits):.0f} min")
    if not any(all(n[k] >= per_node[k] for k in per_node) for n in nodes):
        raise UserError(f"the request (cpus {per_node['cpus']}, {per_node['mem_mb'] / 1024:.0f} GB, {per_node['gpus']} "
                        f"GPUs per node) fits no single node of partition {partition}; lower one of "
                        "hydra.launcher.cpus_per_task / mem_gb / gpus_per_node")


def presubmit_check(overrides: list[str]) -> str:
    """Check a SLURM launcher's request against the partition's nodes; returns a one-line description of it."""
    req = launcher_request(overrides)
    part, nodes = partition_nodes(req.get("partition"))
    check_request(req, part, nodes)
    return (f"partition {part}, {req.get('cpus_per_task')} CPUs, {req.get('mem_gb')} GB, "
            f"{req.get('gpus_per_node') or 0} GPU(s) per job, {req.get('timeout_min')} min, "
            f"{'exclusive node' if (req.get('additional_parameters') or {}).get('exclusive') else 'shared node'}")


# -- the state of a sweep's jobs ------------------------------------------------------------------------------------
def slurm_state(job_id: str) -> Optional[str]:
    """The job's state from sacct (or squeue while slurmctld remembers it); None when neither answers."""
    for cmd in (["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id], ["squeue", "-h", "-t", "all", "-j", job_id,
                                                                          "-o", "%T"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        lines = [x.strip() for x in p.stdout.splitlines() if x.strip()]
        if p.returncode == 0 and lines:
            return lines[0].split()[0]
    return None


def _submitit_jobs(sweep: Path) -> dict:
    """{job number: (SLURM job id, submitit folder)} from the sweep's .submitit folders (array task = job number)."""
    out = {}
    for d in sorted((sweep / ".submitit").glob("*")):
        m = re.fullmatch(r"(\d+)_(\d+)", d.name)
        if m:
            out[int(m.group(2))] = (d.name, d)
    return out


def sweep_report(path) -> tuple[list[str], int]:
    """One line per job of the sweep at ``path`` (status, records, SLURM id; why a job wrote nothing) and the
    commands that merge, compare and report them; and how many jobs did not complete."""
    from bench.core.store import MANIFEST, read_manifest, run_state

    sweep = Path(path)
    jobs = {int(d.name[3:]): d for d in sweep.glob("job*") if d.name[3:].isdigit()}
    sub = _submitit_jobs(sweep)
    lines, bad = [], 0
    done = []
    for n in sorted(set(jobs) | set(sub)):
        d = jobs.get(n)
        sid = sub.get(n, (None, None))[0]
        man = read_manifest(d) if d is not None and (d / MANIFEST).exists() else {}
        sid = sid or ((man.get("slurm") or {}).get("id"))
        state = slurm_state(sid) if sid and (not man or run_state(man) is not None) else None
        where = f"job{n}" + (f" (SLURM {sid}{', ' + state if state else ''})" if sid else "")
        if man:
            line, ok = _run_line(d, man, where)
            lines.append(f"{line} in {d}")
            done += [d] if ok else []
            bad += 0 if ok else 1
        else:
            bad += 1
            why = ""
            if sid:
                err = sub[n][1] / f"{sid}_0_log.err"
                tail = [x for x in err.read_text(errors="replace").splitlines() if x.strip()][-1:] \
                    if err.exists() else []
                why = f"; last line of {err}: {tail[0][:200]}" if tail else f"; see {sub[n][1]}"
            lines.append(f"{where}: wrote nothing (no manifest){why}")
    if not lines:  # a results root (e.g. an sbatch array's TIERBENCH_ROOT): every run under it
        for m in sorted(sweep.rglob(MANIFEST)):
            man = read_manifest(m.parent)
            sid = (man.get("slurm") or {}).get("id")
            line, ok = _run_line(m.parent, man, f"{m.parent.name}{f' (SLURM {sid})' if sid else ''}")
            lines.append(line)
            done += [m.parent] if ok else []
            bad += 0 if ok else 1
    if not lines:
        lines.append(f"{sweep}: no runs found (no job<N> folders, no .submitit folders, no manifests)")
    root = sweep
    lines.append(f"merge:   python scripts/merge_results.py {root} {root / 'merged.parquet'}")
    if len(done) >= 2:
        lines.append(f"compare: python -m bench compare {done[0]} {done[1]}")
    lines.append(f"report:  python -m bench report {root}")
    return lines, bad


def _run_line(d: Path, man: dict, label: str) -> tuple[str, bool]:
    """'<label>: <state>, <n> record(s)' of the run in ``d``, and whether it completed."""
    from bench.core.store import RECORDS, read_records, run_state

    records = read_records(d / RECORDS) if (d / RECORDS).exists() else []
    recs = len(records)
    st = run_state(man, recs)
    ok = sum(1 for r in records if r["status"] == "ok")
    if st is None and recs and not ok:
        return f"{label}: complete but measured nothing (0 of {recs} points ok), {recs} record(s)", False
    return f"{label}: {st or 'complete'}, {recs} record(s)", st is None


def cmd_status(argv: list[str]) -> int:
    """`python -m bench status SWEEP_DIR`: every job of a sweep, its status and records, and what to run next."""
    if not argv:
        raise UserError("bench status needs the sweep (or run) directory: python -m bench status SWEEP_DIR "
                        "(the directory `bench run -m` printed)")
    if argv[0] in ("-h", "--help"):
        print("usage: python -m bench status SWEEP_DIR\n\nEvery job of a sweep (results/<run-id>/job<N>): its status, "
              "record count and SLURM id, why a job wrote nothing, and the commands that merge, compare and report "
              "them. Exit 0 when every job completed, 1 otherwise.")
        return 0
    p = Path(argv[0])
    if not p.is_dir():
        raise UserError(f"{argv[0]!r} is not a directory: give the sweep directory the submitter printed")
    lines, bad = sweep_report(p)
    print("\n".join(lines))
    return 1 if bad else 0


def failed_manifest(run_dir: Path, run_id: str, cfg, error: BaseException) -> None:
    """A job that failed (or was stopped) before its first point still says so: a manifest with status failed
    (interrupted) and why."""
    import socket

    from omegaconf import OmegaConf

    from bench.core.store import now_iso, write_manifest

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # the failure may be the config itself
        config = OmegaConf.to_container(cfg, resolve=False)
    stopped = isinstance(error, KeyboardInterrupt)
    man = {"schema_version": 1, "run_id": run_id, "status": "interrupted" if stopped else "failed",
           "started": now_iso(), "finished": now_iso(), "before_first_point": True,
           **({"reason": str(error) or "Ctrl-C"} if stopped else {"error": f"{type(error).__name__}: {error}".strip()}),
           "slurm": job_ids(), "hardware": {"host": {"hostname": socket.gethostname(),
                                                     "slurm_job_id": job_ids().get("id")}},
           "config": config}
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_manifest(run_dir, man)
    except OSError:
        pass  # nowhere to write: the error itself still reaches the job's log
