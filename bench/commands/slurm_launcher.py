"""hydra-submitit-launcher's SLURM launch, waiting for every job of the sweep before it returns.

The stock launch collects results job by job and raises at the first job that failed, with a traceback, while
later jobs still run: the submitter then exits without saying where they are. This one waits for all of them and
never raises for a job that failed or was stopped (its manifest says so): the submitter (bench.commands.run) then prints
every job's status, record count and SLURM state from the sweep directory (bench.commands.slurm.sweep_report).
:func:`install` puts it in place of the stock launch in the submitting process only (Hydra loads launchers from
the hydra_plugins namespace, so a launcher of our own would need a top-level package; the jobs never launch).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SlurmLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def install() -> None:
    _SlurmLauncher.launch = launch


def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    import submitit

    assert self.config is not None
    params = dict(self.params)
    init_keys = {"max_num_timeout", "submitit_folder"}
    init = {"folder": params["submitit_folder"]}
    if "max_num_timeout" in params:
        init["slurm_max_num_timeout"] = params["max_num_timeout"]
    executor = submitit.AutoExecutor(cluster="slurm", **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in init_keys})
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    job_params = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
    jobs = executor.map_array(self, *zip(*job_params))
    log.info(f"submitted {len(jobs)} job(s) as SLURM array {jobs[0].job_id.split('_')[0]} into {sweep_dir}; "
             "waiting for them (python -m bench status shows them from another terminal)")
    while not all(j.done() for j in jobs):  # SLURM's state (sacct), polled by submitit's watcher
        time.sleep(1.0)
    out = []
    for (overrides, *_), job in zip(job_params, jobs):
        if job.paths.result_pickle.exists():
            try:
                out.append(job.results()[0])
                continue
            except Exception:  # the job raised: its manifest says why
                pass
        # failed, cancelled or stopped without a result: the manifest (or the job's log) says why; the submitter's
        # summary reads those, so nothing waits here for a result that will not come
        out.append(JobReturn(overrides=overrides, status=JobStatus.COMPLETED,
                             _return_value={"job": job.job_id, "state": job.state}))
    return out
