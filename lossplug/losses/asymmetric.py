"""Module wrapper over :mod:`lossplug.functional.asymmetric`."""

from __future__ import annotations

from torch import Tensor

from lossplug._validation import check_number
from lossplug.functional.asymmetric import asymmetric_components
from lossplug.losses.base import MultiTermLoss, kept_count
from lossplug.registry import register_loss


@register_loss("asymmetric")
class AsymmetricLoss(MultiTermLoss):
    """Asymmetric loss for multi-label classification (Ridnik et al. 2021), from logits.

    See :func:`lossplug.functional.asymmetric`; the positive and negative terms are logged as
    the components ``pos`` and ``neg``. timm's ``AsymmetricLossMultiLabel`` is this loss with
    ``reduction="sum"``.

    Args:
        gamma_pos: focusing of the positives, >= 0.
        gamma_neg: focusing of the negatives, >= 0.
        clip: the probability margin shifted off the negatives, in [0, 1]; 0: none.
        eps: the floor of the probabilities inside the logs, in (0, 1).
        ignore_index: target value left out of the loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import AsymmetricLoss
        >>> loss = AsymmetricLoss()
        >>> parts = loss.components(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]))
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'pos': 0.0635, 'neg': 0.0003}
    """

    name = "asymmetric"
    input_space = "logits"
    class_dim = None
    repr_options = ("gamma_pos", "gamma_neg", "clip", "eps", "ignore_index")

    def __init__(
        self,
        gamma_pos: float = 0.0,
        gamma_neg: float = 4.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.gamma_pos = check_number(self.name, "gamma_pos", gamma_pos, minimum=0.0)
        self.gamma_neg = check_number(self.name, "gamma_neg", gamma_neg, minimum=0.0)
        self.clip = check_number(self.name, "clip", clip, minimum=0.0, maximum=1.0)
        self.eps = check_number(
            self.name, "eps", eps, minimum=0.0, maximum=1.0, exclusive_minimum=True
        )
        self.ignore_index = ignore_index

    def component_names(self) -> tuple[str, ...]:
        """``("pos", "neg")``."""
        return ("pos", "neg")

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The positive and negative terms of logits against multi-label targets."""
        return asymmetric_components(
            pred,
            target,
            gamma_pos=self.gamma_pos,
            gamma_neg=self.gamma_neg,
            clip=self.clip,
            eps=self.eps,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Both terms, counted over the non-ignored elements."""
        components = self.components(pred, target)
        return components, dict.fromkeys(components, kept_count(target, self.ignore_index))
