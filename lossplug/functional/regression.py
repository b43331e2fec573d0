r"""Regression losses: MSE, L1, Huber, SmoothL1 and Charbonnier, with optional element-wise weights.

Huber and SmoothL1 are the same curve at different scales, and tutorials often swap them.
For a residual :math:`r = \hat y - y`:

.. math::

    \text{huber}_\delta(r) = \begin{cases} \tfrac12 r^2 & |r| \le \delta \\
        \delta\,(|r| - \tfrac12\delta) & \text{otherwise} \end{cases}
    \qquad
    \text{smooth\_l1}_\beta(r) = \begin{cases} \tfrac{1}{2\beta} r^2 & |r| < \beta \\
        |r| - \tfrac12\beta & \text{otherwise} \end{cases}

so :math:`\text{huber}_\delta = \delta \cdot \text{smooth\_l1}_\delta`: their gradients differ
by the factor :math:`\delta` in the linear region (Huber's is :math:`\pm\delta`, SmoothL1's
:math:`\pm 1`). Huber (1964), "Robust Estimation of a Location Parameter"; SmoothL1 from
Girshick (2015), "Fast R-CNN".

An empty batch gives 0 with ``reduction="mean"`` (torch's mean over no element is NaN), with or
without weights, as every lossplug loss does.

Precision: float16/bfloat16 inputs are computed in float32 and give a float32 loss (a float16
squared error overflows from 256 on), also under autocast, within float32 rounding (relative
1e-5) of the float32 loss of the same rounded values; the gradient is the float32 gradient
rounded to the input's dtype (:mod:`lossplug._precision`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as F

from lossplug._precision import at_least_float32
from lossplug._validation import (
    check_bool,
    check_floating,
    check_number,
    check_reduction,
    check_same_shape,
    value_checks_apply,
)
from lossplug.functional._reduce import reduce_loss


def mse(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    r"""Mean squared error :math:`\frac{1}{N}\sum_i w_i (\hat y_i - y_i)^2 / \bar w`.

    Args:
        pred: predictions, any shape, floating point.
        target: targets, same shape as ``pred``.
        weight: optional element-wise weights or 0/1 mask, broadcastable to ``pred``; the mean
            is then ``sum(w * l) / sum(w)``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.
    """
    return _pointwise("mse", F.mse_loss, pred, target, weight, reduction)


def l1(
    pred: Tensor, target: Tensor, weight: Tensor | None = None, reduction: str = "mean"
) -> Tensor:
    r"""Mean absolute error :math:`|\hat y - y|`; arguments as in :func:`mse`."""
    return _pointwise("l1", F.l1_loss, pred, target, weight, reduction)


def huber(
    pred: Tensor,
    target: Tensor,
    delta: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Huber loss (Huber 1964): quadratic within ``delta``, linear with slope ``delta`` outside.

    Equals ``delta * smooth_l1(beta=delta)``; see the module docstring.

    Args:
        pred: predictions.
        target: targets, same shape.
        delta: the threshold, > 0.
        weight: optional element-wise weights or mask.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.
    """
    delta = check_number("huber", "delta", delta, minimum=0.0, exclusive_minimum=True)
    return _pointwise("huber", F.huber_loss, pred, target, weight, reduction, delta=delta)


def smooth_l1(
    pred: Tensor,
    target: Tensor,
    beta: float = 1.0,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""SmoothL1 loss (Girshick 2015): quadratic :math:`r^2/2\beta` within ``beta``, else slope 1.

    Equals ``huber(delta=beta) / beta``; ``beta=0`` is exactly L1.

    Args:
        pred: predictions.
        target: targets, same shape.
        beta: the threshold, >= 0.
        weight: optional element-wise weights or mask.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.
    """
    beta = check_number("smooth_l1", "beta", beta, minimum=0.0)
    if beta == 0:  # the curve is |r|, as torch.nn.functional.smooth_l1_loss computes it then
        return _pointwise("smooth_l1", F.l1_loss, pred, target, weight, reduction)
    return _pointwise("smooth_l1", F.smooth_l1_loss, pred, target, weight, reduction, beta=beta)


def charbonnier(
    pred: Tensor,
    target: Tensor,
    eps: float = 1e-3,
    subtract_eps: bool = False,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    r"""Charbonnier loss, a differentiable L1 (Charbonnier, Blanc-Féraud, Aubert & Barlaud 1994).

    .. math::

        \ell(r) = \sqrt{r^2 + \varepsilon^2} \;\bigl(- \varepsilon\bigr),
        \qquad r = \hat y - y

    from "Two Deterministic Half-Quadratic Regularization Algorithms for Computed Imaging";
    image restoration uses it as its L1 (Lai et al. 2017, "Deep Laplacian Pyramid Networks",
    :math:`\varepsilon = 10^{-3}`). Near 0 it is quadratic, :math:`r^2 / 2\varepsilon` plus
    :math:`\varepsilon`, far from it :math:`|r|`: SmoothL1 with :math:`\beta = \varepsilon`
    is the same shape joined piecewise. With ``subtract_eps=True`` the constant
    :math:`\varepsilon` is taken off, so a perfect prediction scores 0; it changes the value,
    never the gradient. Some codes write :math:`\sqrt{r^2 + \varepsilon}` instead (BasicSR's
    ``eps=1e-12``): pass the square root of their ``eps``.

    The value is :math:`\operatorname{hypot}(r, \varepsilon)`, finite for any finite
    residual (:math:`r^2` overflows float32 from :math:`r \approx 2 \cdot 10^{19}`), and
    the subtracted form is :math:`r \cdot r / (\operatorname{hypot}(r, \varepsilon) +
    \varepsilon)`, with no cancellation at small :math:`r`.

    Args:
        pred: predictions, any shape.
        target: targets, same shape.
        eps: :math:`\varepsilon > 0`.
        subtract_eps: take :math:`\varepsilon` off, so that :math:`\ell(0) = 0`.
        weight: optional element-wise weights or mask.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        The loss.

    Example:
        >>> import torch
        >>> from lossplug.functional import charbonnier
        >>> charbonnier(torch.tensor([0.0, 3.0]), torch.tensor([0.0, -1.0]), eps=1.0)
        tensor(2.5616)
    """
    name = "charbonnier"
    eps = check_number(name, "eps", eps, minimum=0.0, exclusive_minimum=True)
    subtract_eps = check_bool(name, "subtract_eps", subtract_eps)
    return _pointwise(
        name, _charbonnier, pred, target, weight, reduction, eps=eps, subtract_eps=subtract_eps
    )


def _charbonnier(
    pred: Tensor, target: Tensor, reduction: str, eps: float, subtract_eps: bool
) -> Tensor:
    """The reduced Charbonnier loss of checked inputs."""
    residual = pred - target
    length = torch.hypot(residual, residual.new_full((), eps))
    loss = residual * (residual / (length + eps)) if subtract_eps else length
    return reduce_loss(loss, reduction)


def _pointwise(
    name: str,
    loss_fn: Callable[..., Tensor],
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None,
    reduction: str,
    **options: float | bool,
) -> Tensor:
    """Validate, then run torch's loss, reducing directly or weighting and then reducing.

    ``loss_fn`` is called as ``loss_fn(pred, target, reduction=..., **options)``.
    """
    check_reduction(name, reduction)
    check_floating(name, "pred", pred, "predictions")
    check_floating(name, "target", target, "regression targets")
    check_same_shape(name, pred, target)
    pred, target = at_least_float32(pred), at_least_float32(target)
    if weight is None:
        if reduction == "mean" and pred.numel() == 0:  # torch's mean over nothing is NaN
            reduction = "sum"
        return loss_fn(pred, target, reduction=reduction, **options)
    _check_element_weight(name, weight, pred)
    per_element = loss_fn(pred, target, reduction="none", **options)
    return reduce_loss(per_element, reduction, weight)


def _check_element_weight(name: str, weight: Tensor, pred: Tensor) -> None:
    """Require a non-negative weight tensor that broadcasts to ``pred`` without growing it."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name}: 'weight' must be a tensor, got {type(weight).__name__}")
    try:
        broadcast = torch.broadcast_shapes(weight.shape, pred.shape)
    except RuntimeError:
        broadcast = None
    if broadcast != pred.shape:
        raise ValueError(
            f"{name}: 'weight' must broadcast to pred's shape {tuple(pred.shape)}, "
            f"got shape {tuple(weight.shape)}"
        )
    if value_checks_apply(weight) and bool((weight < 0).any()):
        raise ValueError(f"{name}: 'weight' must be >= 0 everywhere, got a negative value")
