"""Command-line values checked against what an option takes: a number, a bool, a choice.

What an option takes comes from its target's annotation (``float | None``,
``Literal["binary", "multiclass"]``) or, for a plain key, from its default's type.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any, NamedTuple

from hydra.utils import get_object
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor

from lossplug.config.options import ConfigError, is_config
from lossplug.config.wording import closest


def current_value(node: DictConfig, key: str) -> Any:
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


def check_value(node: DictConfig, where: str, option: str, value: object, key: str) -> None:
    """Refuse a value that does not fit what the option takes (a number, a bool, a choice)."""
    if value is None or (isinstance(value, str) and "${" in value):
        return
    allowed = _allowed_for(node, option)
    if allowed is None or not allowed.types <= _CHECKABLE_TYPES or _fits(value, allowed):
        return
    close = closest(str(value), map(_yaml, allowed.values))
    hint = f"; did you mean {close}?" if close else ""
    current = current_value(node, option)
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
    default = current_value(node, option)
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
