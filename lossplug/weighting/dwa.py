r"""Dynamic Weight Average (Liu, Johns & Davison 2019).

"End-to-End Multi-Task Learning with Attention", CVPR 2019. Each epoch :math:`t`, a term's
weight follows how fast its loss fell over the two epochs before:

.. math::

    r_i = \frac{L_i(t-1)}{L_i(t-2)}, \qquad
    \lambda_i(t) = K \, \frac{\exp(r_i / T)}{\sum_j \exp(r_j / T)},

with :math:`K` terms, :math:`L_i` the epoch's mean of term :math:`i` and temperature
:math:`T` (larger: more even weights). :math:`\lambda_i = 1` for the first two epochs. A term
that falls slowly (:math:`r_i` near or above 1) gains weight; the weights always sum to
:math:`K`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lossplug._validation import check_number
from lossplug.weighting.base import LearnedWeighting

DEFAULT_TEMPERATURE = 2.0


class DynamicWeightAverage(LearnedWeighting):
    """Epoch-wise weights from the terms' loss ratios; no parameters, no gradient.

    The last two epochs' means and the weights are buffers (checkpointed). The means come
    from :meth:`end_epoch`, which :class:`~lossplug.LossPlugMixin` calls with the exact
    epoch means over every process, so every process computes the same weights. An epoch
    mean of 0 gives the ratio 1 after another 0 and a very large one after a positive mean.

    Args:
        num_terms: how many terms are weighted.
        temperature: the softmax temperature :math:`T > 0` (the paper uses 2).
    """

    name = "dwa"

    lambdas: Tensor
    history: Tensor
    epochs_seen: Tensor

    def __init__(self, num_terms: int, temperature: float = DEFAULT_TEMPERATURE) -> None:
        super().__init__(num_terms)
        self.temperature = check_number(
            "dwa", "temperature", temperature, minimum=0.0, exclusive_minimum=True
        )
        self.register_buffer("lambdas", torch.ones(num_terms))
        self.register_buffer("history", torch.zeros(2, num_terms))  # L(t-2), L(t-1)
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.long))

    def factors(self) -> Tensor:
        r"""The current :math:`\lambda_i`."""
        return self.lambdas

    def end_epoch(self, epoch_means: Tensor) -> None:
        """Record an epoch's means and set the weights for the next epoch (no host sync)."""
        means = epoch_means.detach().to(self.history)
        self.history.copy_(torch.stack([self.history[1], means]))
        self.epochs_seen += 1
        ratios = torch.nan_to_num(
            self.history[1] / self.history[0], nan=1.0, posinf=torch.finfo(means.dtype).max
        )
        weights = self.num_terms * torch.softmax(ratios / self.temperature, dim=0)
        self.lambdas.copy_(torch.where(self.epochs_seen >= 2, weights, self.lambdas))
