r"""Each position's cross-entropy of large ``(N, C, S)`` logits, keeping two numbers per position.

.. math::

    \ell_{n,s} = -\log p_{n,y,s} = \log \sum_c e^{z_{n,c,s} - m_{n,s}} - (z_{n,y,s} - m_{n,s}),
    \qquad m_{n,s} = \max_c z_{n,c,s},

    \frac{\partial \ell_{n,s}}{\partial z_{n,c,s}} = p_{n,c,s} - [c = y_{n,s}].

torch's ``log_softmax`` and ``nll_loss`` along dimension 1 of ``(N, C, S)`` logits are slow on
the CPU, and the log-probabilities they leave stay alive until the backward pass, beside every
per-position tensor of the loss built on them (the multiclass focal loss). Here the forward
pass sums the shifted exponentials of :mod:`lossplug.kernels.class_softmax` (one transient
buffer) and reads each label's logit; it keeps :math:`m` and :math:`1 / \sum_c e^{z_c - m}`
per position (no flat offsets: one more number per position would cost more memory than
``gather`` costs time), and the backward pass recomputes the softmax into the gradient's
buffer. Differentiable once; for the inputs that
:func:`~lossplug.kernels.class_softmax.takes_large_path` accepts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lossplug._precision import autocast_off
from lossplug.kernels.class_softmax import add_at, shifted_exps, take


def target_cross_entropy_kernel(logits: Tensor, labels: Tensor) -> Tensor:
    r""":math:`-\log p_y` of each position of ``(N, C, S)`` logits at int64 labels ``(N, S)``."""
    with autocast_off(logits.device):
        return _TargetCrossEntropy.apply(logits, labels)


class _TargetCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, labels: Tensor) -> Tensor:
        exps, peak = shifted_exps(logits)
        total = exps.sum(1, keepdim=True)
        del exps  # the one logits-sized buffer, freed before anything else is allocated
        label_shifted = take(logits, labels, None).sub_(peak.squeeze(1))  # z_y - m <= 0
        loss = total.log().squeeze(1).sub_(label_shifted)
        ctx.save_for_backward(logits, labels, peak, total.reciprocal_())
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None]:
        logits, labels, peak, inverse_total = ctx.saved_tensors
        probs, _ = shifted_exps(logits, peak)
        grad = probs.mul_(inverse_total * grad_loss.unsqueeze(1))
        return add_at(grad, labels, None, grad_loss.neg()), None
