r"""Focal loss (Lin, Goyal, Girshick, He & Dollár 2017, "Focal Loss for Dense Object Detection").

.. math::

    \mathrm{FL}(p_t) = -\,\alpha_t\,(1 - p_t)^{\gamma}\,\log p_t

where :math:`p_t` is the predicted probability of the true class. The binary form (sigmoid)
has :math:`p_t = p` for a positive and :math:`1 - p` for a negative, and
:math:`\alpha_t = \alpha` for positives, :math:`1 - \alpha` for negatives (the paper uses
:math:`\alpha = 0.25, \gamma = 2`). The multiclass form (softmax) takes a per-class
:math:`\alpha_c`. ``gamma=0`` with no ``alpha`` is exactly (binary) cross-entropy.

Everything is computed in log space: :math:`\log p_t` by log-sigmoid / log-softmax and
:math:`(1-p_t)^\gamma = \exp(\gamma \log(1 - p_t))` with a stable :math:`\log(1 - p_t)`, so
logits of ±100 (or more) give finite values *and* finite gradients, for any
:math:`\gamma \ge 0`. Implementations that compute :math:`(1 - \sigma(z))^\gamma` directly
give ``inf``/NaN gradients once :math:`\sigma(z)` rounds to 1 and :math:`\gamma < 1`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._validation import (
    check_choice,
    check_class_target,
    check_floating,
    check_number,
    check_reduction,
    check_same_shape,
    check_unit_interval,
    check_weight_tensor,
)
from lossplug.functional._precision import at_least_float32
from lossplug.functional._reduce import reduce_loss

FOCAL_MODES = ("binary", "multiclass", "multilabel")


def focal(
    pred: Tensor,
    target: Tensor,
    mode: str = "binary",
    gamma: float = 2.0,
    alpha: float | Tensor | list[float] | None = None,
    ignore_index: int | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Focal loss from logits; see the module docstring for the formula.

    Args:
        pred: logits. ``"binary"``: any shape; ``"multilabel"``: ``(N, C, ...)``, one sigmoid
            per class; ``"multiclass"``: ``(N, C, ...)``, softmax over ``C``.
        target: ``"binary"``/``"multilabel"``: labels in [0, 1] shaped like ``pred``;
            ``"multiclass"``: class indices ``(N, ...)``.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        gamma: focusing parameter :math:`\gamma \ge 0`.
        alpha: ``None`` (no class balancing); binary/multilabel: the positive-class weight in
            [0, 1], or for multilabel one per class; multiclass: one weight per class.
        ignore_index: target value whose elements are left out of the loss and the mean.
        reduction: ``"mean"`` (over non-ignored elements), ``"sum"`` or ``"none"``.

    Returns:
        The loss.
    """
    name = "focal"
    check_reduction(name, reduction)
    check_choice(name, "mode", mode, FOCAL_MODES)
    gamma = check_number(name, "gamma", gamma, minimum=0.0)
    check_floating(name, "pred", pred, "logits")
    pred = at_least_float32(pred)
    if mode == "multiclass":
        loss, kept = _multiclass_focal(pred, target, gamma, alpha, ignore_index)
    else:
        loss, kept = _sigmoid_focal(pred, target, mode, gamma, alpha, ignore_index)
    return reduce_loss(loss, reduction, kept)


def _sigmoid_focal(
    logits: Tensor,
    target: Tensor,
    mode: str,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
) -> tuple[Tensor, Tensor | None]:
    """Element-wise binary focal loss and the mask of kept elements."""
    check_same_shape("focal", logits, target)
    target = target.to(logits.dtype)
    kept = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, 0.0)
    check_unit_interval("focal", "target", target, f"{mode} labels")
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    loss = -(target * log_p + (1.0 - target) * log_not_p)
    if gamma != 0.0:
        # log(1 - p_t) with p_t = y p + (1 - y)(1 - p); exact for soft labels too.
        log_not_pt = torch.logaddexp(torch.log(target) + log_not_p, torch.log1p(-target) + log_p)
        loss = loss * torch.exp(gamma * log_not_pt)
    alpha_t = _sigmoid_alpha(alpha, mode, logits, target)
    if alpha_t is not None:
        loss = loss * alpha_t
    return loss, kept


def _sigmoid_alpha(
    alpha: float | Tensor | list[float] | None, mode: str, logits: Tensor, target: Tensor
) -> Tensor | None:
    """The per-element alpha_t of the sigmoid forms, or None."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        positive = torch.tensor(check_number("focal", "alpha", alpha, minimum=0.0, maximum=1.0))
    else:
        if mode == "binary":
            raise ValueError(
                "focal: option 'alpha' must be a number in [0, 1] in binary mode, got a sequence; "
                "use mode='multilabel' for one alpha per class"
            )
        positive = _per_class_alpha(alpha, logits)
        positive = positive.view(1, -1, *([1] * (logits.ndim - 2)))
    positive = positive.to(device=logits.device, dtype=logits.dtype)
    return target * positive + (1.0 - target) * (1.0 - positive)


def _multiclass_focal(
    logits: Tensor,
    target: Tensor,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
) -> tuple[Tensor, Tensor | None]:
    """Per-position softmax focal loss and the mask of kept positions."""
    check_class_target("focal", logits, target, ignore_index)
    kept = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, 0)
    index = target.unsqueeze(1)
    log_pt = torch.log_softmax(logits, dim=1).gather(1, index).squeeze(1)
    loss = -log_pt
    if gamma != 0.0:
        loss = loss * torch.exp(gamma * _log1mexp(log_pt))
    if alpha is not None:
        if isinstance(alpha, (int, float)):
            raise ValueError(
                f"focal: option 'alpha' must be a per-class list in multiclass mode, got {alpha!r}"
            )
        weights = _per_class_alpha(alpha, logits).to(device=logits.device, dtype=logits.dtype)
        loss = loss * weights[target]
    return loss, kept


def _per_class_alpha(alpha: Tensor | list[float], logits: Tensor) -> Tensor:
    """Validate a per-class alpha against the number of classes in ``logits``."""
    weights = check_weight_tensor("focal", "alpha", alpha)
    num_classes = logits.shape[1] if logits.ndim > 1 else 1
    if weights.numel() != num_classes:
        raise ValueError(
            f"focal: option 'alpha' must have one value per class ({num_classes}), "
            f"got {weights.numel()}"
        )
    return weights


_LOG_HALF = -math.log(2.0)


def _log1mexp(log_p: Tensor) -> Tensor:
    """Stable ``log(1 - exp(x))`` for ``x <= 0`` (Mächler 2012), finite with finite gradient.

    ``x`` is clamped just below 0 so that a probability that rounds to 1 gives a large negative
    value instead of ``-inf`` (whose gradient would be NaN).
    """
    x = log_p.clamp(max=-torch.finfo(log_p.dtype).tiny)
    return torch.where(x > _LOG_HALF, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))
