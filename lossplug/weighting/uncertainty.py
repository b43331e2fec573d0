r"""Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018).

"Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry and Semantics",
CVPR 2018. Each term :math:`i` has a learnable log-variance :math:`s_i = \log \sigma_i^2`:

.. math::

    L = \sum_i \tfrac12 e^{-s_i} L_i + \tfrac12 s_i .

For fixed :math:`L_i` the total is smallest at :math:`s_i = \log L_i`, so a term with a large
loss gets a small effective weight :math:`\tfrac12 e^{-s_i} \to \tfrac{1}{2 L_i}` and each
weighted term tends to :math:`\tfrac12`: the terms are balanced by their scale. The
:math:`\tfrac12 s_i` part keeps the weights from collapsing to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lossplug.weighting.base import LearnedWeighting


class UncertaintyWeighting(LearnedWeighting):
    r"""Learnable log-variances :math:`s_i` (initially 0); factors :math:`\tfrac12 e^{-s_i}`.

    The log-variances are an ``nn.Parameter`` of the criterion, so the optimizer built by
    :class:`~lossplug.LossPlugMixin` trains them with the model and DDP averages their
    gradients like any other parameter's.

    Args:
        num_terms: how many terms are weighted.
    """

    name = "uncertainty"

    def __init__(self, num_terms: int) -> None:
        super().__init__(num_terms)
        self.log_variances = nn.Parameter(torch.zeros(num_terms))

    def factors(self) -> Tensor:
        r""":math:`\tfrac12 e^{-s_i}` for each term."""
        return 0.5 * torch.exp(-self.log_variances)

    def regularizer(self) -> Tensor:
        r""":math:`\sum_i \tfrac12 s_i`."""
        return 0.5 * self.log_variances.sum()
