r"""Asymmetric loss (ASL) for multi-label classification (Ridnik et al. 2021).

From "Asymmetric Loss For Multi-Label Classification". One sigmoid per label,
:math:`p = \sigma(z)`, with separate focusing for positives and negatives and a probability
margin :math:`m` that discards easy negatives outright:

.. math::

    L = -\,y\,(1 - p)^{\gamma_+} \log p \;-\; (1 - y)\, p_m^{\gamma_-} \log(1 - p_m),
    \qquad p_m = \max(p - m, 0)

The paper's defaults are :math:`\gamma_+ = 0, \gamma_- = 4, m = 0.05`. Both logs are clamped
below at :math:`\log \epsilon` as in the authors' code (timm's ``AsymmetricLossMultiLabel``),
which equals :math:`\log \max(p, \epsilon)` and :math:`\log \max(1 - p_m, \epsilon)`, so that
a label scored at a logit of -100 costs :math:`-\log \epsilon \approx 18.4`, not 100, and
passes no gradient. That code returns the *negative sum* over every element: it is
``reduction="sum"`` here; ``"mean"`` divides the sum by the number of (kept) elements.

Soft labels :math:`y \in [0, 1]` weigh the two terms by :math:`y` and :math:`1 - y`, as the
formula above reads; the authors' code instead mixes the exponents
(:math:`(1 - p_t)^{\gamma_+ y + \gamma_-(1 - y)}`), which agrees with it for hard labels only.

:math:`\log p` is :math:`\log \sigma(z)` and :math:`1 - p = \sigma(-z)`, computed without
cancellation; the powers have finite gradients also where their base is exactly 0 (a negative
scored below the margin) and :math:`\gamma < 1`. float16/bfloat16 logits are computed in
float32, as for :func:`lossplug.functional.focal`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._validation import (
    check_floating,
    check_number,
    check_reduction,
    check_same_shape,
    check_unit_interval,
)
from lossplug.functional._reduce import reduce_loss


def asymmetric(
    pred: Tensor,
    target: Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Asymmetric loss (ASL) from logits; see the module docstring for the formula.

    The sum of :func:`asymmetric_components`.

    Args:
        pred: logits, any shape (``(N, C)`` or ``(N, C, ...)``: one sigmoid per label).
        target: labels in [0, 1] shaped like ``pred``.
        gamma_pos: focusing of the positives, :math:`\gamma_+ \ge 0`.
        gamma_neg: focusing of the negatives, :math:`\gamma_- \ge 0`.
        clip: the probability margin :math:`m \in [0, 1]` shifted off the negatives; 0: none.
        eps: the floor of the probabilities inside the logs, in (0, 1).
        ignore_index: target value whose elements are left out of the loss and the mean.
        reduction: ``"mean"`` (over non-ignored elements), ``"sum"`` (the authors' value,
            negated) or ``"none"``.

    Returns:
        The loss.

    Example:
        >>> import torch
        >>> from lossplug.functional import asymmetric
        >>> asymmetric(torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]]), reduction="sum")
        tensor(0.1275)
    """
    positive, negative = asymmetric_components(
        pred,
        target,
        gamma_pos=gamma_pos,
        gamma_neg=gamma_neg,
        clip=clip,
        eps=eps,
        ignore_index=ignore_index,
        reduction=reduction,
    ).values()
    return positive + negative


def asymmetric_components(
    pred: Tensor,
    target: Tensor,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    """The positive and negative terms of :func:`asymmetric`; arguments as there.

    Returns:
        ``{"pos": ..., "neg": ...}``, each reduced as ``reduction`` says (means over the same
        kept elements, so they add up to :func:`asymmetric`).
    """
    name = "asymmetric"
    check_reduction(name, reduction)
    gamma_pos = check_number(name, "gamma_pos", gamma_pos, minimum=0.0)
    gamma_neg = check_number(name, "gamma_neg", gamma_neg, minimum=0.0)
    clip = check_number(name, "clip", clip, minimum=0.0, maximum=1.0)
    eps = check_number(name, "eps", eps, minimum=0.0, maximum=1.0, exclusive_minimum=True)
    check_floating(name, "pred", pred, "logits")
    check_same_shape(name, pred, target)
    logits = at_least_float32(pred)
    target = target.to(logits.dtype)
    kept = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, 0.0)
    check_unit_interval(name, "target", target, "multi-label targets")
    log_floor = math.log(eps)
    log_p = F.logsigmoid(logits).clamp_min(log_floor)
    positive = -target * _focused(log_p, torch.sigmoid(-logits), gamma_pos)
    if clip == 0.0:
        shifted = torch.sigmoid(logits)
        log_not_shifted = F.logsigmoid(-logits).clamp_min(log_floor)
    else:  # p_m = max(p - m, 0), 1 - p_m = min(1 - p + m, 1), clamped before the log
        shifted = torch.relu(torch.sigmoid(logits) - clip)
        log_not_shifted = torch.log((torch.sigmoid(-logits) + clip).clamp(eps, 1.0))
    negative = -(1.0 - target) * _focused(log_not_shifted, shifted, gamma_neg)
    return {
        "pos": reduce_loss(positive, reduction, kept),
        "neg": reduce_loss(negative, reduction, kept),
    }


def _focused(log_term: Tensor, base: Tensor, gamma: float) -> Tensor:
    r"""``log_term`` times :math:`\text{base}^\gamma`, with a finite gradient where base is 0.

    For :math:`\gamma < 1` the power's derivative is infinite at 0; there the factor is taken
    as 0 from a base clamped to the smallest normal number, whose gradient is finite.
    """
    if gamma == 0.0:
        return log_term
    if gamma >= 1.0:
        return log_term * base**gamma
    tiny = torch.finfo(base.dtype).tiny
    return log_term * torch.where(base > 0, base.clamp_min(tiny) ** gamma, 0.0)
