"""A scripts/train.py run killed with SIGKILL mid-epoch, then resumed with its printed command.

The run segments shapes with Dice + cross-entropy: the Dice weight ramps up per step (a
schedule) and both weights are multiplied by Dynamic Weight Average factors learned from the
epoch means (history in buffers); the learning rate halves every epoch. It checkpoints every
4 steps and is killed after a checkpoint in its second epoch, once it has logged steps past
that checkpoint. The resumed run must write into the same TensorBoard version, each step
once, with the weights, learning rate and optimizer where the formulas say they must be.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HELPERS, REPO
from lightning.pytorch.callbacks import ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from lossplug.demo.training import build_callbacks
from lossplug.resume import (
    checkpoint_step,
    find_checkpoint,
    latest_version,
    requeue_checkpoint,
    resume_command,
)

EPOCHS, BATCHES, EVERY = 3, 8, 4
KILL_AFTER_STEP = 12  # a checkpoint in the middle of the second epoch
LR, GAMMA, RAMP_STEPS = 0.003, 0.5, 20
RUN = (
    "experiment=segmentation",
    "loss=dice_ce_ramp",  # Dice weight: linear from 0 to 1 ...
    "loss.weights.dice.unit=step",
    f"loss.weights.dice.end={RAMP_STEPS}",  # ... over the first 20 steps
    "loss.weighting=dwa",
    "scheduler=step",
    "scheduler.step_size=1",
    f"scheduler.gamma={GAMMA}",
    f"optimizer.lr={LR}",
    "data.num_samples=200",
    "data.batch_size=8",
    f"trainer.max_epochs={EPOCHS}",
    f"+trainer.limit_train_batches={BATCHES}",
    "+trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "test=false",
    f"callbacks.checkpoint.every_n_train_steps={EVERY}",
    "+callbacks.slow._target_=slow_steps.SlowSteps",  # tests/helpers/slow_steps.py: time to kill
    "+callbacks.slow.seconds=0.25",
)
#: the tags whose every step must show exactly once
CURVES = re.compile(r"^(train_step/loss|train/loss|val/loss|lr-)")


def environment() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "HYDRA_FULL_ERROR": "1",
        "PYTHONPATH": str(HELPERS),
    }


def logged_events(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar event in the run's event files as written, no purge applied."""
    events: dict[str, list[tuple[int, float]]] = {}
    for path in sorted((run_dir / "tensorboard" / "version_0").glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.step, value.simple_value))
    return events


def resumable_step(run_dir: Path) -> int | None:
    """The last checkpoint's step once it is mid-epoch 2 and later steps are logged, else None."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    step = checkpoint_step(last)
    logged = [s for s, _ in logged_events(run_dir).get("train_step/loss", [])]
    return step if step >= KILL_AFTER_STEP and logged and max(logged) > step else None


def kill_mid_epoch(run_dir: Path) -> str:
    """Start the run, SIGKILL it past its mid-epoch checkpoint; its stdout."""
    command = [sys.executable, str(REPO / "scripts" / "train.py"), *RUN, f"hydra.run.dir={run_dir}"]
    process = subprocess.Popen(
        command,
        cwd=run_dir,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while resumable_step(run_dir) is None:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no mid-epoch checkpoint within 240 s"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == -signal.SIGKILL
    return output


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """(run folder, events as the killed run wrote them, its checkpoint step, resumed output)."""
    run_dir = tmp_path_factory.mktemp("killed_run")
    output = kill_mid_epoch(run_dir)
    killed_events = logged_events(run_dir)
    step = checkpoint_step(run_dir / "checkpoints" / "last.ckpt")
    printed = re.search(r"To resume this run if it stops: (.+)", output)
    assert printed, output[-3000:]
    command = shlex.split(printed.group(1))
    assert command[0] == "python" and command[-2:] == [f"hydra.run.dir={run_dir}", "ckpt_path=last"]
    result = subprocess.run(
        [sys.executable, *command[1:]],
        cwd=run_dir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return run_dir, killed_events, step, result.stdout + result.stderr


@pytest.fixture(scope="module")
def curves(resumed):
    """{tag: [(step, value)]} as TensorBoard reads the run (purges applied)."""
    run_dir = resumed[0]
    accumulator = EventAccumulator(
        str(run_dir / "tensorboard" / "version_0"), size_guidance={SCALARS: 0}
    )
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()[SCALARS]
    }


def test_the_run_was_killed_mid_epoch_after_logging_past_its_checkpoint(resumed):
    _, killed_events, step, output = resumed
    assert step % BATCHES != 0 and step >= KILL_AFTER_STEP  # mid-epoch
    killed_steps = [s for s, _ in killed_events["train_step/loss"]]
    assert max(killed_steps) >= step  # steps the resumed run logs again: they must go
    assert "Restored all states from the checkpoint at" in output


def test_each_step_shows_once_in_the_same_tensorboard_version(resumed, curves):
    run_dir = resumed[0]
    assert [p.name for p in (run_dir / "tensorboard").iterdir()] == ["version_0"]
    assert len(list((run_dir / "tensorboard" / "version_0").glob("events.*"))) == 2
    assert [s for s, _ in curves["train_step/loss"]] == list(range(EPOCHS * BATCHES))
    for tag, points in curves.items():
        if CURVES.match(tag):
            steps = [s for s, _ in points]
            assert len(steps) == len(set(steps)), tag


def test_the_epoch_count_continues(resumed, curves):
    epoch_ends = [BATCHES * (epoch + 1) - 1 for epoch in range(EPOCHS)]
    for tag in ("train/loss", "train/loss/dice", "val/loss", "val/loss/ce"):
        assert [s for s, _ in curves[tag]] == epoch_ends, tag
    assert max(value for _, value in curves["epoch"]) == EPOCHS - 1


def test_the_learning_rate_schedule_and_the_optimizer_continue(resumed, curves):
    run_dir = resumed[0]
    rates = [tag for tag in curves if tag.startswith("lr-")]
    assert rates
    for tag in rates:  # StepLR halving each epoch, including the resumed epoch's first point
        for step, value in curves[tag]:
            assert value == pytest.approx(LR * GAMMA ** (step // BATCHES), rel=1e-6), (tag, step)
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", mmap=True)
    assert final["global_step"] == EPOCHS * BATCHES
    adam_steps = {float(state["step"]) for state in final["optimizer_states"][0]["state"].values()}
    assert adam_steps == {EPOCHS * BATCHES}  # not restarted at the resume
    assert final["lossplug"] == {"skipped_steps": 0}


def test_scheduled_and_learned_loss_weights_continue(curves):
    dice = dict(curves["train/loss_weight/dice"])
    ce = dict(curves["train/loss_weight/ce"])
    assert sorted(dice) == sorted(ce) == list(range(EPOCHS * BATCHES))
    # DWA: factors 1 for two epochs, then 2 * softmax(r / 2), r = L(1) / L(0) per term; the
    # killed run saw epoch 0's means, so they must have come back from the checkpoint
    means = {name: [v for _, v in curves[f"train/loss/{name}"]] for name in ("dice", "ce")}
    ratios = {name: values[1] / values[0] for name, values in means.items()}
    norm = sum(math.exp(r / 2) for r in ratios.values())
    factors = {name: 2 * math.exp(r / 2) / norm for name, r in ratios.items()}
    for step in range(EPOCHS * BATCHES):
        learned = step >= 2 * BATCHES
        ramp = min(step / RAMP_STEPS, 1.0)
        expected_dice = ramp * (factors["dice"] if learned else 1.0)
        expected_ce = factors["ce"] if learned else 1.0
        assert dice[step] == pytest.approx(expected_dice, rel=1e-5, abs=1e-7), step
        assert ce[step] == pytest.approx(expected_ce, rel=1e-5), step


# -- the pieces, without a run --------------------------------------------------------------


def test_last_is_the_newest_last_checkpoint_of_the_checkpoint_folders(tmp_path):
    older, newer = tmp_path / "a", tmp_path / "b"
    for folder in (older, newer):
        folder.mkdir()
    (older / "last.ckpt").write_bytes(b"")
    (older / "epoch=3.ckpt").write_bytes(b"")
    time.sleep(0.01)
    (newer / "last-v1.ckpt").write_bytes(b"")
    callbacks = [ModelCheckpoint(dirpath=older), ModelCheckpoint(dirpath=newer)]
    assert find_checkpoint("last", callbacks) == str(newer / "last-v1.ckpt")
    assert find_checkpoint("last", callbacks[:1]) == str(older / "last.ckpt")
    assert find_checkpoint("last", [ModelCheckpoint(dirpath=tmp_path / "none")]) == "last"
    assert find_checkpoint("some.ckpt", callbacks) == "some.ckpt"
    assert find_checkpoint(None, callbacks) is None


def test_last_follows_a_renamed_last_checkpoint(tmp_path):
    renamed = ModelCheckpoint(dirpath=tmp_path)
    renamed.CHECKPOINT_NAME_LAST = "newest"
    (tmp_path / "last.ckpt").write_bytes(b"")  # not this callback's last checkpoint
    time.sleep(0.01)
    (tmp_path / "newest.ckpt").write_bytes(b"")
    time.sleep(0.01)
    (tmp_path / "newest-epoch=3.ckpt").write_bytes(b"")  # a checkpoint, not a last one
    assert find_checkpoint("last", [renamed]) == str(tmp_path / "newest.ckpt")


def test_the_resumed_logger_version_is_the_newest_one(tmp_path):
    assert latest_version(tmp_path / "missing") is None
    for name in ("version_0", "version_2", "version_10", "version_x", "other"):
        (tmp_path / name).mkdir()
    assert latest_version(tmp_path) == 10


def test_a_requeued_slurm_job_resumes_from_its_highest_numbered_hpc_checkpoint(
    tmp_path, monkeypatch
):
    for name in ("hpc_ckpt_2.ckpt", "hpc_ckpt_10.ckpt", "hpc_ckpt_x.ckpt", "last.ckpt"):
        (tmp_path / name).touch()
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert requeue_checkpoint(tmp_path) is None  # not a Slurm job
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert requeue_checkpoint(tmp_path) == str(tmp_path / "hpc_ckpt_10.ckpt")  # 10, not "2"
    assert requeue_checkpoint(tmp_path / "missing") is None


def test_the_resume_command_keeps_the_overrides_and_quotes_them():
    command = resume_command(
        "scripts/train.py", ["loss=focal", "ckpt_path=old.ckpt", "x='a b'"], "/runs/r 1"
    )
    assert shlex.split(command) == [
        "python",
        "scripts/train.py",
        "loss=focal",
        "x='a b'",
        "hydra.run.dir=/runs/r 1",
        "ckpt_path=last",
    ]


def test_checkpointing_switched_off_drops_the_checkpoint_callback(compose_train):
    assert not any(isinstance(cb, ModelCheckpoint) for cb in build_callbacks(compose_train()))
    on = build_callbacks(compose_train("trainer.enable_checkpointing=true"))
    assert [cb.save_last for cb in on if isinstance(cb, ModelCheckpoint)] == [True]
    off = compose_train("trainer.enable_checkpointing=true", "callbacks.checkpoint=null")
    assert not any(isinstance(cb, ModelCheckpoint) for cb in build_callbacks(off))
