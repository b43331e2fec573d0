r"""Losses of the form :math:`\ell = h(z, y) - y z` in one loss-sized buffer each way.

Two of torch's losses have this form, with :math:`z` the prediction and :math:`y` the target:

.. math::

    \text{BCE from logits:}\quad h = \operatorname{softplus}(z) = \log(1 + e^z), \qquad
    \frac{\partial \ell}{\partial z} = \sigma(z) - y;

    \text{KL divergence, } z = \log q:\quad h = y \log y, \qquad
    \frac{\partial \ell}{\partial z} = -y.

torch computes each forward pass as a chain of kernels that each write a tensor of the
input's size (``binary_cross_entropy_with_logits``: ``log_sigmoid`` and its buffer, ``1 - y``,
the product and the difference; ``kl_div``: ``xlogy``, the product and the difference, and two
more in its backward pass). Here the forward pass writes one tensor, :math:`h`, and subtracts
:math:`y z` from it in place; the backward pass writes one, the gradient.

The plain versions are torch's calls in :func:`lossplug.functional.bce` and
:func:`lossplug.functional.kl_div`. Accuracy is torch's; for BCE it is mirrored: torch's form
:math:`(1 - y) z - \log\sigma(z)` is exact where the target is 1, this one where it is 0, and
either errs by a few units in the last place of :math:`|z|`. ``softplus`` runs with a
threshold of 40 rather than torch's 20, past which :math:`\log(1 + e^z) = z` holds in float64.

Differentiable to any order in reverse mode (with ``create_graph=True`` the backward pass
records out-of-place operations) and in forward mode (``torch.func.jacfwd``, ``hessian``);
works under ``torch.func.vmap``. The target receives no gradient: the callers keep torch's
kernels for a target that needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._precision import autocast_off
from lossplug.kernels.in_place import in_place
from lossplug.kernels.signature import signature_cached

#: where ``softplus`` returns ``z`` itself: :math:`e^{-40}` is below float64's resolution at 40
_SOFTPLUS_THRESHOLD = 40.0


class LinearInTarget(NamedTuple):
    r""":math:`h` and its partial derivatives, each giving a fresh tensor."""

    #: :math:`h(z, y)`
    base: Callable[[Tensor, Tensor], Tensor]
    #: :math:`\partial h / \partial z` of ``z``, or ``None`` where it is 0
    prediction_slope: Callable[[Tensor], Tensor] | None
    #: :math:`\partial h / \partial y` of ``y``, or ``None`` where it is 0
    target_slope: Callable[[Tensor], Tensor] | None


BCE_FROM_LOGITS = LinearInTarget(
    base=lambda z, y: F.softplus(z, threshold=_SOFTPLUS_THRESHOLD),
    prediction_slope=torch.sigmoid,
    target_slope=None,
)
KL_DIVERGENCE = LinearInTarget(
    base=lambda log_q, p: torch.xlogy(p, p),
    prediction_slope=None,
    target_slope=lambda p: torch.log(p).add(1),
)


def linear_in_target_kernel(
    pred: Tensor, target: Tensor, form: LinearInTarget, divisor: float | None
) -> Tensor:
    r""":math:`\sum (h(z, y) - y z) / \text{divisor}`, or each term where ``divisor`` is ``None``.

    Args:
        pred: :math:`z`, float32 or wider.
        target: :math:`y`, same shape and dtype; receives no gradient.
        form: which :math:`h` (:data:`BCE_FROM_LOGITS`, :data:`KL_DIVERGENCE`).
        divisor: what the sum is divided by (1 for the sum), or ``None`` for no reduction.

    Returns:
        The loss.
    """
    with autocast_off(pred.device):
        return _LinearInTarget.apply(pred, target, form, divisor)


@signature_cached
class _LinearInTarget(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(
        pred: Tensor, target: Tensor, form: LinearInTarget, divisor: float | None
    ) -> Tensor:
        loss = in_place(form.base(pred, target), "addcmul", target, pred, value=-1)
        return _reduced(loss, divisor)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        pred, target, ctx.form, ctx.divisor = inputs
        ctx.save_for_backward(pred, target)
        ctx.save_for_forward(pred, target)

    @staticmethod
    def jvp(
        ctx: Any, pred_tangent: Tensor | None, target_tangent: Tensor | None, *_: None
    ) -> Tensor:
        """Forward mode (``torch.func.jacfwd``, ``hessian``): the loss's directional derivative."""
        pred, target = ctx.saved_tensors
        form = ctx.form
        tangent = torch.zeros_like(pred)
        if pred_tangent is not None:
            slope = -target
            if form.prediction_slope is not None:
                slope = slope + form.prediction_slope(pred)
            tangent = tangent.addcmul(slope, pred_tangent)
        if target_tangent is not None:
            slope = -pred
            if form.target_slope is not None:
                slope = slope + form.target_slope(target)
            tangent = tangent.addcmul(slope, target_tangent)
        return _reduced(tangent, ctx.divisor)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        pred, target = ctx.saved_tensors
        if ctx.divisor is not None:
            grad = grad / ctx.divisor
        slope = ctx.form.prediction_slope
        if slope is None:
            return torch.mul(target, -grad), None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward
            return (slope(pred) - target) * grad, None, None, None
        return in_place(in_place(slope(pred), "sub", target), "mul", grad), None, None, None


def _reduced(elementwise: Tensor, divisor: float | None) -> Tensor:
    if divisor is None:
        return elementwise
    total = elementwise.sum()
    return total if divisor == 1 else total / divisor
