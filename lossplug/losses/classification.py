"""Module wrappers over :mod:`lossplug.functional.classification`."""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from lossplug._validation import check_choice, check_number, check_reduction, check_weight_tensor
from lossplug.functional import classification as F
from lossplug.losses.base import LossModule
from lossplug.losses.mode import AUTO
from lossplug.registry import register_loss


@register_loss("cross_entropy")
class CrossEntropyLoss(LossModule):
    """Cross-entropy from logits; see :func:`lossplug.functional.cross_entropy`.

    Args:
        weight: optional per-class weights (a list or tensor), kept as a buffer.
        ignore_index: target value skipped in the loss and the mean.
        label_smoothing: smoothing in [0, 1].
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import CrossEntropyLoss
        >>> loss = CrossEntropyLoss()
        >>> loss(torch.zeros(2, 4), torch.tensor([0, 3]))
        tensor(1.3863)
    """

    name = "cross_entropy"
    input_space = "logits"
    repr_options = ("ignore_index", "label_smoothing")

    def __init__(
        self,
        weight: list[float] | Tensor | None = None,
        ignore_index: int = -100,
        label_smoothing: float = 0.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", check_weight_tensor(self.name, "weight", weight))
        self.ignore_index = int(ignore_index)
        self.label_smoothing = check_number(
            self.name, "label_smoothing", label_smoothing, minimum=0.0, maximum=1.0
        )

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of logits ``(N, C, ...)`` against indices or class probabilities."""
        return F.cross_entropy(
            pred,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
        )

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """The loss, counted over the kept targets (their class weights, with ``weight``)."""
        components = self.components(pred, target)
        if target.is_floating_point():
            return components, {self.name: target.numel() // max(target.shape[1], 1)}
        count = F.kept_target_weight(target, self.ignore_index, self.weight)
        return components, {self.name: count}


@register_loss("bce")
class BCELoss(LossModule):
    """Binary cross-entropy; see :func:`lossplug.functional.bce`.

    Args:
        input: ``"logits"`` (default) or ``"probs"`` for a model that already applies a sigmoid.
        pos_weight: optional positive-class weight, a number or one per class, kept as a buffer.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import BCELoss
        >>> loss = BCELoss()
        >>> loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
        tensor(0.6931)
    """

    name = "bce"
    repr_options = ("input",)
    class_dim = None

    def __init__(
        self,
        input: str = "logits",
        pos_weight: float | list[float] | Tensor | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        check_choice(self.name, "input", input, ("logits", "probs"))
        self.input = input
        self.input_space = input
        if isinstance(pos_weight, (int, float)):
            pos_weight = [check_number(self.name, "pos_weight", pos_weight, minimum=0.0)]
        self.register_buffer("pos_weight", check_weight_tensor(self.name, "pos_weight", pos_weight))

    def forward(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """The loss; ``weight`` is an optional element-wise weight or mask."""
        return F.bce(
            pred,
            target,
            weight=weight,
            pos_weight=self.pos_weight,
            input=self.input,
            reduction=self.reduction,
        )


@register_loss("kl_div")
class KLDivLoss(LossModule):
    """KL(target || pred) from log-probabilities; see :func:`lossplug.functional.kl_div`.

    Args:
        temperature: softening temperature T (results scaled by T², as in distillation).
        log_target: whether targets are log-probabilities.
        dim: the distribution dimension.
        reduction: ``"mean"`` (the KL per distribution), ``"batchmean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import KLDivLoss
        >>> loss = KLDivLoss()
        >>> loss(torch.tensor([[0.5, 0.5]]).log(), torch.tensor([[1.0, 0.0]]))
        tensor(0.6931)
    """

    name = "kl_div"
    input_space = "log_probs"
    repr_options = ("temperature", "log_target", "dim")

    def __init__(
        self,
        temperature: float = 1.0,
        log_target: bool = False,
        dim: int = 1,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.reduction = check_reduction(self.name, reduction, ("mean", "batchmean", "sum", "none"))
        self.temperature = check_number(
            self.name, "temperature", temperature, minimum=0.0, exclusive_minimum=True
        )
        self.log_target = bool(log_target)
        self.dim = int(dim)

    @property
    def class_dim(self) -> int:
        """The distribution dimension, :attr:`dim`."""
        return self.dim

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The divergence of ``target`` from ``pred`` (log-probabilities)."""
        return F.kl_div(
            pred,
            target,
            log_target=self.log_target,
            temperature=self.temperature,
            dim=self.dim,
            reduction=self.reduction,
        )


@register_loss("hinge")
class HingeLoss(LossModule):
    """SVM hinge loss on raw scores; see :func:`lossplug.functional.hinge`.

    Args:
        mode: ``"binary"``, ``"multiclass"`` or ``"auto"`` (the default: decided from the
            first batch, see :func:`lossplug.losses.mode.infer_mode`).
        margin: the margin, >= 0.
        squared: square each hinge term (L2-SVM).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import HingeLoss
        >>> loss = HingeLoss(margin=1.0)
        >>> loss(torch.tensor([0.5, -2.0]), torch.tensor([1, 1]))
        tensor(1.7500)
    """

    name = "hinge"
    input_space = "scores"
    repr_options = ("mode", "margin", "squared")
    modes = ("binary", "multiclass")

    def __init__(
        self,
        mode: Literal["binary", "multiclass", "auto"] = AUTO,
        margin: float = 1.0,
        squared: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        check_choice(self.name, "mode", mode, (*self.modes, AUTO))
        self.mode = mode
        self.margin = check_number(self.name, "margin", margin, minimum=0.0)
        self.squared = bool(squared)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of raw scores against binary labels or class indices."""
        self.settle(pred, target)
        return F.hinge(
            pred,
            target,
            mode=self.mode,
            margin=self.margin,
            squared=self.squared,
            reduction=self.reduction,
        )
