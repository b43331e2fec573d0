"""What the mixin asks of a criterion and of the terms a model computes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from lossplug._precision import at_least_float32
from lossplug.config import ConfigError
from lossplug.losses.base import LossModule


def check_mean_reduction(criterion: LossModule) -> None:
    """Refuse a criterion (or a composite's term) whose ``reduction`` is not ``"mean"``.

    The mixin trains on the batch mean and logs exact means over the epoch; a ``"sum"``
    would log numbers that grow with the batch size, ``"none"`` no scalar at all.

    Raises:
        lossplug.ConfigError: naming the option path (``loss.reduction``,
            ``loss.terms.dice.reduction``), the value and what to use.
    """
    for path, module in _reductions(criterion, "loss"):
        reduction = getattr(module, "reduction", "mean")
        if reduction != "mean":
            raise ConfigError(
                f"LossPlugMixin: {path}.reduction={reduction!r} is not supported: the mixin "
                f"trains on the batch mean and logs exact per-sample epoch means. Fix: remove "
                f"{path}.reduction or set {path}.reduction=mean; for a sum over the batch, "
                "scale the learning rate instead"
            )


def _reductions(module: nn.Module, path: str) -> list[tuple[str, nn.Module]]:
    """``(option path, module)`` for the criterion and, in a composite, each of its terms."""
    found = [(path, module)]
    terms = getattr(module, "terms", None)
    if isinstance(terms, nn.ModuleDict):
        for name, term in terms.items():
            found += _reductions(term, f"{path}.terms.{name}")
    return found


def check_model_terms(criterion: LossModule, terms: Mapping[str, Any]) -> None:
    """The model's terms must be exactly those the criterion declares, each a tensor.

    Raises:
        ValueError: for a term the loss does not declare, a declared term the model did not
            give, or a term that is not a tensor.
    """
    declared = criterion.model_term_names()
    given = tuple(terms)
    if set(given) != set(declared):
        extra = sorted(set(given) - set(declared))
        missing = sorted(set(declared) - set(given))
        fix = (
            f"the model gives term(s) {extra}, which the loss does not declare; declare "
            f"them in a CompositeLoss: model_terms: {extra} (and weights.{extra[0]})"
            if extra
            else f"the loss declares model term(s) {missing}, which the model did not give; "
            "return them from model_terms() (or pass terms= to compute_loss)"
        )
        raise ValueError(f"LossPlugMixin: {fix}")
    for name, value in terms.items():
        if not isinstance(value, Tensor):
            raise ValueError(
                f"LossPlugMixin: model term {name!r} must be a tensor (a scalar or one value "
                f"per sample), got {type(value).__name__}"
            )


def term_mean(value: Tensor, samples: int) -> tuple[Tensor, int]:
    """A model term as a batch mean and the number of samples it covers.

    A scalar is taken as the batch's mean and covers the batch's ``samples``; a tensor with
    one row per sample (``(B,)`` or ``(B, ...)``) is averaged, covering its ``B`` rows. 16-bit
    terms are averaged in float32, as the losses compute.
    """
    value = at_least_float32(value)
    if value.ndim == 0:
        return value, samples
    return value.mean(), value.shape[0]
