r"""Focal loss (Lin, Goyal, Girshick, He & Dollár 2017, "Focal Loss for Dense Object Detection").

.. math::

    \mathrm{FL}(p_t) = -\,\alpha_t\,(1 - p_t)^{\gamma}\,\log p_t

where :math:`p_t` is the predicted probability of the true class. The binary form (sigmoid)
has :math:`p_t = p` for a positive and :math:`1 - p` for a negative, and
:math:`\alpha_t = \alpha` for positives, :math:`1 - \alpha` for negatives (the paper uses
:math:`\alpha = 0.25, \gamma = 2`). The multiclass form (softmax) takes a per-class
:math:`\alpha_c`. ``gamma=0`` with no ``alpha`` is exactly (binary) cross-entropy.

Nothing is computed where it could round away: :math:`\log p_t` comes from log-softmax (the
multiclass form) or from :math:`\log(1 + e^{-|z|})` (the binary form), never as the log of a
probability that underflowed, and :math:`1 - p_t` is formed without cancellation
(:math:`-\operatorname{expm1}(\log p_t)`, or :math:`y\,\sigma(-z) + (1 - y)\,\sigma(z)`).
Where the derivative of :math:`(1 - p_t)^\gamma` is infinite (:math:`\gamma < 1` at
:math:`p_t = 1`) the power is taken in log space (multiclass) or differentiated in closed form
(binary), so logits of ±100 (or more) give finite values *and* finite gradients for any
:math:`\gamma \ge 0`. Implementations that compute :math:`(1 - \sigma(z))^\gamma` directly
give ``inf``/NaN gradients once :math:`\sigma(z)` rounds to 1 and :math:`\gamma < 1`.
float16/bfloat16 logits are computed in float32, also under autocast, so the modulating factor
and :math:`\log p_t` keep float32's range: the loss is float32, within float32 rounding
(relative 1e-5) of the float32 loss of the same rounded logits, and the gradient is the float32
gradient rounded to the logits' dtype.

Kernels: :mod:`lossplug.kernels.sigmoid_focal` (the binary and multilabel forms, whose
derivative is formed in the forward pass), and for the multiclass form's :math:`\log p_t`
:mod:`lossplug.kernels.target_cross_entropy` (large ``(N, C, S)`` logits on the CPU: two numbers
kept per position) or :mod:`lossplug.kernels.cross_entropy` (no logits-sized buffer allocated
in the backward pass), compute the same with less memory traffic where
:func:`lossplug.kernels.applies` allows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._precision import at_least_float32
from lossplug._validation import (
    check_choice,
    check_class_target,
    check_floating,
    check_number,
    check_reduction,
    check_same_shape,
    check_unit_interval,
    check_weight_tensor,
    explain_class_target_errors,
    value_checks_apply,
)
from lossplug.functional._reduce import reduce_loss
from lossplug.kernels.class_softmax import takes_large_path
from lossplug.kernels.cross_entropy import (
    NO_IGNORED_TARGET,
    cross_entropy_kernel,
    cross_entropy_kernel_applies,
)
from lossplug.kernels.dispatch import applies
from lossplug.kernels.poly1_cross_entropy import (
    poly1_cross_entropy_kernel,
    poly1_cross_entropy_kernel_applies,
)
from lossplug.kernels.sigmoid_focal import sigmoid_focal_kernel
from lossplug.kernels.target_cross_entropy import target_cross_entropy_kernel

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
    loss, kept, _ = focal_elements(
        "focal", pred, target, mode, gamma, alpha, ignore_index, reduction
    )
    return reduce_loss(loss, reduction, kept)


def focal_elements(
    name: str,
    pred: Tensor,
    target: Tensor,
    mode: str,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
    reduction: str = "mean",
    *,
    poly: float | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    r"""Check the inputs and options of a focal loss; its unreduced terms.

    Args:
        name: the loss's name, for the messages.
        pred: logits, as :func:`focal` takes them.
        target: labels or class indices, as :func:`focal` takes them.
        mode: ``"binary"``, ``"multiclass"`` or ``"multilabel"``.
        gamma: :math:`\gamma \ge 0`.
        alpha: class balancing, as :func:`focal` takes it.
        ignore_index: target value left out.
        reduction: checked only; the caller reduces.
        poly: Poly-1's :math:`\varepsilon`, to also return its term
            :math:`\varepsilon (1 - p_t)^{\gamma + 1}`; ``None``: no such term.

    Returns:
        The element-wise focal loss (0 at ignored elements once masked), the mask of kept
        elements (``None`` without ``ignore_index``), and the Poly-1 term (``None`` unless
        ``poly`` is given).
    """
    check_reduction(name, reduction)
    check_choice(name, "mode", mode, FOCAL_MODES)
    gamma = check_number(name, "gamma", gamma, minimum=0.0)
    check_floating(name, "pred", pred, "logits")
    pred = at_least_float32(pred)
    if mode != "multiclass":
        return _sigmoid_focal(name, pred, target, mode, gamma, alpha, ignore_index, poly)
    check_class_target(name, pred, target, ignore_index, indexed_by_torch=True)
    with explain_class_target_errors(name, pred, target, ignore_index):
        return _multiclass_focal(name, pred, target, gamma, alpha, ignore_index, poly)


def _sigmoid_focal(
    name: str,
    logits: Tensor,
    target: Tensor,
    mode: str,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
    poly: float | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Element-wise binary focal loss, the mask of kept elements and the Poly-1 term."""
    check_same_shape(name, logits, target, mode)
    target = target.to(logits.dtype)
    kept = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, 0.0)
    check_unit_interval(name, "target", target, f"{mode} labels")
    alpha_t = _sigmoid_alpha(name, alpha, mode, logits, target)
    poly_term = None
    if poly is not None:  # 1 - p_t = y (1 - p) + (1 - y) p, without cancellation
        not_pt = target * torch.sigmoid(-logits) + (1.0 - target) * torch.sigmoid(logits)
        poly_term = poly * not_pt ** (gamma + 1.0)
    if not target.requires_grad and applies("sigmoid_focal", logits):
        return sigmoid_focal_kernel(logits, target, gamma, alpha_t), kept, poly_term
    loss = sigmoid_focal_terms(logits, target, gamma)
    return (loss if alpha_t is None else loss * alpha_t), kept, poly_term


def sigmoid_focal_terms(logits: Tensor, target: Tensor, gamma: float) -> Tensor:
    """Element-wise binary focal loss without alpha, differentiable in both inputs."""
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    loss = -(target * log_p + (1.0 - target) * log_not_p)
    if gamma != 0.0:
        # log(1 - p_t) with p_t = y p + (1 - y)(1 - p); exact for soft labels too.
        log_not_pt = torch.logaddexp(torch.log(target) + log_not_p, torch.log1p(-target) + log_p)
        loss = loss * torch.exp(gamma * log_not_pt)
    return loss


def _sigmoid_alpha(
    name: str,
    alpha: float | Tensor | list[float] | None,
    mode: str,
    logits: Tensor,
    target: Tensor,
) -> Tensor | None:
    """The per-element alpha_t of the sigmoid forms, or None."""
    if alpha is None:
        return None
    if isinstance(alpha, (int, float)):
        positive = torch.tensor(check_number(name, "alpha", alpha, minimum=0.0, maximum=1.0))
    else:
        if mode == "binary":
            raise ValueError(
                f"{name}: option 'alpha' must be a number in [0, 1] in binary mode, got a "
                "sequence; use mode='multilabel' for one alpha per class"
            )
        positive = _per_class_alpha(name, alpha, logits)
        positive = positive.view(1, -1, *([1] * (logits.ndim - 2)))
    positive = positive.to(device=logits.device, dtype=logits.dtype)
    return target * positive + (1.0 - target) * (1.0 - positive)


def _multiclass_focal(
    name: str,
    logits: Tensor,
    target: Tensor,
    gamma: float,
    alpha: float | Tensor | list[float] | None,
    ignore_index: int | None,
    poly: float | None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-position softmax focal loss, the mask of kept positions and the Poly-1 term."""
    kept = None
    if ignore_index is not None:
        kept = target != ignore_index
        target = torch.where(kept, target, 0)
    labels = target.long()
    terms = None
    if poly is not None and gamma == 0.0:  # Poly-1 cross-entropy: both terms at once
        terms = _poly1_kernel_terms(logits, labels, poly)
    if terms is not None:
        cross_entropy, poly_term = terms
    else:
        cross_entropy = _position_cross_entropy(logits, labels)  # -log p_t
        poly_term = None if poly is None else _modulating_factor(cross_entropy, gamma + 1.0, poly)
    loss = cross_entropy
    if gamma != 0.0:
        loss = loss * _modulating_factor(cross_entropy, gamma)
    if alpha is not None:
        if isinstance(alpha, (int, float)):
            raise ValueError(
                f"{name}: option 'alpha' must be a per-class list in multiclass mode, got {alpha!r}"
            )
        weights = _per_class_alpha(name, alpha, logits).to(device=logits.device, dtype=logits.dtype)
        loss = loss * weights[target]
    return loss, kept, poly_term


def _position_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    r"""Each position's cross-entropy :math:`-\log p_t`: torch's, or a kernel's."""
    flat = logits.flatten(2) if logits.ndim > 2 else logits
    if takes_large_path(flat) and applies("target_cross_entropy", flat):
        return target_cross_entropy_kernel(flat, labels.flatten(1)).view(labels.shape)
    if cross_entropy_kernel_applies(logits):
        return cross_entropy_kernel(logits, labels, None, None, "none")
    return F.cross_entropy(logits, labels, ignore_index=NO_IGNORED_TARGET, reduction="none")


def _poly1_kernel_terms(
    logits: Tensor, labels: Tensor, epsilon: float
) -> tuple[Tensor, Tensor] | None:
    r"""Each position's :math:`-\log p_t` and :math:`\varepsilon (1 - p_t)` from the Poly-1 kernel.

    ``None`` where the kernel does not run (then the plain terms are the caller's).
    """
    flat = logits.flatten(2) if logits.ndim > 2 else logits
    if takes_large_path(flat) or not poly1_cross_entropy_kernel_applies(flat):
        return None
    flat_labels = labels.reshape(flat.shape[0], *flat.shape[2:])
    cross_entropy, poly = poly1_cross_entropy_kernel(flat, flat_labels, epsilon)
    return cross_entropy.view(labels.shape), poly.view(labels.shape)


def _per_class_alpha(name: str, alpha: Tensor | list[float], logits: Tensor) -> Tensor:
    """Validate a per-class alpha against the number of classes in ``logits``.

    Its values (finite, >= 0) are checked only where value checks run (not while compiling).
    """
    if value_checks_apply(alpha):
        weights = check_weight_tensor(name, "alpha", alpha)
    else:
        weights = torch.as_tensor(alpha, dtype=logits.dtype, device=logits.device)
    num_classes = logits.shape[1] if logits.ndim > 1 else 1
    if weights.numel() != num_classes:
        raise ValueError(
            f"{name}: option 'alpha' must have one value per class ({num_classes}), "
            f"got {weights.numel()}"
        )
    return weights


def _modulating_factor(cross_entropy: Tensor, gamma: float, scale: float = 1.0) -> Tensor:
    r""":math:`s (1 - p_t)^\gamma` from :math:`-\log p_t`, with a finite gradient for any gamma.

    :math:`1 - p_t = -\operatorname{expm1}(\log p_t)` is exact to rounding, also where
    :math:`p_t` is within an ulp of 1. For :math:`\gamma \ge 1` the power's derivative is
    finite everywhere. For :math:`\gamma < 1` it is infinite at :math:`p_t = 1`, so the power is
    taken in log space, :math:`\exp(\gamma \log(1 - p_t))`, with :math:`\log p_t` clamped
    just below 0: a probability that rounds to 1 gives a tiny factor with a finite gradient.
    At :math:`\gamma = 1` the scale :math:`s` takes the place of the sign change.
    """
    if gamma == 1.0:
        return torch.expm1(-cross_entropy) * -scale
    if gamma > 1.0:
        factor = (-torch.expm1(-cross_entropy)) ** gamma
    else:
        clamped = cross_entropy.clamp(min=torch.finfo(cross_entropy.dtype).tiny)
        factor = torch.exp(gamma * torch.log(-torch.expm1(-clamped)))
    return factor if scale == 1.0 else factor * scale
