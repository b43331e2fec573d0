"""Module wrappers over :mod:`lossplug.functional.overlap`.

Dice, (focal) Tversky, generalized Dice and Dice + CE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from lossplug._validation import check_choice, check_number, check_weight_tensor
from lossplug.functional import overlap as F
from lossplug.functional.classification import kept_target_weight
from lossplug.losses.base import LossModule, MultiTermLoss, batch_count
from lossplug.losses.mode import Mode
from lossplug.registry import register_loss


class _OverlapLoss(LossModule):
    """Options shared by the overlap losses, validated when the loss is built.

    Sets :attr:`input_space` from ``input``. Besides the functional's modes, ``mode`` takes
    ``"auto"``: decided from the first batch (:func:`lossplug.losses.mode.infer_mode`).
    """

    repr_options = ("mode", "input", "smooth_nr", "smooth_dr", "batch", "include_background")
    modes = F.MODES

    def __init__(
        self,
        *,
        mode: Mode,
        input: F.InputKind,
        smooth_nr: float,
        smooth_dr: float,
        batch: bool,
        include_background: bool,
        ignore_index: int | None,
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
            auto_mode=True,
        )
        self.mode = mode
        self.input = input
        self.input_space = input
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.include_background = include_background
        self.ignore_index = ignore_index

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
            "reduction": self.reduction,
        }


class _ClassWeightedOverlapLoss(_OverlapLoss):
    """An overlap loss averaged over classes with optional per-class ``weight``.

    Keeps ``weight`` as a buffer, so it follows the module across devices and into its
    ``state_dict``.
    """

    def __init__(self, *, weight: Tensor | Sequence[float] | None, **options: object) -> None:
        super().__init__(**options)
        self.weight: Tensor | None
        self.register_buffer("weight", check_weight_tensor(self.name, "weight", weight))

    def _shared_options(self) -> dict[str, object]:
        """The shared options and the class weights."""
        return {**super()._shared_options(), "weight": self.weight}


@register_loss("dice")
class DiceLoss(_ClassWeightedOverlapLoss):
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
        mode: Mode = "multiclass",
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
        self.settle(pred, target)
        return F.dice(pred, target, jaccard=self.jaccard, **self._shared_options())


@register_loss("tversky")
class TverskyLoss(_ClassWeightedOverlapLoss):
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
        mode: Mode = "multiclass",
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
        self.settle(pred, target)
        return F.tversky(
            pred,
            target,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            **self._shared_options(),
        )


@register_loss("generalized_dice")
class GeneralizedDiceLoss(_OverlapLoss):
    """Generalized Dice loss (Sudre et al. 2017), classes weighted by inverse target volume.

    See :func:`lossplug.functional.overlap.generalized_dice` for the formula and the options;
    MONAI's ``GeneralizedDiceLoss`` for the same options (``w_type`` there is ``weight_type``).

    Example:
        >>> import torch
        >>> from lossplug.losses import GeneralizedDiceLoss
        >>> loss = GeneralizedDiceLoss(input="probs", weight_type="simple")
        >>> probs = torch.tensor([[[0.9, 0.2, 0.1], [0.1, 0.8, 0.9]]])  # (N, C, positions)
        >>> loss(probs, torch.tensor([[0, 1, 1]]))
        tensor(0.1463)
    """

    name = "generalized_dice"
    repr_options = (*_OverlapLoss.repr_options, "weight_type")

    def __init__(
        self,
        *,
        mode: Mode = "multiclass",
        input: F.InputKind = "logits",
        weight_type: F.WeightType = "square",
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
        ignore_index: int | None = None,
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
            reduction=reduction,
        )
        check_choice(self.name, "weight_type", weight_type, F.WEIGHT_TYPES)
        self.weight_type = weight_type

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """The loss of ``pred`` (logits or probabilities, per ``input``) against ``target``."""
        self.settle(pred, target)
        return F.generalized_dice(
            pred, target, weight_type=self.weight_type, **self._shared_options()
        )


@register_loss("dice_ce")
class DiceCELoss(MultiTermLoss):
    r"""Dice + cross-entropy from one softmax: ``dice_weight * dice + ce_weight * ce``.

    .. math::

        L = w_\text{dice}\,\Big(1 - \frac{1}{C}\sum_c \frac{2 I_c + s_\text{nr}}
            {P_c + T_c + s_\text{dr}}\Big) + w_\text{ce}\,\frac{1}{|K|}\sum_{i \in K}
            -\log p_{i, y_i}

    over the kept positions :math:`K`, with the per-class statistics of
    :func:`lossplug.functional.dice` (Milletari et al. 2016, "V-Net"). Both terms come from
    :func:`lossplug.functional.dice_ce_components`, one softmax and one backward through it,
    and are logged as the components ``dice`` and ``ce``. With both weights 1 it is MONAI's
    ``DiceCELoss(softmax=True, to_onehot_y=True)``; ``include_background`` concerns the Dice
    term only, as there. For one-hot or soft targets, class weights, label smoothing, scheduled
    or learned weights, use a :class:`~lossplug.CompositeLoss` of a ``dice`` and a
    ``cross_entropy`` term (config ``loss=dice_ce_terms``).

    Args:
        dice_weight: weight of the Dice term, >= 0.
        ce_weight: weight of the cross-entropy term, >= 0.
        smooth_nr: added to the Dice numerator, >= 0.
        smooth_dr: added to the Dice denominator, >= 0.
        batch: Dice statistics summed over the batch (one score per class).
        include_background: keep channel 0 in the Dice term.
        ignore_index: target value left out of both terms.

    Example:
        >>> import torch
        >>> from lossplug.losses import DiceCELoss
        >>> loss = DiceCELoss(smooth_nr=0.0, smooth_dr=0.0)
        >>> logits = torch.tensor([[[2.0, -1.0], [0.0, 1.0]]])  # (N, C, positions)
        >>> parts = loss.components(logits, torch.tensor([[0, 1]]))
        >>> {name: round(value.item(), 4) for name, value in parts.items()}
        {'dice': 0.1192, 'ce': 0.1269}
    """

    name = "dice_ce"
    input_space = "logits"
    separate_counts = True  # Dice counts samples, cross-entropy positions
    repr_options = (
        "dice_weight",
        "ce_weight",
        "smooth_nr",
        "smooth_dr",
        "batch",
        "include_background",
        "ignore_index",
    )

    def __init__(
        self,
        *,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch: bool = False,
        include_background: bool = True,
        ignore_index: int | None = None,
    ) -> None:
        super().__init__("mean")
        F.check_overlap_options(
            self.name,
            mode="multiclass",
            input="logits",
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch=batch,
            include_background=include_background,
            ignore_index=ignore_index,
        )
        self.dice_weight = check_number(self.name, "dice_weight", dice_weight, minimum=0.0)
        self.ce_weight = check_number(self.name, "ce_weight", ce_weight, minimum=0.0)
        self.smooth_nr = float(smooth_nr)
        self.smooth_dr = float(smooth_dr)
        self.batch = batch
        self.include_background = include_background
        self.ignore_index = ignore_index

    def component_names(self) -> tuple[str, ...]:
        """``("dice", "ce")``."""
        return ("dice", "ce")

    def components(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The unweighted Dice and cross-entropy terms of ``pred`` (logits) and class indices."""
        return F.dice_ce_components(
            pred,
            target,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
            batch=self.batch,
            include_background=self.include_background,
            ignore_index=self.ignore_index,
        )

    def measured_components(
        self, pred: Tensor, target: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """Both terms; Dice counts samples, cross-entropy its kept positions."""
        components = self.components(pred, target)
        ignore = -100 if self.ignore_index is None else self.ignore_index
        return components, {"dice": batch_count(pred), "ce": kept_target_weight(target, ignore)}

    def weighted_terms(self, components: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each term times its weight: the total is ``dice_weight * dice + ce_weight * ce``."""
        weights = {"dice": self.dice_weight, "ce": self.ce_weight}
        return {name: weights[name] * value for name, value in components.items()}
