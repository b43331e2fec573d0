"""The interface of learned loss weightings: per-term factors that training adapts."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn


class LearnedWeighting(nn.Module):
    r"""Factors :math:`\lambda_i` that multiply the terms' configured weights.

    A :class:`~lossplug.CompositeLoss` with a learned weighting forms
    :math:`\sum_i \lambda_i w_i L_i` plus :meth:`regularizer`. The factors live in the
    module's parameters or buffers, so they follow it across devices and into checkpoints.

    Args:
        num_terms: how many terms are weighted.
    """

    name: ClassVar[str]
    #: whether :meth:`observe` uses each training batch (its factors are the batch's own).
    observes: ClassVar[bool] = False
    #: whether :meth:`observe` needs the shared representation (``CompositeLoss(shared=...)``).
    needs_shared: ClassVar[bool] = False

    def __init__(self, num_terms: int) -> None:
        super().__init__()
        self.num_terms = num_terms

    def factors(self) -> Tensor:
        """The current factor of each term, shape ``(num_terms,)``."""
        raise NotImplementedError

    def regularizer(self) -> Tensor | None:
        """A term the total adds besides the weighted losses, or ``None``."""
        return None

    def observe(self, values: Tensor, shared: Tensor | None = None) -> None:
        """See a training batch's unweighted term values ``(K,)``, graph attached; no-op here.

        :class:`~lossplug.CompositeLoss` calls it before it forms a training total (gradients
        enabled and the values carrying a graph), with the terms stacked in term order
        (``torch.stack``) and, for a weighting that :attr:`needs_shared`, the batch's shared
        representation; :meth:`factors` then gives that batch's factors.
        """

    def set_progress(self, epoch: int, step: int) -> None:
        """Note where training is (the epoch from 0, optimizer steps taken); no-op here."""

    def end_epoch(self, epoch_means: Tensor) -> None:
        """Adapt to a training epoch's mean of each term, shape ``(num_terms,)``; no-op here."""
