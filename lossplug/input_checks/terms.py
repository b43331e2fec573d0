"""The losses of a criterion, each with the input it receives and how messages name it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import nn

from lossplug.losses.base import LossModule


@dataclass(frozen=True)
class Term:
    """A loss and the input it receives, with its label in messages and its config path."""

    label: str
    path: str
    loss: LossModule
    pred: Any
    target: Any


def named_terms(
    criterion: LossModule, pred: Any, target: Any, label: str = "", path: str = "loss"
) -> Iterator[Term]:
    """The losses that receive a prediction: the criterion, or each term of a composite.

    A composite (a loss with a ``terms`` ``ModuleDict``) is opened, nested ones too; a term
    with a route (``routes[name].select``, see :class:`lossplug.CompositeLoss`) gets its part
    of the output and target.

    Args:
        criterion: a loss module.
        pred: its prediction.
        target: its target.
        label: how messages name ``criterion`` (default: its name).
        path: its config path, for the fixes a message suggests (``loss.terms.dice``).

    Yields:
        One :class:`Term` per loss that is not itself a composite.
    """
    label = label or loss_name(criterion)
    terms = getattr(criterion, "terms", None)
    if not isinstance(terms, nn.ModuleDict):
        yield Term(label, path, criterion, pred, target)
        return
    routes = getattr(criterion, "routes", {})
    for key, term in terms.items():
        term_pred, term_target = pred, target
        if key in routes:
            term_pred, term_target = routes[key].select(criterion.name, key, pred, target)
        yield from named_terms(
            term,
            term_pred,
            term_target,
            f"{label} term {key!r} ({loss_name(term)})",
            f"{path}.terms.{key}",
        )


def loss_name(loss: LossModule) -> str:
    """How messages name a loss: its registry name, or a wrapped callable's name."""
    return str(getattr(loss, "loss_name", loss.name))
