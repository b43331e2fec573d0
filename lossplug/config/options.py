"""Config options: a config's keys checked against its ``_target_``'s signature.

A config is checked *before* it is instantiated, so a typo such as ``loss.gama=3`` fails at
once with the valid options, not after a model was built.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from lossplug.config.wording import did_you_mean

#: keys Hydra's ``instantiate`` reads itself; they are not options of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


#: lossplug's parameter-group options in an optimizer config (not passed to the optimizer).
PARAM_GROUP_OPTIONS = ("lr_mult", "norm_decay_mult", "bias_decay_mult")
#: Lightning's ``lr_scheduler_config`` keys in a scheduler config.
LIGHTNING_SCHEDULER_OPTIONS = ("interval", "frequency", "monitor", "strict", "name")


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
    check_keywords(get_object(target_path), config, what, extra, target_path)
    for option, value in config.items():
        if is_config(value):
            check_options(value, f"{what}.{option}")
        elif isinstance(value, Mapping):  # e.g. a composite's {name: loss config}
            for name, item in value.items():
                if is_config(item):
                    check_options(item, f"{what}.{option}.{name}")


def check_keywords(
    target: Any,
    names: Iterable[Any],
    what: str,
    extra: Iterable[str] = (),
    target_name: str | None = None,
) -> None:
    """Check that ``target`` (a class or function) takes every keyword in ``names``.

    Args:
        target: what the keywords are for.
        names: the keywords (Hydra's own keys, ``_target_`` and the like, pass).
        what: how the message names the config, e.g. ``"optimizer"``.
        extra: keywords read by lossplug, not passed to the target.
        target_name: the target's name in the message (default: its import path).

    Raises:
        ConfigError: for a keyword ``target`` does not take; the message lists the valid ones
            and the closest match.
    """
    valid = _parameter_names(target)
    if valid is None:
        return
    known = valid | set(extra)
    name = target_name or f"{target.__module__}.{target.__qualname__}"
    for option in names:
        if option not in known | HYDRA_KEYS:
            raise ConfigError(
                f"{what}: unknown option {option!r} for {name}."
                f"{did_you_mean(str(option), known)} "
                f"Valid options: {', '.join(sorted(known))}"
            )


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
