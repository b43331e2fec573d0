"""The few places lossplug reads Lightning's own bookkeeping, kept together.

Lightning has no public API for these facts; ``tests/test_lightning_internals.py``
fails loudly if a Lightning release moves them.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.loggers import Logger


def writes_step_logs(trainer: pl.Trainer) -> bool:
    """Whether the trainer writes this training step's logs (``log_every_n_steps``).

    The same for every micro-batch of an optimizer step, since Lightning counts optimizer
    steps.
    """
    return bool(trainer.fast_dev_run) or trainer._logger_connector.should_update_logs


def logging_step(trainer: pl.Trainer) -> int:
    """The step at which Lightning writes this training step's logs."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def is_last_batch(trainer: pl.Trainer) -> bool:
    """Whether the current training batch is the epoch's last (an optimizer step follows)."""
    return bool(trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)


def logger_prefix(logger: Logger) -> str:
    """The prefix a logger puts before every key (``TensorBoardLogger(prefix=...)``)."""
    return str(getattr(logger, "_prefix", ""))


def current_hook(module: pl.LightningModule) -> str | None:
    """The name of the hook or step Lightning is running on ``module`` (``None`` outside)."""
    return getattr(module, "_current_fx_name", None)


def current_dataloader_idx(module: pl.LightningModule) -> int | None:
    """The loader a step runs on when the stage has several (``None`` with one or outside)."""
    trainer = module._trainer
    results = getattr(trainer, "_results", None) if trainer is not None else None
    return getattr(results, "dataloader_idx", None)
