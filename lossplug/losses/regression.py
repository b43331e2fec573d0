"""Module wrappers over :mod:`lossplug.functional.regression`."""

from __future__ import annotations

from torch import Tensor

from lossplug._validation import check_bool, check_number
from lossplug.functional import regression as F
from lossplug.losses.base import LossModule
from lossplug.registry import register_loss


@register_loss("mse")
class MSELoss(LossModule):
    """Mean squared error; see :func:`lossplug.functional.mse`.

    Example:
        >>> import torch
        >>> from lossplug.losses import MSELoss
        >>> loss = MSELoss()
        >>> loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 0.0]))
        tensor(2.5000)
    """

    name = "mse"
    input_space = "values"

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.mse(pred, target, weight=weight, reduction=self.reduction)


@register_loss("l1")
class L1Loss(LossModule):
    """Mean absolute error; see :func:`lossplug.functional.l1`.

    Example:
        >>> import torch
        >>> from lossplug.losses import L1Loss
        >>> loss = L1Loss()
        >>> loss(torch.tensor([1.0, -2.0]), torch.tensor([0.0, 0.0]))
        tensor(1.5000)
    """

    name = "l1"
    input_space = "values"

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.l1(pred, target, weight=weight, reduction=self.reduction)


@register_loss("huber")
class HuberLoss(LossModule):
    """Huber loss with threshold ``delta``; see :func:`lossplug.functional.huber`.

    Example:
        >>> import torch
        >>> from lossplug.losses import HuberLoss
        >>> loss = HuberLoss(delta=1.0)
        >>> loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(1.3125)
    """

    name = "huber"
    repr_options = ("delta",)
    input_space = "values"

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.delta = check_number(self.name, "delta", delta, minimum=0.0, exclusive_minimum=True)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.huber(pred, target, delta=self.delta, weight=weight, reduction=self.reduction)


@register_loss("smooth_l1")
class SmoothL1Loss(LossModule):
    """SmoothL1 loss with threshold ``beta``; see :func:`lossplug.functional.smooth_l1`.

    Example:
        >>> import torch
        >>> from lossplug.losses import SmoothL1Loss
        >>> loss = SmoothL1Loss(beta=1.0)
        >>> loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]))
        tensor(1.3125)
    """

    name = "smooth_l1"
    repr_options = ("beta",)
    input_space = "values"

    def __init__(self, beta: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.beta = check_number(self.name, "beta", beta, minimum=0.0)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.smooth_l1(pred, target, beta=self.beta, weight=weight, reduction=self.reduction)


@register_loss("charbonnier")
class CharbonnierLoss(LossModule):
    """Charbonnier loss sqrt(r² + eps²); see :func:`lossplug.functional.charbonnier`.

    Args:
        eps: the smoothing scale, > 0.
        subtract_eps: take ``eps`` off, so that a perfect prediction scores 0.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import CharbonnierLoss
        >>> loss = CharbonnierLoss(eps=1.0, subtract_eps=True)
        >>> loss(torch.tensor([0.0, 3.0]), torch.tensor([0.0, -1.0]))
        tensor(1.5616)
    """

    name = "charbonnier"
    repr_options = ("eps", "subtract_eps")
    input_space = "values"

    def __init__(
        self, eps: float = 1e-3, subtract_eps: bool = False, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        self.eps = check_number(self.name, "eps", eps, minimum=0.0, exclusive_minimum=True)
        self.subtract_eps = check_bool(self.name, "subtract_eps", subtract_eps)

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.charbonnier(
            pred,
            target,
            eps=self.eps,
            subtract_eps=self.subtract_eps,
            weight=weight,
            reduction=self.reduction,
        )
