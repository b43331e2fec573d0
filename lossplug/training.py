"""Run a training job from a composed config (``conf/train.yaml``): fit, test, report.

``scripts/train.py`` is the Hydra entry point around :func:`train`; a user's own Hydra app
that composes the same groups can call :func:`train` too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.utils import instantiate
from omegaconf import DictConfig


@dataclass(frozen=True)
class Job:
    """What a training config builds: the data, the model and the trainer."""

    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    trainer: pl.Trainer


def build(cfg: DictConfig) -> Job:
    """Seed everything, then build data, model, logger, callbacks and trainer from ``cfg``.

    The model's loss, optimizer and scheduler configs are checked as it is built.

    Args:
        cfg: a config with ``seed``, ``data``, ``model``, ``loss``, ``optimizer``,
            ``scheduler``, ``trainer``, and optionally ``logger`` and ``callbacks``.

    Returns:
        The job, ready to ``fit``.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    model = instantiate(
        cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        _recursive_=False,
    )
    logger = instantiate(cfg.logger) if cfg.get("logger") else False
    callbacks = [instantiate(callback) for callback in (cfg.get("callbacks") or {}).values()]
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    return Job(datamodule, model, trainer)


def train(cfg: DictConfig) -> dict[str, float]:
    """Build the job of ``cfg``, train, test and report.

    Training resumes from ``cfg.ckpt_path`` if set; the test split runs if ``cfg.test``.

    On the main process the TensorBoard directory and the final metrics are printed, and the
    metrics written to ``metrics.json`` in ``trainer.default_root_dir``.

    Args:
        cfg: a config as for :func:`build`, plus optionally ``test`` and ``ckpt_path``.

    Returns:
        The final metrics (last validation epoch, and test if run), as floats.
    """
    job = build(cfg)
    trainer = job.trainer
    trainer.fit(job.model, datamodule=job.datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = _floats(trainer.callback_metrics)
    if cfg.get("test"):
        trainer.test(job.model, datamodule=job.datamodule, verbose=False)
        metrics.update(_floats(trainer.callback_metrics))
    if trainer.is_global_zero:
        _report(trainer, metrics)
    return metrics


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {name: float(value) for name, value in sorted(metrics.items())}


def _report(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
    path = Path(trainer.default_root_dir) / "metrics.json"
    path.write_text(json.dumps(metrics, indent=2))
    if trainer.logger is not None and trainer.logger.log_dir:
        log_dir = trainer.logger.log_dir
        print(f"TensorBoard run: {log_dir}  (tensorboard --logdir {log_dir})")
    print(f"Processes: {trainer.world_size}")
    print(f"Final metrics (also in {path}):")
    for name, value in metrics.items():
        print(f"  {name:<28} {value:.4f}")
