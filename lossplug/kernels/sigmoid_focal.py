"""Binary focal loss from logits, with its derivative formed in the forward pass.

The plain version is :func:`lossplug.functional.focal.sigmoid_focal_terms`; this kernel
computes the same values and keeps one input-sized tensor for the backward pass where
autograd keeps a dozen.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


def sigmoid_focal_kernel(
    logits: Tensor, target: Tensor, gamma: float, alpha_t: Tensor | None
) -> Tensor:
    """Element-wise binary focal loss, times ``alpha_t`` if given; no gradient for ``target``.

    Args:
        logits: floating tensor, float32 or wider.
        target: labels in [0, 1], same shape and dtype, needing no gradient.
        gamma: the focusing parameter, >= 0.
        alpha_t: per-element class balance, broadcastable to ``logits``, or ``None``.

    Returns:
        The loss of each element.
    """
    return _SigmoidFocal.apply(logits, target, gamma, alpha_t)


class _SigmoidFocal(torch.autograd.Function):
    r"""Element-wise binary focal loss whose derivative is formed in the forward pass.

    With :math:`p = \sigma(z)` and :math:`q = \sigma(-z) = 1 - p`, each computed directly,
    :math:`1 - p_t = y q + (1 - y) p` is a sum of positive terms (nothing cancels, for any
    logit or soft label), :math:`\mathrm{CE} = \log(1 + e^{-|z|}) + \max(z, 0) - y z`, and

    .. math::

        \frac{\partial \mathrm{FL}}{\partial z} = \alpha_t (1 - p_t)^{\gamma}
            \Bigl[\gamma (1 - 2y) \frac{p q}{1 - p_t}\, \mathrm{CE} + p - y\Bigr],

    finite for every :math:`\gamma \ge 0` (:math:`p q / (1 - p_t) \le 1`; where
    :math:`1 - p_t` underflows to 0 the factor :math:`(1 - p_t)^\gamma` is 0 too), also where
    :math:`(1 - p_t)^\gamma` itself has an infinite derivative. Only this derivative is kept
    for the backward pass: one tensor, where autograd would keep a dozen.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, logits: Tensor, target: Tensor, gamma: float, alpha_t: Tensor | None
    ) -> Tensor:
        # max(z, 0) - y z first: it cancels exactly where log(1 + e^-|z|) is tiny
        cross_entropy = logits.clamp(min=0).addcmul_(target, logits, value=-1)
        cross_entropy.add_(logits.abs().neg_().exp_().log1p_())
        prob, prob_complement = torch.sigmoid(logits), torch.sigmoid(-logits)
        not_pt = torch.lerp(prob, prob_complement, target)
        factor = not_pt.pow(gamma)
        if alpha_t is not None:
            factor.mul_(alpha_t)
        if ctx.needs_input_grad[0]:
            ratio = prob_complement.mul_(prob).div_(
                not_pt.clamp_(min=torch.finfo(not_pt.dtype).tiny)
            )
            ratio.mul_(1 - 2 * target).mul_(cross_entropy).mul_(gamma)
            ctx.save_for_backward(ratio.add_(prob).sub_(target).mul_(factor))
        return cross_entropy.mul_(factor)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None, None]:
        (derivative,) = ctx.saved_tensors
        return derivative * grad_loss, None, None, None
