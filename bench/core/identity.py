"""Who and what a run is: the SLURM job it belongs to, its host tag (part of every run id), the tool's git sha."""
from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path


def job_ids() -> dict:
    """This process's SLURM job: id, array job and task, partition, nodes ({} outside SLURM)."""
    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return {}
    out = {"job_id": env.get("SLURM_JOB_ID"), "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
           "array_task_id": env.get("SLURM_ARRAY_TASK_ID"), "partition": env.get("SLURM_JOB_PARTITION"),
           "nodelist": env.get("SLURM_JOB_NODELIST"), "job_name": env.get("SLURM_JOB_NAME")}
    out["id"] = (f"{out['array_job_id']}_{out['array_task_id']}" if out["array_job_id"] and out["array_task_id"]
                 else out["job_id"])
    return {k: v for k, v in out.items() if v is not None}


def job_tag() -> str:
    """``j<array job>_<task>`` for an array task (the id sacct and squeue show), else ``j<job id>``; '' outside."""
    ids = job_ids()
    return f"j{ids['id']}" if ids else ""


def host_tag() -> str:
    """Short host name, process id, and the SLURM job when set (``j<array job>_<task>`` for an array task, as
    sacct shows it; ``-t<rank>`` for a task of a multi-task step): runs from different nodes or processes never
    share a directory."""
    tag = f"{socket.gethostname().split('.')[0] or 'host'}-p{os.getpid()}"
    job = job_tag()
    if job:
        rank = os.environ.get("SLURM_PROCID")
        tag += f"-{job}" + (f"-t{rank}" if rank and (rank != "0" or int(os.environ.get("SLURM_NTASKS") or 1) > 1)
                            else "")
    return re.sub(r"[^A-Za-z0-9._-]", "_", tag)


def git_sha() -> dict:
    """The commit of the tool's source (and whether the work tree differs from it), or None outside a checkout."""
    src = Path(__file__).resolve().parent.parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=5).stdout.strip()) if sha else None
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"git_sha": sha, "git_dirty": dirty}


def run_id() -> str:
    """A new run's id: the time and the host tag (what run.id resolves to when not given)."""
    import time

    return f"{time.strftime('%Y%m%d-%H%M%S')}-{host_tag()}"
