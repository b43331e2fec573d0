r"""Poly-1 cross-entropy's two terms at each position, from exponentials evaluated once.

With :math:`p_y` the softmax probability of the label :math:`y` of logits :math:`z`,

.. math::

    -\log p_y = \log \sum_c e^{z_c - m} - (z_y - m), \qquad m = \max_c z_c,

    \frac{\partial}{\partial z_c} \Bigl(a \cdot (-\log p_y) + b \cdot \varepsilon (1 - p_y)\Bigr)
        = (a + b\,\varepsilon\,p_y)\,\bigl(p_c - [c = y]\bigr)

for incoming gradients :math:`a` and :math:`b` of the two terms. torch's ``log_softmax``
evaluates ``exp`` over the logits in the forward pass and its backward pass evaluates it
again; on the CPU ``exp2``'s vectorised float32 kernel takes about half as long. Here the
forward pass evaluates the shifted exponentials once
(:func:`~lossplug.kernels.class_softmax.shifted_exps`, the shift first, as torch's softmax
does) and keeps them with their sums, and the backward pass scales them in place into the
gradient: one exponential pass in all, and one logits-sized buffer kept between the passes, as
torch's log-softmax keeps one. :math:`1 - p_y = -\operatorname{expm1}(\log p_y)` has no
cancellation. A second pass through a retained graph evaluates the exponentials again; with
``create_graph=True`` the gradient is built from differentiable operations, so second
derivatives are torch's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lossplug._precision import autocast_off
from lossplug._transforms import wrapped_by_torch_func
from lossplug.kernels.class_softmax import shifted_exps
from lossplug.kernels.dispatch import applies
from lossplug.kernels.in_place import in_place


def poly1_cross_entropy_kernel(
    logits: Tensor, labels: Tensor, epsilon: float
) -> tuple[Tensor, Tensor]:
    r"""Each position's :math:`-\log p_y` and :math:`\varepsilon (1 - p_y)`.

    Args:
        logits: ``(N, C)`` or ``(N, C, S)`` floating tensor.
        labels: ``(N,)`` or ``(N, S)`` int64 class indices in ``[0, C)``.
        epsilon: Poly-1's :math:`\varepsilon`.

    Returns:
        The cross-entropy and the Poly-1 term, each shaped like ``labels``.
    """
    with autocast_off(logits.device):
        return _Poly1CrossEntropy.apply(logits, labels, epsilon)


def poly1_cross_entropy_kernel_applies(logits: Tensor) -> bool:
    """Whether :func:`poly1_cross_entropy_kernel` computes Poly-1 cross-entropy of ``logits``.

    For a gradient of the logits, outside ``torch.func`` transforms, where the dispatcher allows.
    """
    return (
        logits.requires_grad
        and torch.is_grad_enabled()
        and applies("poly1_cross_entropy", logits)
        and not wrapped_by_torch_func(logits)
    )


class _Poly1CrossEntropy(torch.autograd.Function):
    # ``forward`` takes ``ctx`` itself, for the reason :mod:`lossplug.kernels.cross_entropy` gives

    @staticmethod
    def forward(ctx: Any, logits: Tensor, labels: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
        exps, peak = shifted_exps(logits)
        total = exps.sum(1, keepdim=True)
        index = labels.unsqueeze(1)
        label_shifted = logits.gather(1, index).sub_(peak)  # z_y - m <= 0
        cross_entropy = total.log().sub_(label_shifted).squeeze(1)
        p_y_minus_1 = torch.expm1(cross_entropy.neg())
        ctx.epsilon = epsilon
        ctx.save_for_backward(logits, labels, p_y_minus_1, total)
        # not saved: the first backward pass writes the gradient into it
        ctx.exps = exps
        return cross_entropy, p_y_minus_1.mul(-epsilon)

    @staticmethod
    def backward(
        ctx: Any, grad_cross_entropy: Tensor, grad_poly: Tensor
    ) -> tuple[Tensor | None, None, None]:
        logits, labels, p_y_minus_1, total = ctx.saved_tensors
        epsilon = ctx.epsilon
        index = labels.unsqueeze(1)
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            probs = logits.softmax(1)
            p_y = probs.gather(1, index)
            scale = grad_cross_entropy.unsqueeze(1) + grad_poly.unsqueeze(1) * epsilon * p_y
            return probs.mul(scale).scatter_add(1, index, scale.neg()), None, None
        # a + b eps p_y, with p_y = 1 + (p_y - 1)
        poly_part = torch.addcmul(grad_poly * epsilon, grad_poly, p_y_minus_1, value=epsilon)
        scale = (grad_cross_entropy + poly_part).unsqueeze(1)
        exps, ctx.exps = ctx.exps, None
        if exps is None:  # a second pass through a retained graph
            exps, _ = shifted_exps(logits)
        grad = in_place(exps, "mul", scale / total)
        return grad.scatter_add_(1, index, scale.neg()), None, None
