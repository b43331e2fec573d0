"""Hydra-style configs (``{"_target_": ..., option: value}``): checks and plain conversion.

A config is checked against its target's signature *before* it is instantiated, so a typo
such as ``loss.gama=3`` fails at once with the valid options, not after a model was built.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

#: keys Hydra's ``instantiate`` reads itself; they are not options of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


class ConfigError(ValueError):
    """A config names an option its target does not take, or holds an invalid value."""


def is_config(obj: object) -> bool:
    """Whether ``obj`` is a config Hydra can instantiate: a mapping with a ``_target_``."""
    return isinstance(obj, Mapping) and "_target_" in obj


def to_plain(obj: Any) -> Any:
    """``obj`` with OmegaConf containers turned into resolved ``dict``/``list``."""
    if isinstance(obj, (DictConfig, ListConfig)):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def split_config(
    config: Mapping[str, Any], keys: Iterable[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate the entries named in ``keys`` from the rest of a config.

    Args:
        config: a config, e.g. an optimizer's with lossplug's parameter-group options.
        keys: the names to take out.

    Returns:
        ``(rest, taken)``: both plain, resolved dicts.
    """
    plain = dict(to_plain(config))
    taken = {key: plain.pop(key) for key in keys if key in plain}
    return plain, taken


def check_options(config: Mapping[str, Any], what: str, extra: Iterable[str] = ()) -> None:
    """Check that every option in a config is a parameter of its ``_target_``, recursively.

    Args:
        config: a config with a ``_target_``.
        what: how the message names the config, e.g. ``"loss"``.
        extra: options that are read by lossplug, not passed to the target.

    Raises:
        ConfigError: for an unknown option; the message lists the valid ones and the
            closest match.
    """
    target_path = config["_target_"]
    valid = _parameter_names(get_object(target_path))
    if valid is not None:
        known = valid | set(extra)
        for option in config:
            if option not in known | HYDRA_KEYS:
                close = difflib.get_close_matches(str(option), known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(
                    f"{what}: unknown option {option!r} for {target_path}.{hint} "
                    f"Valid options: {', '.join(sorted(known))}"
                )
    for option, value in config.items():
        if is_config(value):
            check_options(value, f"{what}.{option}")
        elif isinstance(value, Mapping):  # e.g. a composite's {name: loss config}
            for name, item in value.items():
                if is_config(item):
                    check_options(item, f"{what}.{option}.{name}")


def _parameter_names(target: Any) -> set[str] | None:
    """The keyword parameters ``target`` accepts, or ``None`` if it takes ``**kwargs``."""
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in parameters if p.kind in keyword_kinds}


def check_command_line(
    args: Sequence[str], config_module: str = "lossplug.conf", config_name: str = "train"
) -> None:
    """Catch an unknown option of a config group on the command line before Hydra does.

    Hydra refuses ``loss.gama=3`` with "Key 'gama' is not in struct", which does not say what
    the valid options are. This composes the chosen groups first and raises lossplug's own
    error for such an override, naming the closest and all valid options. Sweeps
    (``loss=a,b``) and overrides Hydra cannot parse are left to Hydra.

    Args:
        args: the command line's arguments (``sys.argv[1:]``).
        config_module: the module holding the primary config.
        config_name: the primary config's name.

    Raises:
        ConfigError: for an override of an option the group's ``_target_`` does not take.
    """
    from lossplug.optim import LIGHTNING_SCHEDULER_OPTIONS, PARAM_GROUP_OPTIONS

    own_options = {"optimizer": PARAM_GROUP_OPTIONS, "scheduler": LIGHTNING_SCHEDULER_OPTIONS}
    overrides = [arg for arg in args if "=" in arg and not arg.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports its own syntax errors
        return
    if any(override.is_sweep_override() for override in parsed):
        return
    choices = [o.input_line for o in parsed if "." not in o.key_or_group and o.package is None]
    with initialize_config_module(config_module, version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=choices)
        except Exception:  # a bad choice: Hydra lists the available options itself
            return
    for override in parsed:
        *path, option = override.key_or_group.split(".")
        if not path or override.is_add() or override.is_force_add() or override.is_delete():
            continue
        node = OmegaConf.select(cfg, ".".join(path))
        if is_config(node) and option not in node:
            candidate = OmegaConf.to_container(node)
            candidate[option] = None
            where = ".".join(path)
            check_options(candidate, where, extra=own_options.get(where, ()))
