"""scripts/train.py on a real Slurm cluster on this machine, through hydra-submitit-launcher.

A one-node cluster with 2 CPUs (Debian's slurm-wlm and munge, started and stopped by
scripts/slurm_cluster.sh) runs the sweeps; each job is 2 DDP processes, one per Slurm task,
over gloo. Checked: the multirun folder holds one folder per job and nothing per rank, the
logged values equal a recomputation in one process, a job sent Slurm's requeue signal
mid-epoch is requeued and resumes from the checkpoint Lightning saved on the signal (every
step once in TensorBoard, the learned loss weights restored), and a task count that does not
match the trainer stops the job at once with both numbers.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import HELPERS, TRAIN
from hydra.utils import instantiate
from omegaconf import OmegaConf
from slurm_cluster import slurm  # noqa: F401 (the fixture)
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from lossplug.demo.models import Classifier, Segmenter
from lossplug.resume import checkpoint_step

pytestmark = pytest.mark.slow

ON_SLURM = ("-m", "hydra/launcher=slurm", "trainer=ddp", "trainer.accelerator=cpu")
TWO_TASKS = (*ON_SLURM, "trainer.devices=2", "trainer.enable_progress_bar=false", "test=false")
#: a sweep folder of two jobs: one folder per job, nothing per rank
TWO_JOB_SWEEP = [".submitit", "0", "1", "multirun.yaml"]
EPOCHS, BATCHES = 3, 8
SIGNAL_AFTER_STEP = 11  # mid second epoch
#: Slurm's job states before a job has ended
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"}
REQUEUED = (
    "experiment=segmentation",
    "loss=dice_ce_uncertainty",  # learned loss weights: they must come back from the checkpoint
    "data.num_samples=200",
    "data.batch_size=8",
    "trainer.sync_batchnorm=false",  # PyTorch's SyncBatchNorm runs on GPUs only
    f"trainer.max_epochs={EPOCHS}",
    f"+trainer.limit_train_batches={BATCHES}",
    "trainer.log_every_n_steps=1",
    "+callbacks.slow._target_=slow_steps.SlowSteps",  # tests/helpers/slow_steps.py
    "+callbacks.slow.seconds=0.3",
    "+callbacks.agree._target_=weights_agree.LossWeightsAgree",  # tests/helpers/weights_agree.py
)


def environment(slurm_env: dict[str, str]) -> dict[str, str]:
    return {
        **slurm_env,
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
        "PYTHONPATH": str(HELPERS),
    }


def sweep(slurm_env: dict[str, str], folder: Path, *overrides: str) -> subprocess.Popen[str]:
    """Start ``scripts/train.py -m ...`` with its sweep folder ``folder``."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *overrides, f"hydra.sweep.dir={folder}"],
        cwd=folder.parent,
        env=environment(slurm_env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output[-4000:]
    return output


def job_logs(folder: Path) -> str:
    """Every task's stdout and stderr of every job of the sweep, concatenated."""
    return "\n".join(path.read_text() for path in sorted(folder.glob(".submitit/*/*_log.*")))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard reads the job's run (purges applied)."""
    (version,) = (run_dir / "tensorboard").iterdir()
    accumulator = EventAccumulator(str(version), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[SCALARS]
    }


def validation_split(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    return datamodule.splits["val"].tensors


# -- a sweep of two jobs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def swept(slurm, tmp_path_factory):  # noqa: F811 (the fixture)
    folder = tmp_path_factory.mktemp("sweep") / "multirun"
    overrides = (*TWO_TASKS, "trainer.max_epochs=2", "optimizer.lr=0.003,0.01")
    output = finish(sweep(slurm, folder, *overrides), timeout=400)
    return folder, output


def test_each_job_of_the_sweep_has_one_folder_and_one_tensorboard_run(swept):
    folder, _ = swept
    assert sorted(path.name for path in folder.iterdir()) == TWO_JOB_SWEEP
    for job in ("0", "1"):
        assert [path.name for path in (folder / job / "tensorboard").iterdir()] == ["version_0"]
        assert (folder / job / "checkpoints" / "last.ckpt").is_file()


def test_lightning_runs_each_job_as_two_slurm_tasks(swept):
    folder, _ = swept
    logs = job_logs(folder)
    assert logs.count("SLURM auto-requeueing enabled") == 4  # 2 jobs x 2 tasks
    assert logs.count("Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2") == 2
    assert logs.count("Processes: 2") == 2


def test_the_launcher_asks_slurm_for_one_task_per_process_and_lightnings_signal(swept):
    # hydra/launcher=slurm: tasks_per_node from trainer.devices, SIGUSR1 before the time limit
    folder, _ = swept
    (script,) = folder.glob(".submitit/*/*_submission.sh")
    lines = script.read_text().splitlines()
    assert "#SBATCH --ntasks-per-node=2" in lines
    assert "#SBATCH --nodes=1" in lines
    assert "#SBATCH --signal=USR1@120" in lines


def test_each_job_logs_the_single_process_loss_over_the_validation_split(swept):
    folder, _ = swept
    for job in ("0", "1"):
        run_dir = folder / job
        x, y = validation_split(run_dir)
        assert len(y) % 2  # odd: Lightning's sampler repeats a sample on one of the 2 tasks
        model = Classifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
        with torch.no_grad():
            expected = F.cross_entropy(model(x).double(), y).item()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5, abs=0), job


# -- a job requeued mid-epoch -------------------------------------------------------------


def logged_steps(run_dir: Path) -> list[int]:
    """The train_step/loss steps of the job's event files, as written."""
    if not list(run_dir.glob("tensorboard/version_*/events.*")):
        return []
    return [step for step, _ in scalars(run_dir).get("train_step/loss", [])]


@pytest.fixture(scope="module")
def requeued(slurm, tmp_path_factory):  # noqa: F811 (the fixture)
    """(job folder, scontrol's record of the job, the job's logs), once the job has finished."""
    folder = tmp_path_factory.mktemp("requeue") / "multirun"
    process = sweep(slurm, folder, *TWO_TASKS, *REQUEUED)
    run_dir = folder / "0"
    signal_mid_epoch(run_dir, lambda: process.poll() is None, slurm)
    finish(process, timeout=400)
    (job_id,) = [path.name for path in (folder / ".submitit").iterdir() if path.is_dir()]
    return run_dir, finished_record(job_id, slurm, timeout=60), job_logs(folder)


def signal_mid_epoch(run_dir: Path, running: Callable[[], bool], slurm_env: dict[str, str]) -> None:
    """Once the job of ``run_dir`` has logged step SIGNAL_AFTER_STEP, send it Slurm's requeue
    signal (``SIGUSR1``, to every task); ``running()`` tells whether it still runs."""
    deadline = time.monotonic() + 240
    while max(logged_steps(run_dir), default=-1) < SIGNAL_AFTER_STEP:
        assert running(), "the job ended before it was signalled"
        assert time.monotonic() < deadline, "the job logged too few steps within 240 s"
        time.sleep(0.2)
    job_id = subprocess.run(
        ["squeue", "-h", "-o", "%i"], env=slurm_env, capture_output=True, text=True, check=True
    ).stdout.split()[0]
    subprocess.run(["scancel", "--signal=USR1", job_id], env=slurm_env, check=True)


def job_record(job_id: str, slurm_env: dict[str, str]) -> str:
    """``scontrol show job``'s record of the job."""
    command = ["scontrol", "show", "job", job_id]
    return subprocess.run(command, env=slurm_env, capture_output=True, text=True, check=True).stdout


def is_active(record: str) -> bool:
    """Whether a job record says the job has not ended yet."""
    state = re.search(r"JobState=(\S+)", record)
    return state is not None and state.group(1) in ACTIVE


def finished_record(job_id: str, slurm_env: dict[str, str], timeout: float) -> str:
    """The job's record once it has ended (a submitit job writes its result a moment before its
    tasks exit), or as it stands after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while is_active(record := job_record(job_id, slurm_env)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return record


def test_the_signalled_job_was_requeued_and_resumed_from_its_signal_checkpoint(requeued):
    run_dir, record, logs = requeued
    assert re.search(r"\bRestarts=1\b", record), record
    assert "JobState=COMPLETED" in record, re.findall(r"JobState=\S+|ExitCode=\S+", record)
    (saved,) = run_dir.glob("hpc_ckpt_*.ckpt")
    assert BATCHES < checkpoint_step(saved) < 2 * BATCHES  # mid second epoch
    assert f"Restored all states from the checkpoint at {saved}" in logs


def test_every_step_shows_once_after_the_requeue(requeued):
    run_dir, _, _ = requeued
    curves = scalars(run_dir)
    assert [step for step, _ in curves["train_step/loss"]] == list(range(EPOCHS * BATCHES))
    epoch_ends = [BATCHES * (epoch + 1) - 1 for epoch in range(EPOCHS)]
    for tag in ("train/loss", "val/loss", "val/loss/ce"):
        assert [step for step, _ in curves[tag]] == epoch_ends, tag


def test_the_learned_loss_weights_continue_from_the_checkpoint(requeued):
    run_dir, _, _ = requeued
    (saved,) = run_dir.glob("hpc_ckpt_*.ckpt")
    step = checkpoint_step(saved)
    state = torch.load(saved, map_location="cpu", weights_only=False)["state_dict"]
    log_variances = state["criterion.learned.log_variances"]  # one per term, in config order
    curves = scalars(run_dir)
    # Kendall et al.: weight_i = 0.5 * exp(-s_i); the first step after the requeue used the
    # s_i the checkpoint saved, not fresh zeros (weight 0.5)
    for term, log_variance in zip(("dice", "ce"), log_variances.tolist(), strict=True):
        assert log_variance != 0.0
        logged = dict(curves[f"train/loss_weight/{term}"])
        assert logged[step] == pytest.approx(0.5 * math.exp(-log_variance), rel=1e-5), term


def test_the_learned_loss_weights_are_the_same_on_both_tasks_after_every_step(requeued):
    run_dir, _, _ = requeued
    step = checkpoint_step(next(run_dir.glob("hpc_ckpt_*.ckpt")))
    for rank in (0, 1):
        report = json.loads((run_dir / f"loss_weights_agree_rank{rank}.json").read_text())
        assert report["world_size"] == 2
        assert "learned.log_variances" in report["names"]
        assert report["checked"] == EPOCHS * BATCHES - step  # every step after the requeue


def test_the_requeued_job_logs_the_single_process_cross_entropy(requeued):
    run_dir, _, _ = requeued
    x, y = validation_split(run_dir)
    model = Segmenter.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x).double(), y).item()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/loss/ce"] == pytest.approx(expected, rel=1e-5, abs=0)


# -- an sbatch script with srun, requeued mid-epoch ------------------------------------------

SBATCH = """#!/bin/bash
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output={output}
srun {python} {train} trainer=ddp trainer.accelerator=cpu trainer.devices=2 test=false \\
    trainer.enable_progress_bar=false trainer.max_epochs={epochs} \\
    +trainer.limit_train_batches={batches} trainer.log_every_n_steps=1 \\
    +callbacks.slow._target_=slow_steps.SlowSteps +callbacks.slow.seconds=0.3 \\
    'hydra.run.dir=logs/slurm/${{oc.env:SLURM_JOB_ID}}'
"""


@pytest.fixture(scope="module")
def requeued_batch_job(slurm, tmp_path_factory):  # noqa: F811 (the fixture)
    """(the work folder, the job's run folder, scontrol's record, the job's output)."""
    work = tmp_path_factory.mktemp("sbatch")
    script = work / "train.sbatch"
    output = work / "job.out"
    script.write_text(
        SBATCH.format(
            output=output, python=sys.executable, train=TRAIN, epochs=EPOCHS, batches=BATCHES
        )
    )
    submitted = subprocess.run(
        ["sbatch", "--parsable", str(script)],
        env=environment(slurm),
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip()
    run_dir = work / "logs" / "slurm" / job_id

    signal_mid_epoch(run_dir, lambda: is_active(job_record(job_id, slurm)), slurm)
    record = finished_record(job_id, slurm, timeout=300)
    return work, run_dir, record, output.read_text()


def test_an_sbatch_job_requeued_mid_epoch_resumes_in_its_folder(requeued_batch_job):
    work, run_dir, record, output = requeued_batch_job
    assert re.search(r"\bRestarts=1\b", record) and "JobState=COMPLETED" in record, record
    assert [path.name for path in (work / "logs" / "slurm").iterdir()] == [run_dir.name]
    assert sorted(path.name for path in work.iterdir()) == ["job.out", "logs", "train.sbatch"]
    (saved,) = run_dir.glob("hpc_ckpt_*.ckpt")
    assert BATCHES < checkpoint_step(saved) < 2 * BATCHES
    assert f"Restored all states from the checkpoint at {saved}" in output
    curves = scalars(run_dir)
    assert [step for step, _ in curves["train_step/loss"]] == list(range(EPOCHS * BATCHES))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    x, y = validation_split(run_dir)
    model = Classifier.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt").eval()
    with torch.no_grad():
        expected = F.cross_entropy(model(x).double(), y).item()
    assert metrics["val/loss"] == pytest.approx(expected, rel=1e-5, abs=0)


# -- the same sweep as local processes -------------------------------------------------------


def test_the_local_launcher_runs_a_sweep_as_submitit_processes(tmp_path):
    folder = tmp_path / "multirun"
    overrides = ("-m", "hydra/launcher=local", "trainer.max_epochs=1", "optimizer.lr=0.003")
    quiet = ("trainer.enable_progress_bar=false", "test=false")
    output = finish(sweep(dict(os.environ), folder, *overrides, *quiet), timeout=300)
    assert "Submitit 'local' sweep output dir" in output
    assert sorted(path.name for path in folder.iterdir()) == [".submitit", "0", "multirun.yaml"]
    assert json.loads((folder / "0" / "metrics.json").read_text())["val/acc"] > 0.5


# -- task counts that do not match the trainer --------------------------------------------


@pytest.mark.parametrize(
    ("launch", "devices", "message"),
    [
        (["srun", "--nodes=1", "--ntasks-per-node=2", "--ntasks=1"], 2, "srun started 1 task"),
        (["srun", "--nodes=1", "--ntasks=2"], 1, "srun started 2 task"),
        (["sbatch", "--wait", "--nodes=1", "--ntasks-per-node=2"], 2, "runs 1 process"),
    ],
    ids=["srun-fewer", "srun-more", "batch-script-without-srun"],
)
def test_a_task_count_that_does_not_match_the_trainer_stops_at_once(
    slurm,  # noqa: F811 (the fixture)
    tmp_path,
    launch,
    devices,
    message,
):
    train = [sys.executable, str(TRAIN), *TWO_TASKS[1:], f"trainer.devices={devices}"]
    train += ["trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}"]
    if launch[0] == "sbatch":
        output_file = tmp_path / "job.out"
        launch = [*launch, f"--output={output_file}", "--wrap", subprocess.list2cmdline(train)]
        train = []
    started = time.monotonic()
    result = subprocess.run(
        [*launch, *train],
        env=environment(slurm),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    if launch[0] == "sbatch":
        output += output_file.read_text()
    assert result.returncode != 0, output[-3000:]
    assert time.monotonic() - started < 60
    assert message in output, output[-3000:]
    processes = devices * 1
    assert f"the trainer runs {processes} processes (trainer.devices={devices}" in output
