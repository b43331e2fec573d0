"""TensorBoard made for inspecting losses: a custom-scalars layout and hparams with real metrics."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from lossplug._lightning import logger_prefix

#: Stages whose loss gets a chart, and the prefix their tags use.
CHART_STAGES = ("train_step", "train", "val", "test")


def custom_scalars_layout(component_names: Sequence[str] | None) -> dict[str, Any]:
    """One multiline chart per stage holding the total and every component.

    Tags are regex-escaped, so component names with ``.``, ``+`` or brackets chart correctly.

    Args:
        component_names: the loss's component names, in logging order; ``None`` (not known
            before the first batch) charts every ``{stage}/loss/...`` tag instead.

    Returns:
        A layout for ``SummaryWriter.add_custom_scalars``.
    """
    charts = {}
    for stage in CHART_STAGES:
        patterns = [f"^{re.escape(f'{stage}/loss')}$"]
        if component_names is None:
            patterns.append(f"^{re.escape(f'{stage}/loss/')}.*$")
        else:
            patterns += [f"^{re.escape(f'{stage}/loss/{name}')}$" for name in component_names]
        charts[f"{stage} loss and components"] = ["Multiline", patterns]
    charts["loss weights"] = ["Multiline", [r"^train/loss_weight/.*$"]]
    charts["gradient norm per term"] = ["Multiline", [r"^train/grad_norm/.*$"]]
    charts["gradient cosine between terms"] = ["Multiline", [r"^train/grad_cosine/.*$"]]
    return {"lossplug": charts}


def tensorboard_loggers(loggers: Sequence[object]) -> list[TensorBoardLogger]:
    """The TensorBoard loggers among a trainer's loggers."""
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def write_layout(loggers: Sequence[object], component_names: Sequence[str] | None) -> None:
    """Write the custom-scalars layout to every TensorBoard logger (call on rank 0 only)."""
    layout = custom_scalars_layout(component_names)
    for logger in tensorboard_loggers(loggers):
        logger.experiment.add_custom_scalars(layout)


def log_final_hparams(
    loggers: Sequence[object], hparams: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """Log hyperparameters with the run's final validation metrics as HPARAMS columns.

    The metrics are written under ``hparams/{name}`` (``hparams/val/loss``,
    ``hparams/val/acc``, ...) so they do not add a stray point to the training curves.

    Args:
        loggers: the trainer's loggers.
        hparams: the module's hyperparameters.
        metrics: the trainer's final ``callback_metrics``.
    """
    final = {
        f"hparams/{name}": float(value)
        for name, value in metrics.items()
        if name.startswith("val/") and "/loss/" not in name
    }
    if not final:
        return
    for logger in tensorboard_loggers(loggers):
        logger.log_hyperparams(dict(hparams), final)


def write_scalars(loggers: Sequence[Logger], scalars: Mapping[str, float], step: int) -> None:
    """Write scalars at ``step`` to every logger (call on the first process only).

    A TensorBoard logger gets them as one event of several values, about 10x cheaper than an
    event per value (``log_metrics``) for 17 values; other loggers get ``log_metrics``.
    """
    for logger in loggers:
        writer = getattr(logger.experiment, "file_writer", None)
        if isinstance(logger, TensorBoardLogger) and writer and not logger_prefix(logger):
            values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
            writer.add_summary(Summary(value=values), step)
        else:
            logger.log_metrics(dict(scalars), step)
