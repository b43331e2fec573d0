r"""Binary cross-entropy from logits in two passes forward and one buffer backward.

.. math::

    \ell = \operatorname{softplus}(z) - y z = \log(1 + e^z) - y z, \qquad
    \frac{\partial \ell}{\partial z} = \sigma(z) - y

torch's ``binary_cross_entropy_with_logits`` is a chain of separate kernels, each writing a
tensor of the input's size: ``log_sigmoid`` (an output and a buffer), ``1 - y``, the product,
the difference; its backward pass writes three more (``sigmoid``, the difference, the
product). Here the forward pass writes one (``softplus``, then the product subtracted in
place) and the backward pass one (``sigmoid``, then the target and the scale applied in
place): half the peak memory and fewer passes over it.

Accuracy is torch's, mirrored: its form :math:`(1 - y) z - \log\sigma(z)` is exact to
rounding where the target is 1 and cancels where it is 0 and :math:`z \ll 0`; this form is
exact where the target is 0 and cancels where it is 1 and :math:`z \gg 0`. Either way the
error is a few units in the last place of :math:`|z|`. ``softplus`` runs with a threshold of
40 rather than torch's 20, past which :math:`\log(1 + e^z) = z` holds in float64 too.

Differentiable to any order, in reverse mode (with ``create_graph=True`` the backward pass
records its operations out of place) and in forward mode (``torch.func.jacfwd``, ``hessian``);
works under ``torch.compile`` and ``torch.func.vmap``. The backward pass gives no gradient to
the target: the caller keeps torch's kernel for a target that requires one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug.functional._autograd import batched_by_vmap, with_cached_signature
from lossplug.functional._precision import autocast_off

#: where ``softplus`` returns ``z`` itself: :math:`e^{-40}` is below float64's resolution at 40
_SOFTPLUS_THRESHOLD = 40.0


def bce_with_logits(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
    r"""Binary cross-entropy of ``logits`` against ``target`` (same shape, float32 or wider).

    Args:
        logits: raw scores :math:`z`.
        target: targets :math:`y \in [0, 1]`; receives no gradient.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``; the mean of a non-empty input.

    Returns:
        The loss.
    """
    with autocast_off(logits.device):
        return _BCEWithLogits.apply(logits, target, reduction)


@with_cached_signature
class _BCEWithLogits(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(logits: Tensor, target: Tensor, reduction: str) -> Tensor:
        loss = F.softplus(logits, threshold=_SOFTPLUS_THRESHOLD)
        if batched_by_vmap(logits, target):
            loss = torch.addcmul(loss, target, logits, value=-1)
        else:
            loss.addcmul_(target, logits, value=-1)
        return _reduced(loss, reduction)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        logits, target, reduction = inputs
        ctx.save_for_backward(logits, target)
        ctx.save_for_forward(logits, target)
        ctx.reduction = reduction

    @staticmethod
    def jvp(
        ctx: Any, logits_tangent: Tensor | None, target_tangent: Tensor | None, _: None
    ) -> Tensor:
        """Forward mode (``torch.func.jacfwd``, ``hessian``): the loss's directional derivative."""
        logits, target = ctx.saved_tensors
        tangent = torch.zeros_like(logits)
        if logits_tangent is not None:
            tangent = tangent.addcmul(torch.sigmoid(logits) - target, logits_tangent)
        if target_tangent is not None:
            tangent = tangent.addcmul(logits, target_tangent, value=-1)
        return _reduced(tangent, ctx.reduction)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, target = ctx.saved_tensors
        if ctx.reduction == "mean":
            grad = grad / logits.numel()
        probs = torch.sigmoid(logits)
        if torch.is_grad_enabled():  # create_graph=True: record a differentiable backward
            return (probs - target) * grad, None, None
        return probs.sub_(target).mul_(grad), None, None


def _reduced(elementwise: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return elementwise
    total = elementwise.sum()
    return total if reduction == "sum" else total / elementwise.numel()
