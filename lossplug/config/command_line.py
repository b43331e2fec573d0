"""The command line checked before Hydra runs it, each problem in one line.

Override syntax, sweeps, config-group choices and keys are checked here, against the composed
config and the ``_target_`` of the config each key sets; the values' types in
:mod:`lossplug.config.values`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lossplug.config.options import (
    LIGHTNING_SCHEDULER_OPTIONS,
    PARAM_GROUP_OPTIONS,
    ConfigError,
    check_options,
    is_config,
)
from lossplug.config.values import check_value, current_value
from lossplug.config.wording import did_you_mean, one_line


class OverrideSyntaxError(ConfigError):
    """A command-line override Hydra cannot parse: a usage error (exit code 2)."""


def check_command_line(
    args: Sequence[str], config_dir: str | Path, config_name: str = "train"
) -> None:
    """Check a command line's overrides before Hydra runs them; each problem in one line.

    What Hydra or a config's target would report later, as a trace or over several lines, is
    raised here as a :class:`ConfigError` that says what is wrong and how to fix it:

    - an override Hydra cannot parse, ``loss.gamma==3`` (an :class:`OverrideSyntaxError`);
    - an unknown option of a config group, ``optimizer=adamx``: the closest and all options;
    - an unknown key, ``loss.gama=3`` or ``+loss.gama=3``: the closest and all valid options
      of the config's ``_target_``;
    - a key the config lacks but its target takes, ``trainer.precision=bf16-mixed``: the
      override with the ``+`` that adds it; a ``+`` for a key the config has: without it;
    - a value that does not fit the parameter's annotation (a number, an integer, a bool or
      a choice), ``trainer.max_epochs=abc``, or the type of a plain key's default;
    - anything else Hydra's composition refuses, in Hydra's words.

    Each value of a sweep (``-m loss=focal,dice``) is checked with the first value of the
    other sweeps. With a config directory of its own (``--config-dir``, ``--config-path``)
    or a help flag, the command line is left to Hydra.

    Args:
        args: the command line's arguments (``sys.argv[1:]``).
        config_dir: the folder holding the app's primary config (the library's groups are
            found through lossplug's search-path plugin).
        config_name: the primary config's name (``--config-name`` takes precedence).

    Raises:
        ConfigError: for the first problem found.
    """
    flags = get_args_parser().parse_args(args)
    if flags.help or flags.hydra_help or flags.shell_completion:
        return
    if flags.config_dir or flags.config_path:
        return
    overrides = [_parse_override(line) for line in flags.overrides]
    sweeps = [o.input_line for o in overrides if o.is_sweep_override()]
    if sweeps and not flags.multirun:
        raise ConfigError(
            f"{sweeps[0]} is a sweep: add -m to run one job per value; or write the value as "
            "a list, key=[a,b], or as a string, key='a,b'"
        )
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        for job in _jobs(overrides):
            _check_job(loader, flags.config_name or config_name, job)


@functools.cache
def _override_parser() -> OverridesParser:
    return OverridesParser.create()


def _parse_override(line: str) -> Override:
    """Parse one override, or raise an :class:`OverrideSyntaxError` that shows the fix."""
    try:
        return _override_parser().parse_overrides([line])[0]
    except OverrideParseException as error:
        lines = str(error).splitlines()
        reason = lines[1].split(" expecting ")[0] if len(lines) > 1 else "not an override"
        hint = f"did you mean {line.replace('==', '=', 1)!r}? " if "==" in line else ""
        raise OverrideSyntaxError(
            f"cannot read the override {line!r} ({reason}); {hint}write key=value to set a "
            "key, +key=value to add one, ~key to delete one, and quote a value with special "
            "characters: key='a=b'"
        ) from error


def _jobs(overrides: list[Override]) -> Iterator[list[Override]]:
    """The override lists to check: the first value of every sweep, then each other value."""
    values = [choices for choices in map(_sweep_values, overrides) if choices]
    first = [choices[0] for choices in values]
    yield first
    for index, choices in enumerate(values):
        for choice in choices[1:]:
            yield [*first[:index], choice, *first[index + 1 :]]


def _sweep_values(override: Override) -> list[Override]:
    """Each value of a sweep as an override of its own; ``[override]`` if it is none.

    Sweeps a sweeper samples (``interval(...)``) or resolves later (``glob(...)``) give
    ``[]``: they are left to Hydra.
    """
    if not override.is_sweep_override():
        return [override]
    try:
        values = list(override.sweep_string_iterator())
    except HydraException:
        return []
    return [_parse_override(f"{override.get_key_element()}={value}") for value in values]


def _check_job(loader: ConfigLoader, config_name: str, overrides: list[Override]) -> None:
    """Check one job's overrides: group choices, then keys, then the whole composition."""
    choices = [o for o in overrides if _is_group_choice(loader, o)]
    for choice in choices:
        _check_group_choice(loader, choice)
    cfg = _compose(config_name, choices)
    for override in overrides:
        if override not in choices:
            _check_key(cfg, override)
    _check_interpolations(_compose(config_name, overrides), overrides)


def _is_group_choice(loader: ConfigLoader, override: Override) -> bool:
    return not override.is_delete() and loader.repository.group_exists(override.key_or_group)


def _check_group_choice(loader: ConfigLoader, override: Override) -> None:
    group, value = override.key_or_group, override.value()
    options = loader.get_group_options(group)
    if isinstance(value, str) and options and value not in options:
        raise ConfigError(
            f"{group}: no config named {value!r}.{did_you_mean(value, options)} "
            f"Choose one of: {', '.join(options)}"
        )


def _compose(config_name: str, overrides: list[Override]) -> DictConfig:
    """Compose the config with ``overrides``; Hydra's refusal becomes a one-line error."""
    try:
        return compose(config_name, overrides=[o.input_line for o in overrides])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_line(str(error))) from error


def _check_interpolations(cfg: DictConfig, overrides: list[Override]) -> None:
    """Resolve every ``${...}`` an override sets (but ``${hydra:...}``, known only in a run)."""
    for override in overrides:
        value = override.value()
        if not (isinstance(value, str) and "${" in value) or "hydra:" in value:
            continue
        try:
            OmegaConf.select(cfg, override.key_or_group)
        except OmegaConfBaseException as error:
            reason = str(error).splitlines()[0]
            raise ConfigError(
                f"{override.input_line}: {reason}; an interpolation names a key of the config, "
                "e.g. ${seed}"
            ) from error


def _check_key(cfg: DictConfig, override: Override) -> None:
    """Check a ``key=value`` override against the composed config and the key's target."""
    key = override.key_or_group
    if override.is_delete() or override.package is not None or key.split(".")[0] == "hydra":
        return
    *path, option = key.split(".")
    adds = override.is_add() or override.is_force_add()
    value_text = override.input_line.split("=", 1)[1]
    node: Any = cfg
    for depth, part in enumerate(path):
        if not isinstance(node, DictConfig) or (part not in node and adds):
            return
        if part not in node:
            raise _missing_key(node, ".".join(path[:depth]), part, key, value_text)
        node = current_value(node, part)
    if not isinstance(node, DictConfig):
        return
    where = ".".join(path)
    if option in node and override.is_add():
        raise ConfigError(
            f"{key} is already in the config: drop the '+' to change it ({key}={value_text}), "
            f"or write ++{key}={value_text} to set it whether or not it is there"
        )
    if option not in node and not adds:
        raise _missing_key(node, where, option, key, value_text)
    if is_config(node) and option not in node:  # added with a '+'
        _check_option_name(node, where, option)
    check_value(node, where, option, override.value(), key)


def _missing_key(node: DictConfig, where: str, option: str, key: str, value: str) -> ConfigError:
    """The error for a key the config lacks: unknown, or a valid option missing its ``+``."""
    if is_config(node):
        _check_option_name(node, where, option)
        return ConfigError(
            f"{where}: option {option!r} is not in the config yet; add it with a '+': "
            f"+{key}={value}"
        )
    keys = [str(name) for name in node]
    return ConfigError(
        f"{where or 'the config'} has no key {option!r}.{did_you_mean(option, keys)} "
        f"Its keys: {', '.join(keys)}; to add a new one write +{key}={value}"
    )


def _check_option_name(node: DictConfig, where: str, option: str) -> None:
    """Refuse ``option`` in the config ``node`` unless its target (or lossplug) takes it."""
    own: tuple[str, ...] = ()
    group = where.rsplit(".", 1)[-1]  # "optimizer" also where nested, as "model.optimizer"
    if group in ("optimizer", "scheduler"):  # options lossplug reads itself
        own = PARAM_GROUP_OPTIONS if group == "optimizer" else LIGHTNING_SCHEDULER_OPTIONS
    check_options({**OmegaConf.to_container(node), option: None}, where, own)
