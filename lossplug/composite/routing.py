"""Per-term input routing of :class:`~lossplug.CompositeLoss`.

A :class:`Route` says which part of a multi-head output and of the target a term reads (a
key of a dict or an index of a tuple/list), and which activation, if any, turns the selected
prediction into what the term takes; :func:`parse_route` builds one from its configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from lossplug._validation import check_choice

Selector = int | str | None

#: activations a route may apply to its prediction, and the input space each produces.
ACTIVATIONS: dict[str, str] = {"softmax": "probs", "sigmoid": "probs", "log_softmax": "log_probs"}


@dataclasses.dataclass(frozen=True)
class Route:
    """Which part of the model's output and of the target a term reads.

    Args:
        pred: a key of a dict output or an index of a tuple/list output; ``None``: all of it.
        target: the same for the target.
        activation: ``None``, ``"softmax"`` or ``"log_softmax"`` (along dim 1) or
            ``"sigmoid"``, applied to the selected prediction, so e.g. Dice reads
            probabilities and cross-entropy the same logits.
    """

    pred: Selector = None
    target: Selector = None
    activation: str | None = None

    def select(self, owner: str, term: str, pred: Any, target: Any) -> tuple[Tensor, Tensor]:
        """The term's ``(pred, target)``, activation applied.

        Raises:
            ValueError: if the output or target has no such key or index; the message names
                the term, the key and the available keys or length.
        """
        reader = f"term {term!r}"
        pred = select_part(owner, reader, f"inputs.{term}.pred", "pred", pred, self.pred)
        target = select_part(owner, reader, f"inputs.{term}.target", "target", target, self.target)
        if self.activation == "sigmoid":
            pred = pred.sigmoid()
        elif self.activation is not None:
            pred = getattr(pred, self.activation)(dim=1)
        return pred, target


def select_part(owner: str, reader: str, option: str, what: str, value: Any, key: Selector) -> Any:
    """``value[key]`` for a dict, tuple or list, with an error that says what there is.

    Args:
        owner: the loss named in messages.
        reader: who reads the part, in messages (``"term 'dice'"``).
        option: the option that names the part (``"inputs.dice.pred"``).
        what: ``"pred"`` or ``"target"``.
        value: the whole output or target.
        key: a key, an index, or ``None`` for all of ``value``.

    Raises:
        ValueError: if ``value`` has no such key or index; the message names the reader, the
            option, the key and the available keys or length.
    """
    if key is None:
        return value
    if isinstance(value, Mapping):
        if key in value:
            return value[key]
        available = f"its keys are {list(value)}"
    elif isinstance(value, (tuple, list)):
        if isinstance(key, int) and -len(value) <= key < len(value):
            return value[key]
        available = f"it has {len(value)} entries (indices 0 to {len(value) - 1})"
    else:
        available = f"it is a single {type(value).__name__}, not a dict, tuple or list"
    raise ValueError(
        f"{owner}: {reader} reads {what}[{key!r}] (option {option!r}), but {available}"
    )


def check_selector(owner: str, option: str, key: object) -> Selector:
    """A key (str), an index (int) or ``None``, else a ``TypeError`` naming ``option``."""
    if isinstance(key, bool) or not isinstance(key, (int, str, type(None))):
        raise TypeError(
            f"{owner}: option {option!r} must be a key (str), an index (int) or null, got {key!r}"
        )
    return key


def parse_route(owner: str, name: str, spec: Route | Mapping[str, Any], expects: str) -> Route:
    """Term ``name``'s route from its option ``inputs.{name}``, checked.

    Args:
        owner: the loss named in messages.
        name: the term.
        spec: a :class:`Route` or a mapping with any of ``pred``, ``target``, ``activation``.
        expects: the input space the term takes.

    Raises:
        TypeError: if ``spec`` is no mapping, or a key is neither a str, an int nor null.
        ValueError: for an unknown option, or an activation that does not give what the term
            expects.
    """
    option = f"inputs.{name}"
    if not isinstance(spec, Route):
        if not isinstance(spec, Mapping):
            raise TypeError(
                f"{owner}: option {option!r} must be a mapping with pred, target or "
                f"activation, got {spec!r}"
            )
        valid = [field.name for field in dataclasses.fields(Route)]
        unknown = sorted(set(spec) - set(valid))
        if unknown:
            raise ValueError(
                f"{owner}: option {option!r}: unknown option {unknown[0]!r}; "
                f"valid options: {', '.join(valid)}"
            )
        spec = Route(**spec)
    for what in ("pred", "target"):
        check_selector(owner, f"{option}.{what}", getattr(spec, what))
    if spec.activation is not None:
        check_choice(owner, f"{option}.activation", spec.activation, (*ACTIVATIONS, None))
        gives = ACTIVATIONS[spec.activation]
        if expects not in (gives, "values"):
            raise ValueError(
                f"{owner}: option '{option}.activation' is {spec.activation!r}, which "
                f"gives {gives}, but term {name!r} expects {expects}; drop the activation "
                f"or make the term take {gives}"
            )
    return spec
