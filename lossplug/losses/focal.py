"""Module wrapper over :mod:`lossplug.functional.focal`."""

from __future__ import annotations

from torch import Tensor

from lossplug._validation import check_choice, check_number, check_weight_tensor
from lossplug.functional.focal import FOCAL_MODES, focal
from lossplug.losses.base import LossModule
from lossplug.losses.mode import AUTO, Mode
from lossplug.registry import register_loss


@register_loss("focal")
class FocalLoss(LossModule):
    """Focal loss from logits (Lin et al. 2017); see :func:`lossplug.functional.focal`.

    Args:
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"auto"`` (the default:
            decided from the first batch, see :func:`lossplug.losses.mode.infer_mode`).
        gamma: focusing parameter >= 0 (0 gives cross-entropy).
        alpha: ``None``, a positive-class weight in [0, 1] (binary/multilabel) or one weight
            per class (multiclass/multilabel), kept as a buffer.
        ignore_index: target value left out of the loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import FocalLoss
        >>> loss = FocalLoss(mode="multiclass", gamma=2.0)
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(0.7798)
    """

    name = "focal"
    input_space = "logits"
    repr_options = ("mode", "gamma", "alpha", "alpha_per_class", "ignore_index")
    modes = FOCAL_MODES

    def __init__(
        self,
        mode: Mode = AUTO,
        gamma: float = 2.0,
        alpha: float | list[float] | Tensor | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        check_choice(self.name, "mode", mode, (*FOCAL_MODES, AUTO))
        self.mode = mode
        self.gamma = check_number(self.name, "gamma", gamma, minimum=0.0)
        self.ignore_index = ignore_index
        if isinstance(alpha, (int, float)):
            if mode == "multiclass":
                raise ValueError(
                    "focal: option 'alpha' must be a per-class list in multiclass mode, "
                    f"got {alpha!r}"
                )
            self.alpha: float | None = check_number(
                self.name, "alpha", alpha, minimum=0.0, maximum=1.0
            )
            self.register_buffer("alpha_per_class", None)
        else:
            self.alpha = None
            self.register_buffer("alpha_per_class", check_weight_tensor(self.name, "alpha", alpha))

    @property
    def class_dim(self) -> int | None:
        """Dim 1 (a softmax) in multiclass mode; ``None`` (a sigmoid per element) otherwise."""
        return 1 if self.mode == "multiclass" else None

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of logits against labels (binary/multilabel) or class indices."""
        self.settle(pred, target)
        alpha = self.alpha if self.alpha is not None else self.alpha_per_class
        return focal(
            pred,
            target,
            mode=self.mode,
            gamma=self.gamma,
            alpha=alpha,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """The loss, counted over the non-ignored elements (positions in multiclass mode)."""
        components = self.components(pred, target)
        if self.ignore_index is None:
            return components, {self.name: target.numel()}
        return components, {self.name: (target != self.ignore_index).sum()}
