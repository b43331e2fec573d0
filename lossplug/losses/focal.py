"""Module wrappers over :mod:`lossplug.functional.focal` and :mod:`lossplug.functional.poly`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch import Tensor

from lossplug._validation import check_choice, check_number, check_weight_tensor
from lossplug.functional.focal import FOCAL_MODES, focal
from lossplug.functional.poly import poly1, poly1_base_name, poly1_components
from lossplug.losses.base import LossModule, kept_count
from lossplug.losses.mode import AUTO, Mode
from lossplug.registry import register_loss

Result = TypeVar("Result")


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
                    f"{self.name}: option 'alpha' must be a per-class list in multiclass mode, "
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
        return self._call_functional(focal, pred, target)

    def _call_functional(
        self, loss: Callable[..., Result], pred: Tensor, target: Tensor, **options: float
    ) -> Result:
        """``loss`` (a functional) of the batch at this module's options and ``options``.

        ``mode`` is decided (:meth:`settle`) from the batch first.
        """
        self.settle(pred, target)
        alpha = self.alpha if self.alpha is not None else self.alpha_per_class
        return loss(
            pred,
            target,
            mode=self.mode,
            gamma=self.gamma,
            alpha=alpha,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            **options,
        )

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Each term, counted over the non-ignored elements (positions in multiclass mode)."""
        components = self.components(pred, target)
        return components, dict.fromkeys(components, kept_count(target, self.ignore_index))


@register_loss("poly1")
class Poly1Loss(FocalLoss):
    r"""Poly-1 loss from logits (Leng et al. 2022); see :func:`lossplug.functional.poly1`.

    Cross-entropy (``gamma=0``) or focal loss plus :math:`\varepsilon (1 - p_t)^{\gamma + 1}`,
    logged as the components ``ce`` (or ``focal``) and ``poly``.

    Args:
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"auto"`` (the default:
            decided from the first batch, see :func:`lossplug.losses.mode.infer_mode`).
        epsilon: the added weight of the first polynomial term, >= -1.
        gamma: focusing parameter >= 0; 0 (the default) gives Poly-1 cross-entropy.
        alpha: class balancing of the base term, as :class:`FocalLoss` takes it.
        ignore_index: target value left out of the loss.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import Poly1Loss
        >>> loss = Poly1Loss(epsilon=1.0)
        >>> parts = loss.components(torch.zeros(2, 4), torch.tensor([0, 3]))
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'ce': 1.3863, 'poly': 0.75}
    """

    name = "poly1"
    repr_options = ("mode", "epsilon", "gamma", "alpha", "alpha_per_class", "ignore_index")

    def __init__(
        self,
        mode: Mode = AUTO,
        epsilon: float = 1.0,
        gamma: float = 0.0,
        alpha: float | list[float] | Tensor | None = None,
        ignore_index: int | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(mode, gamma, alpha, ignore_index, reduction)
        self.epsilon = check_number(self.name, "epsilon", epsilon, minimum=-1.0)

    def component_names(self) -> tuple[str, ...]:
        """The base term's name (``ce`` or ``focal``) and ``poly``."""
        return (poly1_base_name(self.gamma), "poly")

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The base loss and the Poly-1 term of logits against labels or class indices."""
        return self._call_functional(poly1_components, pred, target, epsilon=self.epsilon)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The sum of the two terms, reduced once (:func:`lossplug.functional.poly1`)."""
        return self._call_functional(poly1, pred, target, epsilon=self.epsilon)
