"""Run a training job from a composed config (``conf/train.yaml``): fit, test, report.

``scripts/train.py`` is the Hydra entry point around :func:`train`; a user's own Hydra app
that composes the same groups can call :func:`train` too.

A run resumes from ``ckpt_path``; ``ckpt_path=last`` takes the newest ``last.ckpt`` of the
run's checkpoint folder, so appending ``hydra.run.dir=<run folder> ckpt_path=last`` to the
command that started a run continues it in place (see :mod:`lossplug.resume`).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from lossplug.demo.launch import check_slurm_tasks
from lossplug.resume import (
    checkpoint_step,
    find_checkpoint,
    is_checkpoint_file,
    latest_version,
    requeue_checkpoint,
    resume_command,
)

#: top-level config keys handed to the model as :class:`~lossplug.LossPlugMixin` options.
MIXIN_OPTIONS = ("check_inputs", "on_nonfinite", "normalize_loss")


@dataclass(frozen=True)
class Job:
    """What a training config builds: the data, the model, the trainer, where to resume from."""

    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    trainer: pl.Trainer
    #: the checkpoint ``fit`` resumes from (``ckpt_path=last`` resolved to its file).
    ckpt_path: str | None = None


def build(cfg: DictConfig) -> Job:
    """Seed everything, then build data, model, logger, callbacks and trainer from ``cfg``.

    The model's loss, optimizer and scheduler configs are checked as it is built, and the
    top-level ``check_inputs``, ``on_nonfinite`` and ``normalize_loss`` are handed to it (where
    present, and unless the model config sets them itself). A ``null`` callback entry is
    switched off, and so are checkpoint callbacks when ``trainer.enable_checkpointing`` is
    false. When
    resuming from a checkpoint file, the TensorBoard logger writes into the newest existing
    version (unless the config names one) and purges the steps logged after the checkpoint.
    A Slurm job requeued on Slurm's signal resumes from the checkpoint Lightning saved then.

    Args:
        cfg: a config with ``seed``, ``data``, ``model``, ``loss``, ``optimizer``,
            ``scheduler``, ``trainer``, and optionally ``logger``, ``callbacks``,
            ``ckpt_path``, ``check_inputs``, ``on_nonfinite`` and ``normalize_loss``.

    Returns:
        The job, ready to ``fit``.
    """
    pl.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    options = {key: cfg[key] for key in MIXIN_OPTIONS if key in cfg and key not in cfg.model}
    model = instantiate(
        cfg.model,
        loss=cfg.loss,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        **options,
        _recursive_=False,
    )
    callbacks = build_callbacks(cfg)
    ckpt_path = find_checkpoint(cfg.get("ckpt_path"), callbacks) or requeue_checkpoint(
        cfg.trainer.get("default_root_dir") or "."
    )
    logger = build_logger(cfg, ckpt_path)
    check_slurm_tasks(cfg.trainer.get("devices", "auto"), cfg.trainer.get("num_nodes", 1))
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks)
    return Job(datamodule, model, trainer, ckpt_path)


def build_callbacks(cfg: DictConfig) -> list[Callback]:
    """The callbacks of ``cfg.callbacks`` that are switched on.

    ``callbacks.NAME=null`` switches one off; ``trainer.enable_checkpointing=false`` switches
    off the checkpoint callbacks (Lightning refuses them then).
    """
    checkpointing = cfg.trainer.get("enable_checkpointing", True)
    callbacks = [instantiate(entry) for entry in (cfg.get("callbacks") or {}).values() if entry]
    return [cb for cb in callbacks if checkpointing or not isinstance(cb, ModelCheckpoint)]


def build_logger(cfg: DictConfig, ckpt_path: str | None) -> Logger | bool:
    """The logger of ``cfg.logger`` (``False`` for none), set up to continue a resumed run.

    Resuming from a checkpoint file, a TensorBoard logger without a fixed ``version`` writes
    into the newest existing version folder (the killed run's) and purges the events logged
    at or after the checkpoint's step, which the resumed run logs again.
    """
    if not cfg.get("logger"):
        return False
    logger = instantiate(cfg.logger)
    if not (isinstance(logger, TensorBoardLogger) and is_checkpoint_file(ckpt_path)):
        return logger
    options: dict[str, Any] = {"purge_step": checkpoint_step(ckpt_path)}
    if cfg.logger.get("version") is None:
        options["version"] = latest_version(logger.root_dir)
    return instantiate(cfg.logger, **options)


def train(cfg: DictConfig) -> dict[str, float]:
    """Build the job of ``cfg``, train, test and report.

    Training resumes from ``cfg.ckpt_path`` if set (``"last"``: the newest ``last.ckpt`` of
    the checkpoint folder); the test split runs if ``cfg.test``.

    On the main process the resolved config is saved (``config_resolved.yaml``) and the
    command that resumes the run is printed first (for a Hydra run
    that saves a last checkpoint); at the end, the TensorBoard directory and the final
    metrics, which are also written to ``metrics.json`` in ``trainer.default_root_dir``.

    Args:
        cfg: a config as for :func:`build`, plus optionally ``test`` and ``ckpt_path``.

    Returns:
        The final metrics (last validation epoch, and test if run), as floats.
    """
    job = build(cfg)
    trainer = job.trainer
    if trainer.is_global_zero:
        _save_resolved_config(cfg, trainer)
        _print_resume_command(trainer)
    trainer.fit(job.model, datamodule=job.datamodule, ckpt_path=job.ckpt_path)
    metrics = _floats(trainer.callback_metrics)
    if cfg.get("test"):
        trainer.test(job.model, datamodule=job.datamodule, verbose=False)
        metrics.update(_floats(trainer.callback_metrics))
    if trainer.is_global_zero:
        _report(trainer, metrics)
    return metrics


def _save_resolved_config(cfg: DictConfig, trainer: pl.Trainer) -> None:
    """Write the run's config, every interpolation resolved, to ``config_resolved.yaml``.

    Hydra's ``.hydra/config.yaml`` keeps interpolations such as ``${hydra:runtime.output_dir}``;
    this copy holds the values the run used. Written only inside a Hydra run, where those
    interpolations resolve.
    """
    if HydraConfig.initialized():
        path = Path(trainer.default_root_dir) / "config_resolved.yaml"
        path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _print_resume_command(trainer: pl.Trainer) -> None:
    """Print how to resume this Hydra run from its last checkpoint, if it saves one.

    Not for a job submitit started: Slurm requeues those, and they resume by themselves.
    """
    saves_last = any(getattr(cb, "save_last", False) for cb in trainer.checkpoint_callbacks)
    if not (saves_last and HydraConfig.initialized()) or "SUBMITIT_EXECUTOR" in os.environ:
        return
    hydra = HydraConfig.get()
    command = resume_command(sys.argv[0], hydra.overrides.task, hydra.runtime.output_dir)
    print(f"To resume this run if it stops: {command}")


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
