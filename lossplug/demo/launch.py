"""Jobs whose processes are started apart: ``torchrun`` on each node, or Slurm tasks.

Lightning's own launcher starts the other processes of a one-node job itself and tells them the
run's folder. ``torchrun`` and ``srun`` start every process on its own, so Hydra would give each
one a folder of its own, named after the second it started in. The processes other than global
rank 0 write nothing there anyway (the logger, checkpoints and metrics are rank 0's; a
checkpoint's folder is broadcast from rank 0), so :func:`follower_overrides` turns off Hydra's
own files and log file for them (their lines still reach the console) and, unless the command
line names the run's folder, points their Hydra run at the working directory.

Under Slurm each process is a task ``srun`` started; :func:`check_slurm_tasks` stops a job
whose task count is not the trainer's process count, which would otherwise wait for ever.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

#: what a process other than global rank 0 writes: no Hydra files, no log file.
QUIET_FOLLOWER = ("hydra.output_subdir=null", "hydra/job_logging=stdout")


def follower_overrides(
    arguments: Sequence[str], environment: Mapping[str, str] = os.environ
) -> list[str]:
    """Hydra overrides for a process that is not global rank 0 of a job started apart.

    Such a process was started by ``torchrun``, or is a Slurm task ``srun`` started (not one
    of a job that Hydra's submitit launcher submitted: that launcher sets up every task's
    Hydra run itself). It writes no Hydra files and no log file. Its run folder is the
    command line's ``hydra.run.dir`` where one is given (the same for every process, so that
    ``ckpt_path=last`` and a requeued job's checkpoint are found by every process), and the
    working directory otherwise.

    Args:
        arguments: the command line's arguments after the script.
        environment: the process's environment (``torchrun`` sets ``TORCHELASTIC_RUN_ID`` and
            ``RANK``; ``srun`` sets ``SLURM_STEP_ID`` and ``SLURM_PROCID``).

    Returns:
        ``[]`` for global rank 0 and for a process started otherwise; else the overrides.
    """
    if "TORCHELASTIC_RUN_ID" in environment:
        rank = environment.get("RANK", "0")
    elif "SLURM_STEP_ID" in environment and "SUBMITIT_EXECUTOR" not in environment:
        rank = environment.get("SLURM_PROCID", "0")
    else:
        return []
    if rank == "0":
        return []
    fixed_folder = any(argument.startswith("hydra.run.dir=") for argument in arguments)
    return [*([] if fixed_folder else ["hydra.run.dir=."]), *QUIET_FOLLOWER]


def check_slurm_tasks(
    devices: object, num_nodes: object, environment: Mapping[str, str] = os.environ
) -> None:
    """Stop a Slurm job whose task count does not match the trainer's processes.

    Under Slurm, Lightning starts no processes: each process of a DDP job is one Slurm task
    that ``srun`` started, and the processes wait for each other when the job starts. A job
    started with fewer tasks than ``devices * num_nodes`` (``python`` run straight from the
    batch script, or an ``srun`` that asks for fewer) waits for ever; one started with more
    runs the wrong job. Lightning's own check reads the job's ``--ntasks-per-node``, which a
    step started with another count keeps. This compares the tasks of the running step
    (``SLURM_STEP_NUM_TASKS``; one, the batch script itself, outside ``srun``) with the
    trainer's processes.

    Args:
        devices: the trainer's ``devices`` (only a whole number is checked).
        num_nodes: the trainer's ``num_nodes``.
        environment: the process's environment.

    Raises:
        ValueError: in a Slurm job (not an interactive one, which Lightning treats as a
            machine of its own), when the two counts differ; it names both.
    """
    in_slurm_job = "SLURM_NTASKS" in environment and environment.get("SLURM_JOB_NAME") not in (
        "bash",
        "interactive",
    )
    if not (in_slurm_job and isinstance(devices, int) and isinstance(num_nodes, int)):
        return
    processes = devices * num_nodes
    if "SLURM_STEP_NUM_TASKS" in environment:
        tasks = int(environment["SLURM_STEP_NUM_TASKS"])
        started = f"srun started {tasks} task(s) for this job"
    else:
        tasks = 1
        started = "this Slurm job runs 1 process (python started without srun)"
    if tasks != processes:
        raise ValueError(
            f"{started}, but the trainer runs {processes} processes (trainer.devices={devices}"
            f" x trainer.num_nodes={num_nodes}), one per Slurm task: start it with `srun"
            f" --nodes={num_nodes} --ntasks-per-node={devices} python ...`, or set"
            f" trainer.devices and trainer.num_nodes to match the job's {tasks} task(s)"
        )
