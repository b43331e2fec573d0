r"""Overlap (segmentation) losses: soft Dice, Jaccard, (focal) Tversky and generalized Dice.

Each loss is computed from three per-sample, per-class statistics summed over the spatial
positions, with :math:`p` the predicted probabilities and :math:`t` the target:

.. math::

    I_{n,c} = \sum_s p_{n,c,s}\, t_{n,c,s}, \qquad
    P_{n,c} = \sum_s p_{n,c,s}, \qquad
    T_{n,c} = \sum_s t_{n,c,s},

so :math:`\text{FP} = P - I` and :math:`\text{FN} = T - I`. With ``batch=True`` they are summed
over the batch too (one score per class). A score is computed per class and the losses are
averaged over the classes (macro average, optionally class-weighted) and the samples. False
positives and negatives are never pooled across classes: in multiclass mode the pooled sums are
equal (every pixel wrongly given to one class is missed by another), which would make Tversky's
:math:`\alpha` and :math:`\beta` interchangeable.

Modes:

- ``"binary"``: ``pred`` of logits ``(N, *)`` or ``(N, 1, *)``, ``target`` of the same shape with
  values in {0, 1}; sigmoid.
- ``"multilabel"``: ``pred`` ``(N, C, *)``, one sigmoid per channel, ``target`` a multi-hot
  tensor of the same shape with values in {0, 1}.
- ``"multiclass"``: ``pred`` ``(N, C, *)``, softmax over dim 1; ``target`` either integer class
  indices ``(N, *)`` or a float one-hot/soft target shaped like ``pred`` with values in [0, 1].

``input="probs"`` says ``pred`` already holds probabilities (the sigmoid/softmax is skipped).

Absent classes: when a score's *unsmoothed* denominator is exactly 0 — the class is absent from
both the prediction and the target, e.g. all-zero probabilities on an empty mask — the score is 1
(loss 0), whatever the smoothing, even with ``smooth_nr = smooth_dr = 0``; never NaN. Such
classes stay in the average: they are perfect answers. (Logits never give an exactly zero
prediction, so this only changes results for probability inputs.)

Empty batches: a batch of no sample gives 0. Per sample there is no score to average (the mean
over none is 0, ``reduction="none"`` an empty ``(0, C)`` tensor); with ``batch=True`` every
class is absent from both (empty) sums, so each scores 1 by the rule above and loses 0.

Precision: the statistics are computed in float32 for float16/bfloat16 inputs, whose sums over
a large image overflow (float16 above 65504) or lose all precision, and with autocast off for
their matrix products; the loss is float32, within float32 rounding (relative 1e-5) of the
float32 loss of the same rounded values, and the gradient is the float32 gradient rounded to the
input's dtype (:mod:`lossplug._precision`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._validation import (
    check_binary_values,
    check_choice,
    check_class_target,
    check_floating,
    check_index_option,
    check_min_dims,
    check_number,
    check_reduction,
    check_same_shape,
    check_unit_interval,
    check_weight_tensor,
    explain_class_target_errors,
    value_checks_apply,
)
from lossplug.functional._reduce import reduce_loss
from lossplug.functional._shapes import flatten_from
from lossplug.kernels.dispatch import applies
from lossplug.kernels.softmax_statistics import softmax_overlap_stats

Mode = Literal["binary", "multilabel", "multiclass"]
InputKind = Literal["logits", "probs"]
MODES: tuple[str, ...] = ("binary", "multilabel", "multiclass")
INPUTS: tuple[str, ...] = ("logits", "probs")
WeightType = Literal["square", "simple", "uniform"]
WEIGHT_TYPES: tuple[str, ...] = ("square", "simple", "uniform")


class OverlapStats(NamedTuple):
    """Per-class overlap statistics, each of shape ``(N, C)``, or ``(C,)`` for batch statistics."""

    intersection: Tensor
    pred_sum: Tensor
    target_sum: Tensor


def dice(
    pred: Tensor,
    target: Tensor,
    *,
    mode: Mode = "multiclass",
    input: InputKind = "logits",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    include_background: bool = True,
    ignore_index: int | None = None,
    weight: Tensor | None = None,
    jaccard: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""Soft Dice loss (Milletari et al. 2016, "V-Net"), or the soft Jaccard loss.

    Per sample :math:`n` and class :math:`c` (MONAI's smoothing convention):

    .. math::

        \text{Dice}_{n,c} = \frac{2 I_{n,c} + s_{nr}}{P_{n,c} + T_{n,c} + s_{dr}}, \qquad
        \text{Jaccard}_{n,c} = \frac{I_{n,c} + s_{nr}}{P_{n,c} + T_{n,c} - I_{n,c} + s_{dr}},

    and the loss is :math:`L_{n,c} = 1 - \text{score}_{n,c}`, reduced as

    .. math::

        \text{mean} = \frac{1}{N} \sum_n \frac{\sum_c w_c L_{n,c}}{\sum_c w_c}, \qquad
        \text{sum} = \sum_{n,c} w_c L_{n,c}.

    A class absent from both prediction and target (unsmoothed denominator exactly 0) scores 1;
    see the module docstring. MONAI's Jaccard, :math:`(2I + s_{nr}) / (2(P + T - I) + s_{dr})`,
    equals this one with both smoothing terms halved.

    Args:
        pred: logits (or probabilities with ``input="probs"``); see the module docstring for
            the shapes of each ``mode``.
        target: the target, as the ``mode`` requires.
        mode: ``"binary"``, ``"multilabel"`` or ``"multiclass"``.
        input: ``"logits"`` (sigmoid/softmax applied here) or ``"probs"``.
        smooth_nr: added to the numerator, >= 0 (and at most float32's largest, 3.4e38).
        smooth_dr: added to the denominator, >= 0 (and at most float32's largest).
        batch: sum the statistics over the batch, giving one score per class.
        include_background: keep channel 0; ``False`` drops it (needs at least two channels,
            so it is an error in binary mode).
        ignore_index: target value whose positions are left out of every sum (the
            prediction's mass there too); class-index targets in multiclass mode, any target in
            binary/multilabel mode.
        weight: per-class weights ``(C,)``, >= 0, one per channel of ``pred`` (with
            ``include_background=False`` the first one is dropped with its channel; MONAI
            instead expects ``C - 1`` values then).
        jaccard: compute the soft Jaccard (IoU) loss instead of Dice.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``; ``"none"`` returns the class-weighted
            per-class losses :math:`w_c L_{n,c}`, shape ``(N, C)`` (``(C,)`` with ``batch``;
            ``C`` counts the kept channels).

    Returns:
        The loss; float32 for float16/bfloat16 ``pred``.
    """
    name = "dice"
    check_overlap_options(
        name,
        mode=mode,
        input=input,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    check_choice(name, "jaccard", jaccard, (False, True))
    return _overlap_loss(
        name,
        partial(_dice_loss, smooth_nr=smooth_nr, smooth_dr=smooth_dr, jaccard=jaccard),
        pred,
        target,
        mode=mode,
        input=input,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
    )


def tversky(
    pred: Tensor,
    target: Tensor,
    *,
    mode: Mode = "multiclass",
    input: InputKind = "logits",
    alpha: float = 0.5,
    beta: float = 0.5,
    gamma: float = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    include_background: bool = True,
    ignore_index: int | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Tversky loss (Salehi et al. 2017) and focal Tversky loss (Abraham & Khan 2019).

    Per sample :math:`n` and class :math:`c`, with :math:`\text{FP} = P - I` and
    :math:`\text{FN} = T - I`:

    .. math::

        \text{TI}_{n,c} = \frac{I_{n,c} + s_{nr}}
            {I_{n,c} + \alpha\,\text{FP}_{n,c} + \beta\,\text{FN}_{n,c} + s_{dr}}, \qquad
        L_{n,c} = \left(1 - \text{TI}_{n,c}\right)^{\gamma},

    reduced over classes and samples as in :func:`dice`. :math:`\alpha` weighs false
    positives and :math:`\beta` false negatives; :math:`\beta > \alpha` favours recall.
    :math:`\alpha = \beta = \tfrac12`, :math:`\gamma = 1` is the Dice loss with both smoothing
    terms doubled. Abraham & Khan write the focal exponent as :math:`1/\gamma` with
    :math:`\gamma = 4/3`: that is ``gamma=0.75`` here. For ``gamma < 1`` the gradient of
    :math:`(1 - \text{TI})^\gamma` is infinite at :math:`\text{TI} = 1`; for any
    ``gamma != 1`` the loss is 0 with a zero gradient wherever :math:`\text{TI} \ge 1` (a
    ``smooth_nr`` larger than ``smooth_dr`` can push TI above 1), never inf or NaN.

    A class absent from both prediction and target (unsmoothed denominator exactly 0) scores 1;
    see the module docstring.

    Args:
        pred: logits (or probabilities with ``input="probs"``).
        target: the target, as the ``mode`` requires.
        mode: ``"binary"``, ``"multilabel"`` or ``"multiclass"``.
        input: ``"logits"`` or ``"probs"``.
        alpha: weight of the false positives, >= 0.
        beta: weight of the false negatives, >= 0.
        gamma: focal exponent, > 0; 1 is the plain Tversky loss.
        smooth_nr: added to the numerator, >= 0 (and at most float32's largest, 3.4e38).
        smooth_dr: added to the denominator, >= 0 (and at most float32's largest).
        batch: sum the statistics over the batch, giving one score per class.
        include_background: keep channel 0 (see :func:`dice`).
        ignore_index: target value whose positions are left out (see :func:`dice`).
        weight: per-class weights ``(C,)`` (see :func:`dice`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (see :func:`dice`).

    Returns:
        The loss; float32 for float16/bfloat16 ``pred``.
    """
    name = "tversky"
    check_overlap_options(
        name,
        mode=mode,
        input=input,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    check_tversky_options(name, alpha=alpha, beta=beta, gamma=gamma)

    def per_class_loss(stats: OverlapStats) -> Tensor:
        inter = stats.intersection
        false_pos = stats.pred_sum - inter
        false_neg = stats.target_sum - inter
        # the denominator's part beyond the numerator: alpha * FP + beta * FN
        excess = torch.add(false_pos * alpha, false_neg, alpha=beta)
        loss = _one_minus_smoothed_ratio(excess, excess + inter, smooth_nr, smooth_dr)
        return _focal_power(loss, gamma)

    return _overlap_loss(
        name,
        per_class_loss,
        pred,
        target,
        mode=mode,
        input=input,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
        weight=weight,
        reduction=reduction,
    )


def generalized_dice(
    pred: Tensor,
    target: Tensor,
    *,
    mode: Mode = "multiclass",
    input: InputKind = "logits",
    weight_type: WeightType = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    include_background: bool = True,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Generalized Dice loss: one Dice score of classes weighted by their inverse target volume.

    Sudre et al. 2017, "Generalised Dice overlap as a deep learning loss function for highly
    unbalanced segmentations". One score per sample :math:`n` (per batch with ``batch=True``),
    its classes pooled with weights from the target's class volumes :math:`T_{n,c}`:

    .. math::

        L_n = 1 - \frac{2 \sum_c w_{n,c} I_{n,c} + s_{nr}}
            {\sum_c w_{n,c} (P_{n,c} + T_{n,c}) + s_{dr}}, \qquad
        w_{n,c} = \begin{cases} 1 / T_{n,c}^2 & \texttt{"square"} \\
            1 / T_{n,c} & \texttt{"simple"} \\ 1 & \texttt{"uniform"} \end{cases}

    so that small structures weigh as much as large ones. A class absent from the target
    (:math:`T_{n,c} = 0`, an infinite weight) takes the largest finite weight of its sample (of
    the batch with ``batch=True``), as in MONAI's ``GeneralizedDiceLoss``, whose value this is
    for the same options (``w_type`` there). When no class has a finite weight they all weigh
    0: the unsmoothed denominator is then 0 and the loss 0, as for an absent class in
    :func:`dice`. The weights are computed from the target, not differentiated.

    Args:
        pred: logits (or probabilities with ``input="probs"``); see the module docstring for
            the shapes of each ``mode``.
        target: the target, as the ``mode`` requires.
        mode: ``"binary"``, ``"multilabel"`` or ``"multiclass"``.
        input: ``"logits"`` (sigmoid/softmax applied here) or ``"probs"``.
        weight_type: ``"square"`` (Sudre et al.), ``"simple"`` or ``"uniform"``.
        smooth_nr: added to the numerator, >= 0 (and at most float32's largest, 3.4e38).
        smooth_dr: added to the denominator, >= 0 (and at most float32's largest).
        batch: sum the statistics over the batch, giving one score for the batch.
        include_background: keep channel 0 (see :func:`dice`).
        ignore_index: target value whose positions are left out (see :func:`dice`).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``; ``"none"`` returns the per-sample
            losses, shape ``(N,)`` (``(1,)`` with ``batch``).

    Returns:
        The loss; float32 for float16/bfloat16 ``pred``.

    Example:
        >>> import torch
        >>> from lossplug.functional import generalized_dice
        >>> probs = torch.tensor([[[0.9, 0.2, 0.1], [0.1, 0.8, 0.9]]])  # (N, C, positions)
        >>> generalized_dice(probs, torch.tensor([[0, 1, 1]]), input="probs")
        tensor(0.1587)
    """
    name = "generalized_dice"
    check_overlap_options(
        name,
        mode=mode,
        input=input,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    check_choice(name, "weight_type", weight_type, WEIGHT_TYPES)
    check_reduction(name, reduction)
    stats = _overlap_stats(
        name,
        pred,
        target,
        mode=mode,
        input=input,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    weight = _volume_weights(stats.target_sum, weight_type)
    inter = (weight * stats.intersection).sum(-1)
    total = (weight * (stats.pred_sum + stats.target_sum)).sum(-1)
    loss = _one_minus_smoothed_ratio(torch.sub(total, inter, alpha=2), total, smooth_nr, smooth_dr)
    return reduce_loss(loss.unsqueeze(0) if batch else loss, reduction)


def dice_ce_components(
    pred: Tensor,
    target: Tensor,
    *,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    include_background: bool = True,
    ignore_index: int | None = None,
) -> dict[str, Tensor]:
    r"""Dice and cross-entropy from one softmax: ``{"dice": ..., "ce": ...}``, both means.

    ``dice`` is :func:`dice` (multiclass, logits, ``reduction="mean"``) and ``ce`` the
    cross-entropy :math:`-\log p_{n,y,s}` averaged over the kept positions (0 when there is
    none), as :func:`lossplug.functional.cross_entropy`. Adding those two functions computes
    the softmax, and its backward pass, twice; here one fused pass serves both. With both
    weights 1 the sum is MONAI's ``DiceCELoss(softmax=True, to_onehot_y=True)``, where too
    ``include_background`` concerns the Dice term only.

    Args:
        pred: logits ``(N, C, *)``.
        target: class indices ``(N, *)`` (an integer tensor).
        smooth_nr: added to the Dice numerator, >= 0 (and at most float32's largest, 3.4e38).
        smooth_dr: added to the Dice denominator, >= 0 (and at most float32's largest).
        batch: Dice statistics summed over the batch (one score per class).
        include_background: keep channel 0 in the Dice term.
        ignore_index: target value left out of both terms.

    Returns:
        The two unweighted terms, scalars (float32 for float16/bfloat16 ``pred``).
    """
    name = "dice_ce"
    check_overlap_options(
        name,
        mode="multiclass",
        input="logits",
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    if isinstance(target, Tensor) and target.is_floating_point():
        raise TypeError(
            f"{name}: 'target' must hold class indices (an integer tensor of shape (N, *)), "
            f"got a {target.dtype} tensor; for one-hot or soft targets add dice() and "
            "cross_entropy()"
        )
    scores, _ = _checked_scores(
        name,
        pred,
        target,
        mode="multiclass",
        input="logits",
        include_background=include_background,
        ignore_index=ignore_index,
    )
    with explain_class_target_errors(name, pred, target, ignore_index):
        stats, log_prob, kept = _softmax_index_stats(
            scores, target, ignore_index, with_log_prob=True
        )
    stats = _pooled(stats, batch=batch, include_background=include_background)
    per_class = _dice_loss(stats, smooth_nr=smooth_nr, smooth_dr=smooth_dr, jaccard=False)
    return {"dice": reduce_loss(per_class, "mean"), "ce": reduce_loss(-log_prob, "mean", kept)}


def dice_ce(
    pred: Tensor,
    target: Tensor,
    *,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    **options: float | bool | int | None,
) -> Tensor:
    """Weighted sum of :func:`dice_ce_components`: ``dice_weight * dice + ce_weight * ce``.

    Args:
        pred: logits ``(N, C, *)``.
        target: class indices ``(N, *)``.
        dice_weight: weight of the Dice term, >= 0.
        ce_weight: weight of the cross-entropy term, >= 0.
        **options: the options of :func:`dice_ce_components`.

    Returns:
        The scalar loss.
    """
    dice_weight = check_number("dice_ce", "dice_weight", dice_weight, minimum=0.0)
    ce_weight = check_number("dice_ce", "ce_weight", ce_weight, minimum=0.0)
    parts = dice_ce_components(pred, target, **options)
    return dice_weight * parts["dice"] + ce_weight * parts["ce"]


def check_overlap_options(
    loss: str,
    *,
    mode: str,
    input: str,
    smooth_nr: float,
    smooth_dr: float,
    batch: bool,
    include_background: bool,
    ignore_index: int | None,
    auto_mode: bool = False,
) -> None:
    """Validate the options every overlap loss shares (also run by the modules' constructors).

    ``auto_mode`` also takes ``mode="auto"``, which a module decides on its first batch.

    Raises:
        ValueError: for an unknown ``mode``/``input``, a negative or non-finite smoothing, or a
            flag that is not a bool.
        TypeError: for a smoothing term that is not a number or an ``ignore_index`` that is
            not an int.
    """
    check_choice(loss, "mode", mode, (*MODES, "auto") if auto_mode else MODES)
    check_choice(loss, "input", input, INPUTS)
    # finite in float32, where the statistics are summed (an inf smoothing makes inf / inf)
    largest = torch.finfo(torch.float32).max
    check_number(loss, "smooth_nr", smooth_nr, minimum=0.0, maximum=largest)
    check_number(loss, "smooth_dr", smooth_dr, minimum=0.0, maximum=largest)
    check_choice(loss, "batch", batch, (False, True))
    check_choice(loss, "include_background", include_background, (False, True))
    check_index_option(loss, "ignore_index", ignore_index, optional=True)


def check_tversky_options(loss: str, *, alpha: float, beta: float, gamma: float) -> None:
    """Validate Tversky's ``alpha``, ``beta`` (>= 0) and ``gamma`` (> 0).

    Raises:
        ValueError: for a value out of range or not finite.
        TypeError: for a value that is not a number.
    """
    check_number(loss, "alpha", alpha, minimum=0.0)
    check_number(loss, "beta", beta, minimum=0.0)
    check_number(loss, "gamma", gamma, minimum=0.0, exclusive_minimum=True)


def _overlap_loss(
    name: str,
    per_class_loss: Callable[[OverlapStats], Tensor],
    pred: Tensor,
    target: Tensor,
    *,
    mode: str,
    input: str,
    batch: bool,
    include_background: bool,
    ignore_index: int | None,
    weight: Tensor | None,
    reduction: str,
) -> Tensor:
    """Statistics → per-class loss → class weighting → reduction, shared by every overlap loss."""
    check_reduction(name, reduction)
    stats = _overlap_stats(
        name,
        pred,
        target,
        mode=mode,
        input=input,
        batch=batch,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    loss = per_class_loss(stats)
    class_weight = _class_weight(name, weight, _num_channels(pred, mode), include_background)
    if class_weight is not None:
        class_weight = class_weight.to(device=loss.device, dtype=loss.dtype)
    return reduce_loss(loss, reduction, class_weight)


def _overlap_stats(
    name: str,
    pred: Tensor,
    target: Tensor,
    *,
    mode: str,
    input: str,
    batch: bool,
    include_background: bool,
    ignore_index: int | None,
) -> OverlapStats:
    """Validate ``pred``/``target`` and sum :math:`I`, :math:`P`, :math:`T` per sample and class.

    Class-index targets never become a one-hot tensor: the intersection adds each position's
    target-class probability into its class's bin, the target sum counts the labels.
    """
    scores, index_target = _checked_scores(
        name,
        pred,
        target,
        mode=mode,
        input=input,
        include_background=include_background,
        ignore_index=ignore_index,
    )
    if index_target:
        with explain_class_target_errors(name, pred, target, ignore_index):
            if input == "logits":
                stats, _, _ = _softmax_index_stats(scores, target, ignore_index)
            else:
                stats = _index_stats(scores, target, ignore_index)
    else:
        probs = scores
        if input == "logits":
            probs = scores.softmax(dim=1) if mode == "multiclass" else scores.sigmoid()
        dense = target.reshape(probs.shape)
        valid = None if ignore_index is None else dense != ignore_index
        stats = _dense_stats(probs, dense.to(probs.dtype), valid)
    return _pooled(stats, batch=batch, include_background=include_background)


def _checked_scores(
    name: str,
    pred: Tensor,
    target: Tensor,
    *,
    mode: str,
    input: str,
    include_background: bool,
    ignore_index: int | None,
) -> tuple[Tensor, bool]:
    """Validate ``pred`` and ``target``; ``pred`` as ``(N, C, S)``, float32 or wider.

    Returns:
        The reshaped scores and whether ``target`` holds class indices.
    """
    check_floating(name, "pred", pred, "logits" if input == "logits" else "probabilities")
    index_target = _check_target(name, pred, target, mode, ignore_index)
    num_channels = _num_channels(pred, mode)
    if not include_background and num_channels < 2:
        raise ValueError(
            f"{name}: option 'include_background=False' drops channel 0 and needs at least 2 "
            f"channels, got {num_channels} (mode={mode!r}); binary mode has no background channel"
        )
    if input == "probs":
        check_unit_interval(name, "pred", pred, "probabilities")
    scores = at_least_float32(pred)
    if mode == "binary":  # (N, *) or (N, 1, *): one channel
        scores = scores.unsqueeze(1)
    return flatten_from(scores, 2), index_target


def _pooled(stats: OverlapStats, *, batch: bool, include_background: bool) -> OverlapStats:
    """Sum the statistics over the batch if asked, and drop the background channel if asked."""
    if batch:
        stats = OverlapStats(*(s.sum(dim=0) for s in stats))
    if not include_background:
        stats = OverlapStats(*(s[..., 1:] for s in stats))
    return stats


def _dense_stats(probs: Tensor, target: Tensor, valid: Tensor | None) -> OverlapStats:
    """Statistics for a target shaped like ``probs`` ``(N, C, S)``; ``valid`` masks positions."""
    if valid is not None:
        probs = torch.where(valid, probs, 0)
        target = torch.where(valid, target, 0)
    return OverlapStats((probs * target).sum(-1), probs.sum(-1), target.sum(-1))


def _kept_labels(
    target: Tensor, ignore_index: int | None, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """Class indices ``(N, S)`` (ignored positions set to 0) and the mask of kept positions."""
    labels = flatten_from(target, 1).long()
    if ignore_index is None:
        return labels, None
    kept = labels != ignore_index
    return torch.where(kept, labels, 0), kept.to(dtype)


def _label_counts(labels: Tensor, kept: Tensor | None, num_channels: int, like: Tensor) -> Tensor:
    """How many kept positions of each sample hold each class: :math:`T`, shape ``(N, C)``."""
    ones = torch.ones_like(labels, dtype=like.dtype) if kept is None else kept
    return like.new_zeros(labels.shape[0], num_channels).scatter_add_(1, labels, ones)


def _softmax_index_stats(
    logits: Tensor, target: Tensor, ignore_index: int | None, *, with_log_prob: bool = False
) -> tuple[OverlapStats, Tensor, Tensor | None]:
    """Statistics of softmax(logits) ``(N, C, S)`` against class indices.

    Returns:
        The statistics, the target-class log-probabilities ``(N, S)`` (empty unless
        ``with_log_prob``) and the kept mask.
    """
    labels, kept = _kept_labels(target, ignore_index, logits.dtype)
    if applies("softmax_statistics", logits):
        fused = softmax_overlap_stats(logits, labels, kept, with_log_prob=with_log_prob)
        intersection, prob_sum, log_prob = fused.intersection, fused.prob_sum, fused.log_prob
    elif with_log_prob:
        log_probs = logits.log_softmax(1)
        intersection, prob_sum = _label_and_total_probs(log_probs.exp(), labels, kept)
        log_prob = log_probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    else:
        intersection, prob_sum = _label_and_total_probs(logits.softmax(1), labels, kept)
        log_prob = logits.new_empty(0)
    target_sum = _label_counts(labels, kept, logits.shape[1], prob_sum)
    return OverlapStats(intersection, prob_sum, target_sum), log_prob, kept


def _index_stats(probs: Tensor, target: Tensor, ignore_index: int | None) -> OverlapStats:
    """Statistics for class indices against probabilities ``(N, C, S)``, no one-hot."""
    labels, kept = _kept_labels(target, ignore_index, probs.dtype)
    intersection, prob_sum = _label_and_total_probs(probs, labels, kept)
    return OverlapStats(intersection, prob_sum, _label_counts(labels, kept, probs.shape[1], probs))


def _label_and_total_probs(
    probs: Tensor, labels: Tensor, kept: Tensor | None
) -> tuple[Tensor, Tensor]:
    """:math:`I` and :math:`P` ``(N, C)``.

    Each class's summed probability at its own labels, and everywhere; positions outside
    ``kept`` count for nothing.
    """
    if kept is not None:
        probs = torch.where(kept.unsqueeze(1) > 0, probs, 0)
    label_probs = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    intersection = probs.new_zeros(probs.shape[:2]).scatter_add(1, labels, label_probs)
    return intersection, probs.sum(-1)


def _check_target(
    name: str, pred: Tensor, target: Tensor, mode: str, ignore_index: int | None
) -> bool:
    """Check the target's type, shape and (as a value check) its values for ``mode``.

    Returns:
        Whether ``target`` holds class indices (an integer target in multiclass mode).
    """
    if not isinstance(target, Tensor):
        raise TypeError(f"{name}: 'target' must be a torch.Tensor, got {type(target).__name__}")
    if mode == "multiclass" and not target.is_floating_point():
        check_class_target(name, pred, target, ignore_index, indexed_by_torch=True)
        return True
    if mode == "binary":
        check_min_dims(name, "pred", pred, 1, "(N, *) or (N, 1, *) of binary logits")
    else:
        check_min_dims(name, "pred", pred, 2, "(N, C, *) of class scores")
    if mode == "multiclass":
        if ignore_index is not None:
            raise ValueError(
                f"{name}: option 'ignore_index' needs class-index targets in multiclass mode, "
                f"got a float target of shape {tuple(target.shape)}"
            )
        if target.shape != pred.shape:
            raise ValueError(
                f"{name}: float (one-hot or soft) 'target' must have pred's shape "
                f"{tuple(pred.shape)}, got {tuple(target.shape)}; class-index targets must be "
                "an integer tensor of shape (N, *)"
            )
        check_unit_interval(name, "target", target, "class probabilities")
        return False
    check_same_shape(name, pred, target, mode)
    check_binary_values(name, target, mode, ignore_index)
    return False


def _num_channels(pred: Tensor, mode: str) -> int:
    """The number of classes ``pred`` scores: 1 in binary mode, else its dim 1."""
    return 1 if mode == "binary" else pred.shape[1]


def _class_weight(
    name: str, weight: Tensor | None, num_channels: int, include_background: bool
) -> Tensor | None:
    """Validate per-class weights against ``pred``'s channels; drop the background's if asked."""
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: option 'weight' must be a tensor, got {type(weight).__name__}")
    if value_checks_apply(weight):
        weight = check_weight_tensor(name, "weight", weight)
    if weight.shape != (num_channels,):
        raise ValueError(
            f"{name}: option 'weight' must hold one value per channel of 'pred' "
            f"({num_channels}), got shape {tuple(weight.shape)}"
        )
    return weight if include_background else weight[1:]


def _dice_loss(stats: OverlapStats, *, smooth_nr: float, smooth_dr: float, jaccard: bool) -> Tensor:
    """Per-class Dice (or Jaccard) loss from the statistics; see :func:`dice`."""
    inter, total = stats.intersection, stats.pred_sum + stats.target_sum
    # Dice: 2I over P + T; Jaccard: I over P + T - I. Either way the denominator exceeds the
    # numerator by P + T - 2I (the false positives and negatives).
    excess = torch.sub(total, inter, alpha=2)
    denominator = total - inter if jaccard else total
    return _one_minus_smoothed_ratio(excess, denominator, smooth_nr, smooth_dr)


def _volume_weights(target_sum: Tensor, weight_type: str) -> Tensor:
    """Generalized Dice's class weights ``(..., C)``; infinite ones take the largest finite one."""
    if weight_type == "uniform":
        return torch.ones_like(target_sum)
    volume = target_sum.detach()
    weight = (volume if weight_type == "simple" else volume * volume).reciprocal()
    infinite = weight.isinf()
    weight = weight.masked_fill(infinite, 0)
    return torch.where(infinite, weight.amax(-1, keepdim=True), weight)


def _one_minus_smoothed_ratio(
    excess: Tensor, denominator: Tensor, smooth_nr: float, smooth_dr: float
) -> Tensor:
    r"""``1 - (numerator + smooth_nr) / (denominator + smooth_dr)``; 0 where ``denominator == 0``.

    Given ``excess = denominator - numerator``, it is computed as

    .. math::

        \frac{\text{excess} + s_{dr} - s_{nr}}{\text{denominator} + s_{dr}},

    which takes fewer operations than ``1 - ratio`` between two ``torch.where`` calls: on small
    ``(N, C)`` statistics each operation's fixed cost is what counts. Where the unsmoothed
    denominator is 0 the class scores 1 (loss 0) with a zero gradient. The division's gradient there
    must stay finite too (it is multiplied by 0): with equal smoothing terms of at least the dtype's
    smallest normal number the excess there is exactly 0 over a normal denominator, so it does;
    otherwise a ``masked_fill`` makes that denominator 1 first.
    """
    empty = denominator == 0
    if smooth_dr != smooth_nr:
        excess = excess + (smooth_dr - smooth_nr)
    smoothed = denominator + smooth_dr if smooth_dr else denominator
    if not smooth_nr == smooth_dr >= torch.finfo(denominator.dtype).tiny:
        smoothed = smoothed.masked_fill(empty, 1)
    return (excess / smoothed).masked_fill(empty, 0)


def _focal_power(loss: Tensor, gamma: float) -> Tensor:
    """``loss ** gamma`` with a finite gradient: 0 (and zero gradient) where ``loss <= 0``."""
    if gamma == 1:
        return loss
    positive = loss > 0
    return torch.where(positive, torch.where(positive, loss, 1) ** gamma, 0)
