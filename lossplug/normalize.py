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
gradient clipping.

**Components counted over different items.** A loss's components fall into count groups
(:meth:`~lossplug.LossModule.count_groups`): contrastive's ``pos`` and ``neg`` are counted over
the positive and the negative pairs, Dice + cross-entropy's over samples and kept positions, a
composite's terms each over its own items. With groups :math:`g = 1, \dots, G`, weights
:math:`w_c` as the loss applies them and :math:`n_{g,r,m}` the count group :math:`g` shares in
micro-batch :math:`m` of process :math:`r`, the step's gradient is

.. math::

    \sum_g \frac{\nabla S_g}{N_g}, \qquad
    S_g = \sum_{r,m} n_{g,r,m} \sum_{c \in g} w_c L_{c,r,m}, \qquad
    N_g = \sum_{r,m} n_{g,r,m} .

Each :math:`N_g` is known only after the step's last micro-batch, so no one rescale gives it.
Each micro-batch takes the gradients of its sums of groups :math:`1, \dots, G - 1` with
``torch.autograd.grad`` (the graph kept for the backward that follows) and adds them to one
buffer per group; ``.grad`` and DDP's reducer, which syncs ``.grad``, never see them. Its
backward (Lightning's) runs on the sum of the last group, which also carries what the loss
adds beyond its weighted components (a learned weighting's regulariser) and 0 times the other
groups' sums, so that every parameter they reach gets a gradient as DDP expects. Before the
optimizer steps, one ``all_reduce`` of the :math:`G` counts and one of the buffers, then

.. math::

    \text{grad} \leftarrow \frac{A W}{N_G}\, \text{grad} + \sum_{g < G} \frac{B_g}{N_g},

:math:`B_g` being group :math:`g`'s buffer summed over the processes. A group that counts
nothing in the whole step adds nothing (its sums are 0); where that is the last group, the
regulariser's gradient is left out of that step.

**Cost.** One group (cross-entropy, focal, the regression losses, triplet, InfoNCE, SupCon):
one ``all_reduce`` of one number per optimizer step (none on one process) and one multiply
per gradient. :math:`G` groups: per micro-batch, :math:`G - 1` more backward passes through
the loss's graph (from the loss down to every parameter); per optimizer step, one
``all_reduce`` of :math:`G` numbers and one of :math:`(G - 1) P` numbers (:math:`P` the
trainable parameters' elements), and memory for those :math:`(G - 1) P` numbers.
``python -m benchmarks.bench_normalize`` measures both against ``normalize_loss="batch"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.distributed as dist
from torch import Tensor

from lossplug._gradients import term_gradients
from lossplug._validation import check_choice
from lossplug.losses.base import LossModule, sum_components

#: ``batch``: each micro-batch's own mean (the usual); ``global``: the optimizer step's mean.
NORMALIZE = ("batch", "global")


class GlobalNormalizer:
    """Counts the items of an optimizer step's micro-batches and forms the step's gradient.

    Args:
        normalize_loss: ``"batch"`` (do nothing) or ``"global"``.
    """

    def __init__(self, normalize_loss: str = "batch") -> None:
        check_choice("LossPlugMixin", "normalize_loss", normalize_loss, NORMALIZE)
        self.normalize_loss = normalize_loss
        #: whether the backpropagated loss is scaled (a ``GradScaler``, ``precision="16-mixed"``);
        #: the buffers of a loss of several count groups are taken from the unscaled loss (so
        #: small float16 gradients underflow there) and the scaler never checks them for
        #: overflow, so such a loss is refused.
        self.loss_scaling = False
        self._counts: Tensor | None = None  # each group's count over the step so far
        self._buffers: Tensor | None = None  # (groups - 1, parameters' elements)
        self._parameters: list[Tensor] = []  # the buffers' parameters, in order

    @property
    def on(self) -> bool:
        """Whether the step's mean is global."""
        return self.normalize_loss == "global"

    def batch_sum(
        self,
        criterion: LossModule,
        total: Tensor,
        components: Mapping[str, Tensor],
        counts: Mapping[str, Tensor | int],
        parameters: Iterable[Tensor],
    ) -> Tensor:
        """What a micro-batch backpropagates; the gradients of its other count groups kept.

        Args:
            criterion: the loss, for its count groups and weighted terms.
            total: the micro-batch's loss, ``criterion.total(components)``.
            components: the micro-batch's components (means), graph attached.
            counts: each component's count, as ``measured_components`` gives them.
            parameters: the parameters the optimizer steps (read for a loss of several
                count groups, at the step's first micro-batch).

        Returns:
            The last count group's sum (with the loss's terms beyond its components, and 0
            times the other groups' sums); for a loss of one group, ``total`` times its count.

        Raises:
            ValueError: when components the loss puts in one count group are counted over
                different items in this batch, or for a loss of several groups with a scaled
                loss (``loss_scaling``).
        """
        groups = criterion.count_groups(tuple(counts))
        shared = torch.stack(
            [_group_count(criterion, group, counts, total.device) for group in groups]
        )
        self._counts = shared if self._counts is None else self._counts + shared
        if len(groups) == 1:
            return total * shared[0].to(total.dtype)
        if self.loss_scaling:
            raise ValueError(
                f"LossPlugMixin: normalize_loss='global' keeps the gradients of "
                f"{criterion.name}'s count groups {list(groups)} apart from .grad, without "
                "the loss scaling of precision='16-mixed' (float16 gradients underflow there) "
                "and out of its GradScaler's overflow check. "
                "Fix: precision='bf16-mixed' or '32-true', or normalize_loss='batch'"
            )
        terms = criterion.weighted_terms(components)
        parts = [sum_components({name: terms[name] for name in group}) for group in groups]
        others = [
            part * count.to(part.dtype) for part, count in zip(parts[:-1], shared[:-1], strict=True)
        ]
        if self._buffers is None:
            self._parameters = [p for p in parameters if p.requires_grad]
            self._buffers = term_gradients(others, self._parameters)
        else:
            self._buffers += term_gradients(others, self._parameters)
        last = (total - sum(parts[:-1])) * shared[-1].to(total.dtype)
        return last + 0 * sum(others)

    def discard(self) -> None:
        """Forget the step's counts and buffers: its step was dropped (``on_nonfinite="skip"``)."""
        self._counts = self._buffers = None
        self._parameters = []

    def rescale(self, parameters: Iterable[Tensor], accumulated: int, world_size: int) -> None:
        """Turn the step's gradients into the gradient of its global mean; reset.

        Args:
            parameters: the optimizer's parameters.
            accumulated: Lightning's ``accumulate_grad_batches`` (it divided each loss by it).
            world_size: the processes DDP averaged the gradients over.
        """
        counts, buffers, buffered = self._counts, self._buffers, self._parameters
        self.discard()
        if counts is None:
            return
        if dist.is_available() and dist.is_initialized() and world_size > 1:
            dist.all_reduce(counts)
            if buffers is not None:
                dist.all_reduce(buffers)
        # a group that counts nothing has sums of 0: it adds nothing
        inverse = torch.where(counts > 0, 1 / counts, 0.0)
        scale = accumulated * world_size * inverse[-1]
        for parameter in parameters:
            if parameter.grad is not None:
                parameter.grad.mul_(scale.to(parameter.grad.dtype))
        if buffers is None:
            return
        extra = (inverse[:-1, None].to(buffers.dtype) * buffers).sum(dim=0)
        for parameter, piece in zip(
            buffered, extra.split([p.numel() for p in buffered]), strict=True
        ):
            piece = piece.view_as(parameter).to(parameter.dtype)
            if parameter.grad is None:
                parameter.grad = piece
            else:
                parameter.grad.add_(piece)


def _group_count(
    criterion: LossModule,
    group: tuple[str, ...],
    counts: Mapping[str, Tensor | int],
    device: torch.device,
) -> Tensor:
    """The count a group's components share in a batch.

    Returns:
        The count, a float64 tensor on ``device``.

    Raises:
        ValueError: when they do not share one (a loss whose :meth:`count_groups` is wrong).
    """
    first, *others = (counts[name] for name in group)
    count = torch.as_tensor(first, device=device)
    # components that share one count object (the usual case) need no host sync
    differing = [
        other
        for other in others
        if other is not first and not torch.equal(torch.as_tensor(other, device=device), count)
    ]
    if differing:
        found = ", ".join(f"{name}: {float(counts[name]):g}" for name in group)
        raise ValueError(
            f"LossPlugMixin: normalize_loss='global' needs the components of one count group "
            f"counted over the same items, but {criterion.name}'s {list(group)} are one group "
            f"(its count_groups) with different counts ({found}). Fix: set "
            f"separate_counts = True on the loss class, or override count_groups"
        )
    return count.to(torch.float64)
