"""Tiny real runs of scripts/train.py, shared by the TensorBoard report and server tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TRAIN, run_python
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

#: two epochs of three training and two validation batches, every step logged.
TINY = (
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_checkpointing=false",
    "test=false",
)
#: the losses of the sweep; job ``i`` trains with ``SWEEP_LOSSES[i]``.
SWEEP_LOSSES = ("cross_entropy", "focal")

_finished_sweeps: dict[str, Path] = {}


def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of a finished two-job sweep over :data:`SWEEP_LOSSES` (jobs ``0`` and ``1``).

    The sweep runs once per test session: test modules that each wrap this in a fixture share
    it (one fixture imported into two modules would run once per module).
    """
    if "sweep" not in _finished_sweeps:
        folder = tmp_path_factory.mktemp("tiny_sweep")
        result = run_python(
            TRAIN,
            "-m",
            f"loss={','.join(SWEEP_LOSSES)}",
            *TINY,
            f"hydra.sweep.dir={folder}",
            cwd=folder,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        _finished_sweeps["sweep"] = folder
    return _finished_sweeps["sweep"]


def last_scalars(event_dir: Path) -> dict[str, float]:
    """The last value of every scalar tag of a TensorBoard run, read with TensorBoard's reader."""
    accumulator = EventAccumulator(str(event_dir), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {tag: accumulator.Scalars(tag)[-1].value for tag in accumulator.Tags()[SCALARS]}
