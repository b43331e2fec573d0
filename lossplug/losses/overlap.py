"""Module wrappers over :mod:`lossplug.functional.overlap`: Dice and (focal) Tversky losses."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from lossplug._validation import check_choice, check_weight_tensor
from lossplug.functional import overlap as F
from lossplug.losses.base import LossModule
from lossplug.registry import register_loss


class _OverlapLoss(LossModule):
    """Options shared by the overlap losses, validated when the loss is built.

    Sets :attr:`input_space` from ``input`` and keeps ``weight`` as a buffer, so it follows the
    module across devices and into its ``state_dict``.
    """

    repr_options = ("mode", "input", "smooth_nr", "smooth_dr", "batch", "include_background")

    def __init__(
        self,
        *,
        mode: F.Mode,
        input: F.InputKind,
        smooth_nr: float,
        smooth_dr: float,
        batch: bool,
        include_background: bool,
        ignore_index: int | None,
        weight: Tensor | Sequence[float] | None,
        reduction: str,
    ) -> None:
        super().__init__(reduction)
        F.check_overlap_options(
            self.name,
            mode=mode,
            input=input,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            include_background=include_background,
            ignore_index=ignore_index,
        )
        self.mode = mode
        self.input = input
        self.input_space = input
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.include_background = include_background
        self.ignore_index = ignore_index
        self.weight: Tensor | None
        self.register_buffer("weight", check_weight_tensor(self.name, "weight", weight))

    @property
    def class_dim(self) -> int | None:
        """Dim 1 (a softmax) in multiclass mode; ``None`` (a sigmoid per element) otherwise."""
        return 1 if self.mode == "multiclass" else None

    def _shared_options(self) -> dict[str, object]:
        """The keyword arguments every overlap functional takes, from this module's options."""
        return {
            "mode": self.mode,
            "input": self.input,
            "smooth_nr": self.smooth_nr,
            "smooth_dr": self.smooth_dr,
            "batch": self.batch,
            "include_background": self.include_background,
            "ignore_index": self.ignore_index,
            "weight": self.weight,
            "reduction": self.reduction,
        }


@register_loss("dice")
class DiceLoss(_OverlapLoss):
    """Soft Dice (or Jaccard) loss; see :func:`lossplug.functional.overlap.dice` for the options.

    Example:
        >>> import torch
        >>> from lossplug.losses import DiceLoss
        >>> loss = DiceLoss(input="probs", smooth_nr=0.0, smooth_dr=0.0)
        >>> probs = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]])  # (N, C, positions)
        >>> loss(probs, torch.tensor([[0, 1]]))
        tensor(0.1504)
    """

    name = "dice"
    repr_options = (*_OverlapLoss.repr_options, "jaccard")

    def __init__(
        self,
        *,
        mode: F.Mode = "multiclass",
        input: F.InputKind = "logits",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
        ignore_index: int | None = None,
        weight: Tensor | Sequence[float] | None = None,
        jaccard: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            mode=mode,
            input=input,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            include_background=include_background,
            ignore_index=ignore_index,
            weight=weight,
            reduction=reduction,
        )
        check_choice(self.name, "jaccard", jaccard, (False, True))
        self.jaccard = jaccard

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of ``pred`` (logits or probabilities, per ``input``) against ``target``."""
        return F.dice(pred, target, jaccard=self.jaccard, **self._shared_options())


@register_loss("tversky")
class TverskyLoss(_OverlapLoss):
    """(Focal) Tversky loss; see :func:`lossplug.functional.overlap.tversky` for the options.

    Example:
        >>> import torch
        >>> from lossplug.losses import TverskyLoss
        >>> loss = TverskyLoss(input="probs", alpha=0.3, beta=0.7, smooth_nr=0.0, smooth_dr=0.0)
        >>> probs = torch.tensor([[[0.9, 0.2], [0.1, 0.8]]])  # (N, C, positions)
        >>> loss(probs, torch.tensor([[0, 1]]))
        tensor(0.1507)
    """

    name = "tversky"
    repr_options = (*_OverlapLoss.repr_options, "alpha", "beta", "gamma")

    def __init__(
        self,
        *,
        mode: F.Mode = "multiclass",
        input: F.InputKind = "logits",
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
        ignore_index: int | None = None,
        weight: Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            mode=mode,
            input=input,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            include_background=include_background,
            ignore_index=ignore_index,
            weight=weight,
            reduction=reduction,
        )
        F.check_tversky_options(self.name, alpha=alpha, beta=beta, gamma=gamma)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.gamma = float(gamma)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of ``pred`` (logits or probabilities, per ``input``) against ``target``."""
        return F.tversky(
            pred,
            target,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            **self._shared_options(),
        )
