"""Module wrapper over :mod:`lossplug.functional.quantile`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lossplug.functional.quantile import (
    check_quantiles,
    quantile_components,
    quantile_loss,
    quantile_names,
)
from lossplug.losses.base import LossModule, sum_components
from lossplug.registry import register_loss


@register_loss("quantile")
class QuantileLoss(LossModule):
    r"""Pinball loss at several quantile levels (Koenker & Bassett 1978), one column each.

    See :func:`lossplug.functional.quantile_loss`: ``pred`` is ``(..., Q)``, ``target``
    ``(...)``, and the loss is the mean over items and levels. Each level's mean pinball loss
    is logged as a component named after it (:func:`~lossplug.functional.quantile.quantile_names`:
    ``q10``, ``q50``, ``q90`` for 0.1, 0.5, 0.9; ``q2_5`` for 0.025), unweighted, so it reads
    as that level's loss alone; the total is their mean (each weighs :math:`1/Q`).

    Args:
        quantiles: the levels, numbers in (0, 1), strictly increasing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shaped like ``pred``).

    Example:
        >>> import torch
        >>> from lossplug.losses import QuantileLoss
        >>> loss = QuantileLoss(quantiles=[0.1, 0.9])
        >>> pred, target = torch.tensor([[0.0, 1.0], [2.0, 2.0]]), torch.tensor([1.0, 0.0])
        >>> parts = loss.components(pred, target)
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'q10': 0.95, 'q90': 0.1}
        >>> loss.total(parts)
        tensor(0.5250)
    """

    name = "quantile"
    repr_options = ("quantiles",)
    input_space = "values"

    def __init__(
        self, quantiles: Sequence[float] = (0.1, 0.5, 0.9), reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.quantiles = check_quantiles(self.name, quantiles)
        self.names = quantile_names(self.quantiles)

    def component_names(self) -> tuple[str, ...]:
        """One name per level, in the order of :attr:`quantiles`."""
        return self.names

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """Each level's pinball loss, reduced over the items as :attr:`reduction` says."""
        return quantile_components(pred, target, self.quantiles, reduction=self.reduction)

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Each level's mean, counted over the items (the elements of ``target``)."""
        components = self.components(pred, target)
        return components, dict.fromkeys(components, target.numel())

    def weighted_terms(self, components: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each level's term of the total: its mean over :math:`Q` (``"mean"``), else itself."""
        scale = 1.0 / len(self.quantiles) if self.reduction == "mean" else 1.0
        return {name: scale * value for name, value in components.items()}

    def total(self, components: Mapping[str, Tensor]) -> Tensor:
        """The loss from the levels' terms: their sum, or with ``"none"`` the ``(..., Q)`` stack."""
        terms = self.weighted_terms(components)
        if self.reduction == "none":
            return torch.stack(list(terms.values()), dim=-1)
        return sum_components(terms)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of ``(..., Q)`` predictions against ``(...)`` targets."""
        return quantile_loss(pred, target, self.quantiles, reduction=self.reduction)
