"""TensorBoard made for inspecting losses: a custom-scalars layout and hparams with real metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from tensorboard.compat.proto.summary_pb2 import Summary

from lossplug._lightning import logger_prefix

#: Stages whose loss gets a chart, and the prefix their tags use.
CHART_STAGES = ("train_step", "train", "val", "test")


def custom_scalars_layout(
    *,
    stages: Sequence[str] = CHART_STAGES,
    weights: bool,
    extra_charts: Mapping[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """One multiline chart per stage with the total and every component, the same in every run.

    TensorBoard merges the layouts of all the runs under its logdir and drops a chart that
    another run has already laid out identically; a chart that named one run's components
    would appear once per run. Each stage's chart matches ``{stage}/loss`` and every
    ``{stage}/loss/...`` tag instead. Charts for values a run does not log are left out: an
    empty chart says nothing.

    Args:
        stages: the stages the run logs, among :data:`CHART_STAGES`.
        weights: whether the run logs loss weights (``train/loss_weight/...``).
        extra_charts: more charts, ``{title: ["Multiline", [tag regex, ...]]}``, e.g. those
            of :class:`~lossplug.diagnostics.GradientDiagnostics`.

    Returns:
        A layout for ``SummaryWriter.add_custom_scalars``.
    """
    charts: dict[str, list[Any]] = {
        f"{stage} loss and components": ["Multiline", [f"^{stage}/loss$", f"^{stage}/loss/.*$"]]
        for stage in CHART_STAGES
        if stage in stages
    }
    if weights:
        charts["loss weights"] = ["Multiline", [r"^train/loss_weight/.*$"]]
    charts.update(extra_charts or {})
    return {"lossplug": charts}


def callback_charts(callbacks: Sequence[object]) -> dict[str, list[Any]]:
    """The charts that callbacks lay out for what they log: their ``custom_scalar_charts()``."""
    charts: dict[str, list[Any]] = {}
    for callback in callbacks:
        charts_of = getattr(callback, "custom_scalar_charts", None)
        if callable(charts_of):
            charts.update(charts_of())
    return charts


def tensorboard_loggers(loggers: Sequence[object]) -> list[TensorBoardLogger]:
    """The TensorBoard loggers among a trainer's loggers."""
    return [logger for logger in loggers if isinstance(logger, TensorBoardLogger)]


def write_layout(
    loggers: Sequence[object],
    *,
    stages: Sequence[str],
    weights: bool,
    extra_charts: Mapping[str, list[Any]],
) -> None:
    """Write the custom-scalars layout to every TensorBoard logger (call on rank 0 only).

    TensorBoard shows a run's last layout: a later one (with the test stage, once it runs)
    replaces the earlier.
    """
    layout = custom_scalars_layout(stages=stages, weights=weights, extra_charts=extra_charts)
    for logger in tensorboard_loggers(loggers):
        logger.experiment.add_custom_scalars(layout)


def log_final_hparams(
    loggers: Sequence[object], hparams: Mapping[str, Any], metrics: Mapping[str, Any]
) -> None:
    """Log hyperparameters with the run's final validation metrics as HPARAMS columns.

    The one time they reach a TensorBoard logger: TensorBoard keeps the metric columns of the
    first hyperparameters a run logs, so Lightning's own logging at the start (with
    ``hp_metric = -1`` on its default logger) is turned off by the mixin. The metrics are
    written under ``hparams/{name}`` (``hparams/val/loss``, ``hparams/val/acc``, ...) so they
    do not add a stray point to the training curves; booleans as ``true``/``false``, not 1/0.
    A run without validation gets its final training values instead (``hparams/train/loss``):
    TensorBoard writes no hyperparameters without a metric.

    Args:
        loggers: the trainer's loggers.
        hparams: the module's hyperparameters.
        metrics: the trainer's final ``callback_metrics``.
    """
    final = _final_metrics(metrics, "val") or _final_metrics(metrics, "train")
    if not final:
        return
    readable = {name: _readable(value) for name, value in hparams.items()}
    for logger in tensorboard_loggers(loggers):
        logger.log_hyperparams(readable, final)
        # Lightning wrote the logger's hparams.yaml at the start, while it still had none
        save_hparams_to_yaml(Path(logger.log_dir) / logger.NAME_HPARAMS_FILE, dict(hparams))


def _final_metrics(metrics: Mapping[str, Any], stage: str) -> dict[str, float]:
    """``stage``'s totals and task metrics (not the loss components) as HPARAMS columns."""
    return {
        f"hparams/{name}": float(value)
        for name, value in metrics.items()
        if name.startswith(f"{stage}/") and "/loss/" not in name and "/loss_weight/" not in name
    }


def log_initial_hparams(loggers: Sequence[Logger], hparams: Mapping[str, Any]) -> None:
    """Give loggers other than TensorBoard the hyperparameters at the start, as Lightning would.

    (CSV's ``hparams.yaml``, for instance; TensorBoard gets them at the end, with the final
    metrics: :func:`log_final_hparams`.)
    """
    for logger in loggers:
        if not isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(dict(hparams))


def _readable(value: Any) -> Any:
    """``value`` with its booleans as ``"true"``/``"false"`` (TensorBoard shows bools as 1/0)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return {key: _readable(item) for key, item in value.items()}
    return value


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
