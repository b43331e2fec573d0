r"""Global normalisation: the gradient of the mean over the whole optimizer step.

A loss whose mean runs over counted items (the targets cross-entropy keeps, the pairs or
anchors of a contrastive loss, the samples of a batch) gives each micro-batch and each process
an equal say, whatever its number of items. With gradient accumulation over :math:`A`
micro-batches and :math:`W` data-parallel processes the summed gradient is then

.. math::

    \frac{1}{A W} \sum_{r, m} \nabla \frac{S_{r,m}}{N_{r,m}}
    \quad\text{instead of}\quad
    \nabla \frac{\sum_{r,m} S_{r,m}}{\sum_{r,m} N_{r,m}},

with :math:`S_{r,m}` the sum of the item losses of micro-batch :math:`m` on process :math:`r`
and :math:`N_{r,m}` their count: the two differ as soon as the counts differ.

With ``normalize_loss="global"`` each micro-batch backpropagates its sum :math:`S_{r,m}` (the
mean times its count), and :class:`GlobalNormalizer` adds up the counts. Before the optimizer
steps, one ``all_reduce`` of that one number gives :math:`N = \sum_{r,m} N_{r,m}`, and every
gradient is multiplied by :math:`A W / N`, undoing Lightning's division by :math:`A` and DDP's
average over :math:`W`: the gradient of the mean over the global batch, exactly, before
gradient clipping. It costs one scalar ``all_reduce`` per optimizer step (none on one process)
and one multiply per gradient.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from lossplug._validation import check_choice

#: ``batch``: each micro-batch's own mean (the usual); ``global``: the optimizer step's mean.
NORMALIZE = ("batch", "global")


class GlobalNormalizer:
    """Counts the items of an optimizer step's micro-batches and rescales the gradients.

    Args:
        normalize_loss: ``"batch"`` (do nothing) or ``"global"``.
    """

    def __init__(self, normalize_loss: str = "batch") -> None:
        check_choice("LossPlugMixin", "normalize_loss", normalize_loss, NORMALIZE)
        self.normalize_loss = normalize_loss
        self._count: Tensor | None = None

    @property
    def on(self) -> bool:
        """Whether the step's mean is global."""
        return self.normalize_loss == "global"

    def batch_sum(self, loss: str, total: Tensor, counts: Mapping[str, Tensor | int]) -> Tensor:
        """The micro-batch's sum of item losses, its count added to the step's.

        Args:
            loss: the criterion's name, for the error.
            total: the micro-batch's mean loss.
            counts: each component's count, as ``measured_components`` gives them.

        Returns:
            ``total`` times the count the components share.

        Raises:
            ValueError: when the components are counted over different items (e.g.
                contrastive's positive and negative pairs): no one count makes the mean.
        """
        first, *others = counts.values()
        count = torch.as_tensor(first, device=total.device)
        # components that share one count object (InfoNCE's, SupCon's) need no host sync
        differing = [
            other
            for other in others
            if other is not first
            and not torch.equal(torch.as_tensor(other, device=total.device), count)
        ]
        if differing:
            raise ValueError(
                f"LossPlugMixin: normalize_loss='global' needs the loss's components counted over "
                f"the same items, but {loss}'s are counted over different ones "
                f"({', '.join(f'{name}: {int(n)}' for name, n in counts.items())}); use "
                f"normalize_loss='batch' for it"
            )
        self._count = count if self._count is None else self._count + count
        return total * count.to(total.dtype)

    def discard(self) -> None:
        """Forget the step's count: its optimizer step was dropped (``on_nonfinite="skip"``)."""
        self._count = None

    def rescale(self, parameters: Iterable[Tensor], accumulated: int, world_size: int) -> None:
        """Turn the step's summed gradients into the gradient of its global mean; reset.

        Args:
            parameters: the optimizer's parameters.
            accumulated: Lightning's ``accumulate_grad_batches`` (it divided each loss by it).
            world_size: the processes DDP averaged the gradients over.
        """
        if self._count is None:
            return
        count = self._count.to(torch.float64)
        self._count = None
        if dist.is_available() and dist.is_initialized() and world_size > 1:
            dist.all_reduce(count)
        scale = accumulated * world_size / count.clamp_min(1)
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.mul_(scale.to(parameter.grad.dtype))
