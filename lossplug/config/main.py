"""``hydra.main`` with lossplug's checks, for any Hydra app."""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from lossplug.config.command_line import check_command_line
from lossplug.config.errors import one_line_errors

Task = Callable[[DictConfig], Any]


def lossplug_main(
    config_path: str | None = None,
    config_name: str | None = None,
    version_base: str | None = "1.3",
) -> Callable[[Task], Callable[..., Any]]:
    """Decorate a Hydra task as ``hydra.main`` does, with lossplug's one-line errors.

    Before Hydra composes the config, the command line is checked (:func:`check_command_line`):
    ``loss.gama=3`` stops with ``Error: loss: unknown option 'gama'. Did you mean 'gamma'? ...``
    on one line instead of Hydra's ``Key 'gama' is not in struct``. Errors the config causes
    while the task runs (an option its target refuses, a shape a loss cannot take) are printed
    as one line too (:func:`one_line_errors`); ``HYDRA_FULL_ERROR=1`` shows the trace.

    Lightning's log lines go through the handlers of Hydra's job logging, once each: to the
    console and to the job's log file (``{job name}.log`` in the run's folder). Left to
    itself, Lightning prints them a second time with handlers of its own, or, imported before
    Hydra set up logging, only with its own, and the log file stays empty.

    Args:
        config_path: the config folder, relative to the decorated function's file (as for
            ``hydra.main``); a ``pkg://`` path is left to Hydra alone.
        config_name: the primary config's name.
        version_base: Hydra's version base.

    Returns:
        The decorator.

    Example:
        >>> from lossplug.config import lossplug_main
        >>> @lossplug_main(config_path="conf", config_name="train")
        ... def main(cfg):
        ...     return cfg.loss.gamma
    """

    def decorate(task: Task) -> Callable[..., Any]:
        @functools.wraps(task)
        def task_with_one_line_errors(cfg: DictConfig) -> Any:
            _lightning_logs_through_hydra()
            with one_line_errors():
                return task(cfg)

        hydra_task = hydra.main(
            config_path=config_path, config_name=config_name, version_base=version_base
        )(task_with_one_line_errors)

        @functools.wraps(task)
        def run(cfg_passthrough: DictConfig | None = None) -> Any:
            folder = _config_folder(task, config_path)
            if cfg_passthrough is None and folder is not None and config_name is not None:
                with one_line_errors():
                    check_command_line(sys.argv[1:], folder, config_name)
            return hydra_task(cfg_passthrough)

        return run

    return decorate


def _config_folder(task: Task, config_path: str | None) -> Path | None:
    """The config folder on disk, as Hydra finds it; ``None`` for none or a package path."""
    if config_path is None or config_path.startswith("pkg://"):
        return None
    return Path(inspect.getfile(task)).resolve().parent / config_path


#: the loggers that Lightning gives console handlers of their own
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def _lightning_logs_through_hydra() -> None:
    """Hand Lightning's log records to the root logger's handlers, which Hydra set up.

    Lightning adds its console handlers when first imported, so it is imported here first;
    with no root handlers (``hydra/job_logging=disabled``) Lightning's own stay.
    """
    import lightning.pytorch  # noqa: F401  (its import adds the handlers removed below)

    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
