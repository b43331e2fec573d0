r"""Classification losses: cross-entropy, binary cross-entropy, KL divergence and hinge.

Each wraps torch's kernel where torch computes the right thing, and fixes what it does not:
an empty batch or a batch whose targets are all ignored gives 0 (torch gives NaN), the KL
divergence's ``"mean"`` is the mean KL per distribution (torch's ``"mean"`` divides by the
number of *elements*, which is not a divergence), and every input is checked first.

Precision: float16/bfloat16 inputs are computed in float32 and give a float32 loss, also under
autocast, within float32 rounding (relative 1e-5) of the float32 loss of the same rounded
values; the gradient is the float32 gradient rounded to the input's dtype
(:mod:`lossplug._precision`).

Kernels (:mod:`lossplug.kernels`): :mod:`~lossplug.kernels.cross_entropy` (also behind the
multiclass focal loss), :mod:`~lossplug.kernels.multiclass_hinge`, and
:mod:`~lossplug.kernels.linear_in_target` for BCE from logits and the KL divergence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._transforms import wrapped_by_torch_func
from lossplug._validation import (
    check_choice,
    check_class_target,
    check_floating,
    check_index_option,
    check_number,
    check_reduction,
    check_same_shape,
    check_unit_interval,
    explain_class_target_errors,
    value_checks_apply,
)
from lossplug.functional._reduce import reduce_loss
from lossplug.kernels.cross_entropy import cross_entropy_kernel, cross_entropy_kernel_applies
from lossplug.kernels.dispatch import applies
from lossplug.kernels.linear_in_target import (
    BCE_FROM_LOGITS,
    KL_DIVERGENCE,
    linear_in_target_kernel,
)
from lossplug.kernels.multiclass_hinge import multiclass_hinge_kernel


def cross_entropy(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Cross-entropy of softmax(logits) against class indices or class probabilities.

    .. math::

        \ell_i = (1-\varepsilon)\, w_{y_i} \bigl(-\log p_{i,y_i}\bigr)
            + \frac{\varepsilon}{C} \sum_c w_c \bigl(-\log p_{i,c}\bigr),
        \qquad p_i = \operatorname{softmax}(z_i)

    with label smoothing :math:`\varepsilon` (Szegedy et al. 2016, "Rethinking the Inception
    Architecture"). With class weights the mean is :math:`\sum_i \ell_i / \sum_i w_{y_i}` over
    non-ignored positions (torch's convention), so smoothing never counts ignored positions.
    When that denominator is 0 — an empty batch, every target ``ignore_index``, or every kept
    target's class weighing 0 — the mean is 0 with a zero gradient (torch's is NaN in both).

    ``pred`` must be logits: probabilities passed here are softmaxed a second time, which
    trains but flattens the gradient (a classic tutorial bug).

    Args:
        pred: logits of shape ``(N, C, d1, ...)``.
        target: class indices ``(N, d1, ...)`` (any integer dtype), or class probabilities
            shaped like ``pred`` (floating point; one-hot or soft).
        weight: optional per-class weights of shape ``(C,)``, cast to ``pred``'s dtype.
        ignore_index: target value skipped in the loss and the mean (index targets only).
        label_smoothing: :math:`\varepsilon \in [0, 1]`.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per position, 0 at ignored ones).

    Returns:
        The loss.
    """
    name = "cross_entropy"
    check_reduction(name, reduction)
    check_number(name, "label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    ignore_index = check_index_option(name, "ignore_index", ignore_index)
    check_floating(name, "pred", pred, "logits of shape (N, C, ...)")
    soft_target = isinstance(target, Tensor) and target.is_floating_point()
    if soft_target:
        check_same_shape(name, pred, target)
        check_unit_interval(name, "target", target, "class probabilities")
    else:
        check_class_target(name, pred, target, ignore_index, indexed_by_torch=True)
    if weight is not None and tuple(weight.shape) != (pred.shape[1],):
        raise ValueError(
            f"{name}: 'weight' must have one entry per class, shape ({pred.shape[1]},), "
            f"got {tuple(weight.shape)}"
        )
    pred = at_least_float32(pred)
    if weight is not None:
        weight = weight.to(pred.dtype)
    if soft_target:
        target = at_least_float32(target)
        if reduction == "mean" and pred.numel() == 0:
            return pred.sum()
        return F.cross_entropy(
            pred, target, weight, reduction=reduction, label_smoothing=label_smoothing
        )
    with explain_class_target_errors(name, pred, target, ignore_index):
        return _index_target_cross_entropy(
            pred, _as_index(target), weight, ignore_index, label_smoothing, reduction
        )


def _as_index(target: Tensor) -> Tensor:
    """Integer class indices as the int64 torch's kernels take (a bool tensor stays refused)."""
    return target if target.dtype in (torch.long, torch.bool) else target.long()


def _index_target_cross_entropy(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    label_smoothing: float,
    reduction: str,
) -> Tensor:
    """Cross-entropy against class indices; the mean is the sum over the kept targets' weight.

    torch's mean over nothing is 0 / 0, NaN in value and in gradient; here it is 0.
    """
    summed = reduction != "none"
    if label_smoothing == 0.0 and cross_entropy_kernel_applies(pred, weight):
        if reduction == "mean":
            mean = cross_entropy_kernel(pred, target, weight, ignore_index, "mean")
            # a host read, free on the CPU (the kernel's only device); not finite: nothing
            # was kept (torch's 0 / 0), or a NaN
            if _finite_on_host(mean):
                return mean
        loss = cross_entropy_kernel(pred, target, weight, ignore_index, "sum" if summed else "none")
    else:
        loss = F.cross_entropy(
            pred,
            target,
            weight,
            ignore_index=ignore_index,
            reduction="sum" if summed else "none",
            label_smoothing=label_smoothing,
        )
    if reduction != "mean":
        return loss
    kept_weight = kept_target_weight(target, ignore_index, weight).to(loss.dtype)
    # smoothing spreads eps/C over every class: the sum is not 0 when the kept targets weigh 0
    total = torch.where(kept_weight > 0, loss, 0.0) if label_smoothing else loss
    return total / kept_weight.clamp_min(torch.finfo(loss.dtype).tiny)


def _finite_on_host(value: Tensor) -> bool:
    """Whether a 0-d tensor of the CPU kernel is finite; ``False`` where vmap forbids the read."""
    return not wrapped_by_torch_func(value) and math.isfinite(value.item())


def kept_target_weight(target: Tensor, ignore_index: int, weight: Tensor | None = None) -> Tensor:
    """The denominator of cross-entropy's mean: the class weights of the kept targets, summed.

    Without ``weight`` it is the number of targets that are not ``ignore_index``. An
    ``ignore_index`` outside ``[0, C)`` (such as 255) is never used as an index.

    Args:
        target: class indices ``(N, ...)``.
        ignore_index: the target value that is skipped.
        weight: optional per-class weights ``(C,)``.

    Returns:
        A 0-d tensor.
    """
    kept = target != ignore_index
    if weight is None:
        return torch.count_nonzero(kept)
    return (weight[torch.where(kept, target, 0)] * kept).sum()


def bce(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    pos_weight: Tensor | None = None,
    input: str = "logits",
    reduction: str = "mean",
) -> Tensor:
    r"""Binary cross-entropy, from logits (default) or from probabilities.

    .. math::

        \ell = -\,w \bigl[\, w_+ \, y \log \sigma(z) + (1 - y) \log(1 - \sigma(z)) \bigr]

    From logits it is torch's ``binary_cross_entropy_with_logits``, finite for any logit.
    With ``input="probs"`` the
    logs are clamped at -100 as torch does, and their gradients stay finite also at
    probabilities of exactly 0 or 1, which a 16-bit sigmoid gives from logits of about 6
    (bfloat16) or 8 (float16) on.
    ``pos_weight`` :math:`w_+` multiplies the positive term (e.g. ``#neg / #pos`` for
    imbalance): it is *not* focal loss, which down-weights easy examples instead.

    ``weight`` is an element-wise weight or 0/1 mask; as everywhere in lossplug the mean is
    then ``sum(w * l) / sum(w)`` (torch's own ``weight`` divides by the element count).

    Args:
        pred: logits (or probabilities with ``input="probs"``), any shape.
        target: targets in [0, 1], same shape.
        weight: optional element-wise weights or mask, broadcastable to ``pred``.
        pos_weight: optional positive-class weight, broadcastable to ``pred`` (per class:
            shape ``(C,)`` for ``(N, C)`` inputs, as in torch).
        input: ``"logits"`` or ``"probs"``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.
    """
    name = "bce"
    check_reduction(name, reduction)
    check_choice(name, "input", input, ("logits", "probs"))
    meaning = "logits" if input == "logits" else "probabilities"
    check_floating(name, "pred", pred, meaning)
    check_floating(name, "target", target, "binary targets in [0, 1]")
    check_same_shape(name, pred, target)
    check_unit_interval(name, "target", target, "binary targets")
    pred, target = at_least_float32(pred), at_least_float32(target)
    pos_weight = at_least_float32(pos_weight)
    if input == "logits":
        if weight is None and pred.numel() > 0:
            return _logits_bce(pred, target, pos_weight, reduction)
        loss = _logits_bce(pred, target, pos_weight, "none")
    else:
        check_unit_interval(name, "pred", pred, "probabilities (input='probs')")
        log_p, log_not_p = _clamped_log(pred), _clamped_log(1.0 - pred)
        positive = target * log_p if pos_weight is None else pos_weight * target * log_p
        loss = -(positive + (1.0 - target) * log_not_p)
    return reduce_loss(loss, reduction, weight)


def _logits_bce(pred: Tensor, target: Tensor, pos_weight: Tensor | None, reduction: str) -> Tensor:
    """Binary cross-entropy from logits: torch's, or its kernel where that applies."""
    if pos_weight is None and _linear_in_target_applies(pred, target):
        divisor = {"none": None, "sum": 1, "mean": pred.numel()}[reduction]
        return linear_in_target_kernel(pred, target, BCE_FROM_LOGITS, divisor)
    return F.binary_cross_entropy_with_logits(
        pred, target, pos_weight=pos_weight, reduction=reduction
    )


def _linear_in_target_applies(pred: Tensor, target: Tensor) -> bool:
    """Whether :mod:`lossplug.kernels.linear_in_target` computes BCE or KL (no target gradient)."""
    return not target.requires_grad and applies("linear_in_target", pred)


def _clamped_log(probs: Tensor) -> Tensor:
    """``max(log p, -100)``, as torch's ``binary_cross_entropy``, with a finite gradient.

    A probability of exactly 0 gives -100 with a zero gradient, not ``0 * inf = NaN``, and
    one below the dtype's smallest normal number counts as that number, so :math:`1/p`
    cannot overflow.
    """
    log = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny)).clamp_min(-100.0)
    return torch.where(probs > 0, log, -100.0)


def kl_div(
    pred: Tensor,
    target: Tensor,
    log_target: bool = False,
    temperature: float = 1.0,
    dim: int = 1,
    reduction: str = "mean",
) -> Tensor:
    r"""Kullback-Leibler divergence KL(target || prediction).

    The divergence of the target distribution :math:`P` from the predicted :math:`Q`:

    .. math::

        \mathrm{KL}(P \,\|\, Q) = \sum_c p_c \,(\log p_c - \log q_c)

    ``pred`` holds :math:`\log q` (log-probabilities, e.g. ``log_softmax`` output), ``target``
    holds :math:`p` (or :math:`\log p` with ``log_target=True``). This is the *forward* KL
    from the target's point of view (mean-seeking), torch's direction. With a ``temperature``
    :math:`T \neq 1` both distributions are softened, :math:`q_T = \operatorname{softmax}(\log q
    / T)` and :math:`p_T = \operatorname{softmax}(\log p / T)`, and the result is scaled by
    :math:`T^2` so gradients keep their size (Hinton, Vinyals & Dean 2015, "Distilling the
    Knowledge in a Neural Network"). Kullback & Leibler (1951).

    Reductions: ``"mean"`` (default) is the mean KL per distribution — for ``(N, C)`` inputs
    exactly torch's ``"batchmean"``, and so the value *is* the KL divergence; ``"batchmean"``
    is accepted with torch's meaning (sum / ``N``); ``"sum"``; ``"none"`` gives the KL of
    each distribution (the input's shape without ``dim``). torch's element-wise ``"mean"`` —
    the sum divided by ``N·C``, which is not a divergence — is deliberately not offered.

    Args:
        pred: log-probabilities :math:`\log q`, shape ``(N, C, ...)``.
        target: probabilities :math:`p` (or :math:`\log p`), same shape.
        log_target: whether ``target`` holds log-probabilities.
        temperature: :math:`T > 0`.
        dim: the dimension holding each distribution.
        reduction: ``"mean"``, ``"batchmean"``, ``"sum"`` or ``"none"``.

    Returns:
        The divergence, in nats.
    """
    name = "kl_div"
    check_reduction(name, reduction, ("mean", "batchmean", "sum", "none"))
    temperature = check_number(
        name, "temperature", temperature, minimum=0.0, exclusive_minimum=True
    )
    check_floating(name, "pred", pred, "log-probabilities")
    check_floating(name, "target", target, "log-probabilities" if log_target else "probabilities")
    check_same_shape(name, pred, target)
    if not -pred.ndim <= dim < pred.ndim:
        raise ValueError(
            f"kl_div: 'dim' must index one of pred's {pred.ndim} dimensions, got {dim}"
        )
    if not log_target:
        check_unit_interval(name, "target", target, "probabilities (or pass log_target=True)")
    pred, target = at_least_float32(pred), at_least_float32(target)
    if temperature != 1.0:
        pred = torch.log_softmax(pred / temperature, dim=dim)
        log_p = target if log_target else torch.log(target)
        probs = torch.softmax(log_p / temperature, dim=dim)
    else:
        probs = target.exp() if log_target else target
    if reduction == "none":
        return _times_squared(F.kl_div(pred, probs, reduction="none").sum(dim=dim), temperature)
    if reduction == "sum":
        count = 1
    elif reduction == "batchmean":
        count = max(pred.shape[0], 1)
    else:
        count = max(pred.numel() // max(pred.shape[dim], 1), 1)
    if _linear_in_target_applies(pred, probs):
        return linear_in_target_kernel(pred, probs, KL_DIVERGENCE, count / temperature**2)
    total = _times_squared(F.kl_div(pred, probs, reduction="sum"), temperature)
    return total if count == 1 else total / count


def _times_squared(divergence: Tensor, temperature: float) -> Tensor:
    """The divergence times :math:`T^2` (Hinton et al.'s gradient scale); no op at ``T = 1``."""
    return divergence if temperature == 1.0 else divergence * temperature**2


def hinge(
    pred: Tensor,
    target: Tensor,
    mode: str = "binary",
    margin: float = 1.0,
    squared: bool = False,
    reduction: str = "mean",
) -> Tensor:
    r"""The SVM hinge loss, binary or multi-class (Weston & Watkins 1999).

    .. math::

        \text{binary: } \ell = \max(0,\; m - y\,s), \; y \in \{-1, +1\}
        \qquad
        \text{multiclass: } \ell = \sum_{j \neq y} \max(0,\; m - s_y + s_j)

    squared (``squared=True``, the L2-SVM) when asked. Binary targets may be {0, 1} or
    {-1, +1}. Cortes & Vapnik (1995), "Support-Vector Networks". This is *not*
    ``torch.nn.HingeEmbeddingLoss``, which takes distances, not scores; torch's
    ``multi_margin_loss`` is the multiclass form divided by ``C``.

    Args:
        pred: raw scores: any shape for ``"binary"``, ``(N, C, ...)`` for ``"multiclass"``.
        target: binary labels shaped like ``pred``, or class indices ``(N, ...)``.
        mode: ``"binary"`` or ``"multiclass"``.
        margin: :math:`m \ge 0`.
        squared: square each hinge term.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per sample/position).

    Returns:
        The loss.
    """
    name = "hinge"
    check_reduction(name, reduction)
    check_choice(name, "mode", mode, ("binary", "multiclass"))
    margin = check_number(name, "margin", margin, minimum=0.0)
    check_floating(name, "pred", pred, "raw scores")
    pred = at_least_float32(pred)
    if mode == "binary":
        check_same_shape(name, pred, target, mode)
        sign = _binary_sign(target).to(pred.dtype)
        hinges = torch.relu(margin - sign * pred)
        if squared:
            hinges = hinges * hinges
        return reduce_loss(hinges, reduction)
    check_class_target(name, pred, target, indexed_by_torch=True)
    with explain_class_target_errors(name, pred, target):
        hinges = _multiclass_hinge(pred, _as_index(target), margin, squared)
    return reduce_loss(hinges, reduction)


def _binary_sign(target: Tensor) -> Tensor:
    """Map {0, 1} or {-1, +1} labels to {-1, +1}, refusing anything else."""
    if target.numel() > 0 and value_checks_apply(target):
        allowed = (target == 1) | (target == 0) | (target == -1)
        mixed = bool((target == 0).any()) and bool((target == -1).any())
        if not bool(allowed.all()) or mixed:
            found = sorted({float(v) for v in target.unique()[:6].tolist()})
            raise ValueError(
                "hinge: binary 'target' must hold labels in {0, 1} or {-1, 1}, "
                f"got values {found}"
            )
    return torch.where(target > 0, 1.0, -1.0)


def _multiclass_hinge(scores: Tensor, labels: Tensor, margin: float, squared: bool) -> Tensor:
    r"""Per-sample :math:`\sum_{j \ne y} \max(0, m - s_y + s_j)^q` of ``(N, C, *)`` scores."""
    if applies("multiclass_hinge", scores):
        return multiclass_hinge_kernel(scores, labels, margin, squared)
    hinges = torch.relu(scores - scores.gather(1, labels.unsqueeze(1)) + margin)
    if squared:
        hinges = hinges * hinges
    # the sum over every j includes j = y, whose term is the constant max(0, m)^q
    return hinges.sum(1) - (margin**2 if squared else margin)
