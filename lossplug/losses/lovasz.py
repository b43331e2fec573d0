"""Module wrappers over :mod:`lossplug.functional.lovasz`: Lovász-softmax and Lovász hinge."""

from __future__ import annotations

from torch import Tensor

from lossplug.functional import lovasz as F
from lossplug.losses.base import LossModule
from lossplug.registry import register_loss


@register_loss("lovasz_softmax")
class LovaszSoftmaxLoss(LossModule):
    """Lovász-softmax loss (Berman et al. 2018), a convex surrogate of the mean Jaccard loss.

    See :func:`lossplug.functional.lovasz.lovasz_softmax` for the formula and the options.
    ``pred`` holds logits (or probabilities with ``input="probs"``) ``(N, C, *)``, ``target``
    class indices ``(N, *)``.

    Example:
        >>> import torch
        >>> from lossplug.losses import LovaszSoftmaxLoss
        >>> loss = LovaszSoftmaxLoss(per_image=True)
        >>> logits = torch.tensor([[[2.0, -1.0, 0.0], [0.0, 1.0, 0.5]]])  # (N, C, positions)
        >>> loss(logits, torch.tensor([[0, 1, 1]]))
        tensor(0.2484)
    """

    name = "lovasz_softmax"
    repr_options = ("input", "per_image", "classes", "ignore_index")

    def __init__(
        self,
        *,
        input: F.InputKind = "logits",
        per_image: bool = False,
        classes: F.Classes = "present",
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        F.check_lovasz_softmax_options(
            self.name, input=input, per_image=per_image, classes=classes, ignore_index=ignore_index
        )
        self.input = input
        self.input_space = input
        self.per_image = per_image
        self.classes = classes
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of ``pred`` (logits or probabilities, per ``input``) against ``target``."""
        return F.lovasz_softmax(
            pred,
            target,
            input=self.input,
            per_image=self.per_image,
            classes=self.classes,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )


@register_loss("lovasz_hinge")
class LovaszHingeLoss(LossModule):
    """Lovász hinge loss (Berman et al. 2018), a convex surrogate of the binary Jaccard loss.

    See :func:`lossplug.functional.lovasz.lovasz_hinge` for the formula and the options.
    ``pred`` holds binary logits ``(N, *)`` or ``(N, 1, *)``, ``target`` {0, 1} of the same
    shape.

    Example:
        >>> import torch
        >>> from lossplug.losses import LovaszHingeLoss
        >>> loss = LovaszHingeLoss()
        >>> logits = torch.tensor([[2.0, -1.0, 0.5, -3.0]])
        >>> loss(logits, torch.tensor([[1, 0, 0, 0]]))
        tensor(0.7500)
    """

    name = "lovasz_hinge"
    input_space = "logits"
    class_dim = None
    repr_options = ("per_image", "ignore_index")

    def __init__(
        self, *, per_image: bool = True, ignore_index: int | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        F.check_lovasz_options(self.name, per_image=per_image, ignore_index=ignore_index)
        self.per_image = per_image
        self.ignore_index = ignore_index

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of binary logits ``pred`` against ``target``."""
        return F.lovasz_hinge(
            pred,
            target,
            per_image=self.per_image,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )
