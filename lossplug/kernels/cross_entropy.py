r"""Cross-entropy against class indices, whose backward pass allocates no logits-sized buffer.

torch's cross-entropy is ``log_softmax`` followed by ``nll_loss``; its backward pass allocates
two tensors the size of the logits: the NLL gradient (zeros with one entry per position) and
the log-softmax's gradient. Their product has a closed form,

.. math::

    \frac{\partial L}{\partial z_{n,c}} = r_n \bigl(p_{n,c} - [c = y_n]\bigr), \qquad
    p_{n,c} = 2^{\log_2 e \,\cdot\, \log p_{n,c}},

with :math:`r_n` the incoming gradient of position :math:`n`'s loss times its class weight,
0 at ignored positions. The forward pass is torch's own two kernels, so the loss is torch's to
the bit; the backward pass turns the forward's :math:`\log p` into :math:`p` in place (``exp2``,
faster than ``exp`` on the CPU), scales it and adds :math:`-r_n` at each target class, so it
allocates no logits-sized buffer; a second pass through a retained graph recomputes
:math:`\log p` from the logits. With ``create_graph=True`` it is computed with differentiable
operations, so second derivatives are torch's.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._transforms import wrapped_by_torch_func
from lossplug.kernels.dispatch import applies
from lossplug.kernels.in_place import in_place
from lossplug.kernels.signature import signature_cached

_LOG2_E = 1.0 / math.log(2.0)


def cross_entropy_kernel(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int,
    reduction: str,
) -> Tensor:
    """Torch's cross-entropy without label smoothing: the mean, the sum, or each position's.

    Args:
        logits: ``(N, C, *)`` floating tensor.
        target: ``(N, *)`` int64 class indices, or ``ignore_index``.
        weight: optional ``(C,)`` class weights that need no gradient, logits' dtype.
        ignore_index: the target value that is skipped (its loss is 0).
        reduction: ``"mean"`` (torch's: the sum over the kept targets' weight, NaN where that
            is 0), ``"sum"`` or ``"none"`` (one loss per position, shaped like ``target``).

    Returns:
        The loss.
    """
    loss, _ = _CrossEntropy.apply(logits, target, weight, ignore_index, reduction)
    return loss


def cross_entropy_kernel_applies(logits: Tensor, weight: Tensor | None = None) -> bool:
    """Whether :func:`cross_entropy_kernel` computes the loss of ``logits``.

    For a gradient of the logits alone (class weights that need none), where the dispatcher
    allows; label smoothing is the caller's to rule out.
    """
    return (
        logits.requires_grad
        and torch.is_grad_enabled()
        and (weight is None or not weight.requires_grad)
        and applies("cross_entropy", logits)
    )


@signature_cached
class _CrossEntropy(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
    ) -> tuple[Tensor, Tensor]:
        log_probs = logits.log_softmax(1)
        loss = F.nll_loss(log_probs, target, weight, ignore_index=ignore_index, reduction=reduction)
        return loss, log_probs

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        logits, target, weight, ctx.ignore_index, reduction = inputs
        ctx.mean = reduction == "mean"
        ctx.mark_non_differentiable(output[1])
        ctx.set_materialize_grads(False)  # no zeros for the log-probabilities' gradient
        ctx.save_for_backward(logits, target, weight)
        # not saved: the first backward pass writes the gradient into it (see ``backward``)
        ctx.log_probs = output[1]

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, _: Tensor | None) -> tuple[Tensor | None, ...]:
        logits, target, weight = ctx.saved_tensors
        kept = target != ctx.ignore_index
        # a host read, which on the CPU (the kernel's only device) synchronises nothing; true
        # in the common case, where no per-position selection is needed
        all_kept = _all_true(kept)
        index = target if all_kept else torch.where(kept, target, 0)
        class_weight = None if weight is None else weight[index]
        if ctx.mean:
            grad_loss = grad_loss / _kept_total(kept, all_kept, class_weight)
        scale = grad_loss if class_weight is None else grad_loss * class_weight
        if not all_kept:
            # selected, not multiplied by a 0/1 mask: a NaN gradient or weight there stays out
            scale = torch.where(kept, scale, 0)
        scale = scale.unsqueeze(1) if scale.ndim else scale
        index = index.unsqueeze(1)
        at_target = scale.neg().expand(index.shape)
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            grad = logits.softmax(1).mul(scale).scatter_add(1, index, at_target)
            return grad, None, None, None, None
        # the forward's log-probabilities become the gradient, in place; a later pass through
        # a retained graph recomputes them from the logits
        log_probs, ctx.log_probs = ctx.log_probs, None
        if log_probs is None:
            log_probs = logits.log_softmax(1)
        grad = in_place(log_probs.mul_(_LOG2_E).exp2_(), "mul", scale)
        return grad.scatter_add_(1, index, at_target), None, None, None, None


def _kept_total(kept: Tensor, all_kept: bool, class_weight: Tensor | None) -> Tensor | int:
    """The mean's denominator: the number, or the summed class weights, of the kept targets."""
    if class_weight is None:
        return kept.numel() if all_kept else kept.sum()
    return class_weight.sum() if all_kept else torch.where(kept, class_weight, 0).sum()


def _all_true(mask: Tensor) -> bool:
    """Whether every element of ``mask`` is true; ``False`` where ``vmap`` forbids reading it."""
    return not wrapped_by_torch_func(mask) and bool(mask.all())
