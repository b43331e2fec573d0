r"""The multiclass hinge sum with a hand-written backward pass that keeps one score-sized buffer.

.. math::

    \ell_n = \sum_{j \ne y_n} h_{n,j}^{\,q}, \qquad h_{n,j} = \max(0,\; m - s_{n,y_n} + s_{n,j}),
    \qquad q \in \{1, 2\}

Built from autograd's pieces (``relu``, ``gather``) the backward pass holds two score-sized
tensors at once: the saved ``relu`` output beside its gradient, then the gradient of the
``gather`` beside the first. Here nothing score-sized is saved; the backward pass recomputes
:math:`h` into the one buffer that becomes the gradient,

.. math::

    \frac{\partial \ell_n}{\partial s_{n,j}} = q\, h_{n,j}^{\,q-1} \;(j \ne y_n), \qquad
    \frac{\partial \ell_n}{\partial s_{n,y_n}} = -\sum_{j \ne y_n} q\, h_{n,j}^{\,q-1},

with :math:`h^0 = [h > 0]` (the kink's gradient is 0, as ``relu``'s). Differentiable once (a
second derivative raises an error); works under ``torch.compile`` and ``torch.func``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lossplug._precision import autocast_off
from lossplug.kernels.signature import signature_cached


def multiclass_hinge_kernel(scores: Tensor, labels: Tensor, margin: float, squared: bool) -> Tensor:
    r"""Per-sample :math:`\sum_{j \ne y} h_j^q` of ``scores`` ``(N, C, *)`` at labels ``(N, *)``.

    Args:
        scores: raw class scores, float32 or wider.
        labels: int64 class indices in ``[0, C)``.
        margin: :math:`m \ge 0`.
        squared: :math:`q = 2` (else 1).

    Returns:
        ``(N, *)`` hinge sums.
    """
    with autocast_off(scores.device):
        return _MulticlassHingeSum.apply(scores, labels, margin, squared)


def _margins(scores: Tensor, index: Tensor, margin: float) -> Tensor:
    """:math:`m - s_y + s_j`, a fresh tensor shaped like ``scores``."""
    return (scores - scores.gather(1, index)).add_(margin)


@signature_cached
class _MulticlassHingeSum(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(scores: Tensor, labels: Tensor, margin: float, squared: bool) -> Tensor:
        hinges = _margins(scores, labels.unsqueeze(1), margin).relu_()
        if squared:
            hinges.mul_(hinges)
        # the sum over all j includes j = y, whose term is the constant max(0, m)^q
        return hinges.sum(1).sub_(margin**2 if squared else margin)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        scores, labels, margin, squared = inputs
        ctx.save_for_backward(scores, labels)
        ctx.margin, ctx.squared = margin, squared

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        scores, labels = ctx.saved_tensors
        index = labels.unsqueeze(1)
        slopes = _margins(scores, index, ctx.margin)
        if ctx.squared:
            slopes.relu_().mul_(2)
        else:
            slopes.sign_().relu_()  # [h > 0] in place
        slopes.mul_(grad.unsqueeze(1))
        # s_y's own term is constant (its slope, already in place, cancels in the sum); s_y
        # moves every other term the opposite way
        return slopes.scatter_add_(1, index, slopes.sum(1, keepdim=True).neg_()), None, None, None
