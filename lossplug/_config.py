"""Hydra-style configs (``{"_target_": ..., option: value}``): checks, conversion, errors.

A config is checked against its target's signature *before* it is instantiated, so a typo
such as ``loss.gama=3`` fails at once with the valid options, not after a model was built.
A command line is checked before Hydra runs it (:func:`check_command_line`), and the errors
a user's config causes are printed as one line that says what to fix, not as a trace
(:func:`one_line_errors`); ``HYDRA_FULL_ERROR=1`` brings the trace back.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import linecache
import os
import re
import sys
import types
import typing
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from hydra import compose, initialize_config_module
from hydra._internal.utils import get_args_parser
from hydra.core.config_loader import ConfigLoader
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, InstantiationException, OverrideParseException
from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

#: keys Hydra's ``instantiate`` reads itself; they are not options of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_recursive_", "_convert_", "_args_"})


class ConfigError(ValueError):
    """A config names an option its target does not take, or holds an invalid value."""


class OverrideSyntaxError(ConfigError):
    """A command-line override Hydra cannot parse: a usage error (exit code 2)."""


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
                raise ConfigError(
                    f"{what}: unknown option {option!r} for {target_path}."
                    f"{_did_you_mean(str(option), known)} "
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
        config_module: the module holding the primary config.
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
    with initialize_config_module(config_module, version_base="1.3"):
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
            f"{group}: no config named {value!r}.{_did_you_mean(value, options)} "
            f"Choose one of: {', '.join(options)}"
        )


def _compose(config_name: str, overrides: list[Override]) -> DictConfig:
    """Compose the config with ``overrides``; Hydra's refusal becomes a one-line error."""
    try:
        return compose(config_name, overrides=[o.input_line for o in overrides])
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_one_line(str(error))) from error


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
        node = _current(node, part)
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
    _check_value(node, where, option, override.value(), key)


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
        f"{where or 'the config'} has no key {option!r}.{_did_you_mean(option, keys)} "
        f"Its keys: {', '.join(keys)}; to add a new one write +{key}={value}"
    )


def _check_option_name(node: DictConfig, where: str, option: str) -> None:
    """Refuse ``option`` in the config ``node`` unless its target (or lossplug) takes it."""
    own: tuple[str, ...] = ()
    if where in ("optimizer", "scheduler"):  # options lossplug reads itself
        from lossplug.optim import LIGHTNING_SCHEDULER_OPTIONS, PARAM_GROUP_OPTIONS  # Lightning

        own = PARAM_GROUP_OPTIONS if where == "optimizer" else LIGHTNING_SCHEDULER_OPTIONS
    check_options({**OmegaConf.to_container(node), option: None}, where, own)


def _current(node: DictConfig, key: str) -> Any:
    """``node[key]``, or ``None`` where it does not resolve yet (``${hydra:...}``)."""
    try:
        return node[key]
    except OmegaConfBaseException:
        return None


class _Allowed(NamedTuple):
    """What a parameter takes: plain types and ``Literal`` values."""

    types: frozenset[type]
    values: tuple[object, ...] = ()


#: the types a value can be checked against; a parameter that takes another is not checked.
_CHECKABLE_TYPES = frozenset({int, float, complex, bool, type(None), Tensor})


def _check_value(node: DictConfig, where: str, option: str, value: object, key: str) -> None:
    """Refuse a value that does not fit what the option takes (a number, a bool, a choice)."""
    if value is None or (isinstance(value, str) and "${" in value):
        return
    allowed = _allowed_for(node, option)
    if allowed is None or not allowed.types <= _CHECKABLE_TYPES or _fits(value, allowed):
        return
    close = _closest(str(value), map(_yaml, allowed.values))
    hint = f"; did you mean {close}?" if close else ""
    current = _current(node, option)
    fitting = current is not None and _fits(current, allowed)
    example = f"; e.g. {key}={_yaml(current)}" if fitting else ""
    subject = f"{where}: option {option!r}" if is_config(node) else key
    raise ConfigError(f"{subject} takes {_describe(allowed)}, got {value!r}{hint}{example}")


def _allowed_for(node: DictConfig, option: str) -> _Allowed | None:
    """What ``option`` takes: its target's annotation, or for a plain key its default's type."""
    if is_config(node):
        try:  # a target that is not there, or annotations that do not resolve: no check
            target = get_object(node["_target_"])
            function = target.__init__ if inspect.isclass(target) else target
            annotation = typing.get_type_hints(function).get(option)
        except (ImportError, ValueError, NameError, TypeError, AttributeError, SyntaxError):
            return None
        return None if annotation is None else _allowed_by(annotation)
    default = _current(node, option)
    if isinstance(default, bool):
        return _Allowed(frozenset({bool}))
    if isinstance(default, (int, float)):
        return _Allowed(frozenset({int, float}))
    return None


def _allowed_by(annotation: Any) -> _Allowed | None:
    """The types and literal values ``annotation`` admits; ``None`` for what cannot be told."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [_allowed_by(argument) for argument in typing.get_args(annotation)]
        if any(part is None for part in parts):
            return None
        return _Allowed(
            frozenset().union(*(part.types for part in parts)),
            tuple(value for part in parts for value in part.values),
        )
    if origin is typing.Literal:
        return _Allowed(frozenset(), typing.get_args(annotation))
    if annotation is None:
        return _Allowed(frozenset({type(None)}))
    if isinstance(annotation, type) and origin is None:
        return _Allowed(frozenset({annotation}))
    return None


def _fits(value: object, allowed: _Allowed) -> bool:
    if any(value == choice and type(value) is type(choice) for choice in allowed.values):
        return True
    if isinstance(value, bool):
        return bool in allowed.types
    if isinstance(value, int):
        return bool(allowed.types & {int, float, complex, Tensor})
    if isinstance(value, float):
        return bool(allowed.types & {float, complex, Tensor})
    return False


def _describe(allowed: _Allowed) -> str:
    """``allowed`` in words: "a number or null", "one of 16, 32, bf16-mixed"."""
    kinds = []
    if allowed.types & {float, complex, Tensor}:
        kinds.append("a number")
    elif int in allowed.types:
        kinds.append("an integer")
    if bool in allowed.types:
        kinds.append("true or false")
    if allowed.values:
        kinds.append(f"one of {', '.join(dict.fromkeys(map(_yaml, allowed.values)))}")
    if type(None) in allowed.types:
        kinds.append("null")
    return " or ".join(kinds)


def _yaml(value: object) -> str:
    """A value as it is written on the command line: ``true``, ``null``, ``0.1``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def _closest(word: str, options: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(word, list(options), n=1)
    return close[0] if close else None


def _did_you_mean(word: str, options: Iterable[str]) -> str:
    close = _closest(word, options)
    return f" Did you mean {close!r}?" if close else ""


def _one_line(message: str) -> str:
    """A multi-line message on one line, without OmegaConf's key/type footer."""
    footer = ("full_key:", "object_type=", "reference_type=", "Config search path", "provider=")
    lines = (line.strip() for line in message.splitlines())
    return " ".join(line for line in lines if line and not line.startswith(footer))


# -- errors inside the run: one line for the user's mistakes, a trace for the rest -------------


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Print an error the user's config or command line caused as one line, and exit.

    ``Error: <message>`` goes to stderr and the process exits with code 2 for an override
    that cannot be parsed (a usage error) and 1 otherwise. Other exceptions, and every
    exception when ``HYDRA_FULL_ERROR=1`` is set (as Hydra's own), pass through with their
    trace. Wrap a Hydra task's body in it, and :func:`check_command_line` before Hydra runs.

    Yields:
        Nothing; the block runs inside it.
    """
    try:
        yield
    except Exception as error:
        message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else user_error(error)
        if message is None:
            raise
        print(f"Error: {message}", file=sys.stderr)
        sys.exit(2 if isinstance(error, OverrideSyntaxError) else 1)


def user_error(error: BaseException) -> str | None:
    """The one-line message of an error the user's config caused; ``None`` for anything else.

    These are: lossplug's own errors (raised by a ``raise`` statement in lossplug; their
    messages name the option, what was expected and what came), a config's target refusing
    its arguments (a ``ValueError``, ``TypeError`` or ``ImportError`` out of Hydra's
    ``instantiate``), Lightning's ``MisconfigurationException`` and OmegaConf's errors (an
    interpolation that does not resolve). Anything else is a bug and keeps its trace.

    Args:
        error: the exception.

    Returns:
        The message, with the config key it concerns where lossplug's message does not
        name it, or ``None``.
    """
    from_target = isinstance(error, InstantiationException)
    where, cause = _instantiation_cause(error)
    if isinstance(cause, OmegaConfBaseException):
        first_line = (str(cause).splitlines() or [type(cause).__name__])[0]
        return f"{cause.full_key}: {first_line}" if cause.full_key else first_line
    message = _one_line(str(cause)) or type(cause).__name__
    if _raised_by_lossplug(cause):
        return message
    refused = from_target and isinstance(cause, (ValueError, TypeError, ImportError))
    if not (refused or _is_lightning_misconfiguration(cause)):
        return None
    return f"{where}: {message}" if where else message


def _instantiation_cause(error: BaseException) -> tuple[str | None, BaseException]:
    """The error under Hydra's ``InstantiationException`` wrappers, and the innermost key."""
    where = None
    while isinstance(error, InstantiationException) and error.__cause__ is not None:
        found = re.search(r"full_key: (\S+)\s*$", str(error))
        where = found.group(1) if found else where
        error = error.__cause__
    return where, error


def _raised_by_lossplug(error: BaseException) -> bool:
    """Whether a ``raise`` statement in lossplug's code raised ``error``."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    module = trace.tb_frame.f_globals.get("__name__", "")
    if module.split(".")[0] != "lossplug":
        return False
    line = linecache.getline(trace.tb_frame.f_code.co_filename, trace.tb_lineno)
    return line.lstrip().startswith("raise")


def _is_lightning_misconfiguration(error: BaseException) -> bool:
    exceptions = sys.modules.get("lightning.fabric.utilities.exceptions")
    return exceptions is not None and isinstance(error, exceptions.MisconfigurationException)
