"""``hydra.main`` with lossplug's checks, for any Hydra app."""

from __future__ import annotations

import functools
import inspect
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
