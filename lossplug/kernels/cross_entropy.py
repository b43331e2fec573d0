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
operations, so second derivatives are torch's. The NLL kernel's total weight of the kept
targets, which it sums anyway, divides the mean and, equal to the number of targets, spares a
pass that looks for ignored ones. Under ``torch.func`` transforms torch's kernels run instead.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lossplug._transforms import wrapped_by_torch_func
from lossplug.kernels.dispatch import applies
from lossplug.kernels.in_place import in_place

_LOG2_E = 1.0 / math.log(2.0)


def cross_entropy_kernel(
    logits: Tensor,
    target: Tensor,
    weight: Tensor | None,
    ignore_index: int | None,
    reduction: str,
) -> Tensor:
    """Torch's cross-entropy without label smoothing: the mean, the sum, or each position's.

    Args:
        logits: ``(N, C, *)`` floating tensor.
        target: ``(N, *)`` int64 class indices, or ``ignore_index``.
        weight: optional ``(C,)`` class weights that need no gradient, logits' dtype.
        ignore_index: the target value that is skipped (its loss is 0); ``None`` where the
            caller has no such value (every target a class index): the backward pass then
            looks for none.
        reduction: ``"mean"`` (torch's: the sum over the kept targets' weight, NaN where that
            is 0), ``"sum"`` or ``"none"`` (one loss per position, shaped like ``target``).

    Returns:
        The loss.
    """
    return _CrossEntropy.apply(logits, target, weight, ignore_index, reduction)


def cross_entropy_kernel_applies(logits: Tensor, weight: Tensor | None = None) -> bool:
    """Whether :func:`cross_entropy_kernel` computes the loss of ``logits``.

    For a gradient of the logits alone (class weights that need none), outside ``torch.func``
    transforms (torch's kernels have their batching rules), where the dispatcher allows; label
    smoothing is the caller's to rule out.
    """
    return (
        logits.requires_grad
        and torch.is_grad_enabled()
        and (weight is None or not weight.requires_grad)
        and applies("cross_entropy", logits)
        and not wrapped_by_torch_func(logits)
    )


class _CrossEntropy(torch.autograd.Function):
    # ``forward`` takes ``ctx`` itself: ``apply`` then skips binding the arguments to a
    # signature, which the ``setup_context`` style (the one ``torch.func`` needs) pays on
    # every call; :func:`cross_entropy_kernel_applies` leaves the transforms to torch

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
    ) -> Tensor:
        log_probs = logits.log_softmax(1)
        skipped = NO_IGNORED_TARGET if ignore_index is None else ignore_index
        loss, kept_weight = _nll_loss(log_probs, target, weight, skipped, reduction)
        ctx.ignore_index, ctx.reduction = ignore_index, reduction
        ctx.save_for_backward(logits, target, weight, kept_weight)
        # not saved: the first backward pass writes the gradient into it (see ``backward``)
        ctx.log_probs = log_probs
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        logits, target, weight, kept_weight = ctx.saved_tensors
        if ctx.reduction == "mean":
            grad_loss = grad_loss / kept_weight
        kept = _kept(target, weight, kept_weight, ctx.ignore_index, ctx.reduction)
        index = target if kept is None else torch.where(kept, target, 0)
        scale = grad_loss if weight is None else grad_loss * weight[index]
        if kept is not None:
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


def _nll_loss(
    log_probs: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str
) -> tuple[Tensor, Tensor]:
    """The NLL kernel of torch: the loss and the kept targets' total weight, which it sums anyway.

    ``(N, C, *)`` inputs of other than 2 or 4 dimensions are viewed as ``(N, C, 1, S)``, as
    :func:`torch.nn.functional.nll_loss` does; a ``"none"`` loss is shaped like ``target``.
    """
    code = _REDUCTION_CODES[reduction]
    if log_probs.ndim == 2:
        return torch.ops.aten.nll_loss_forward(log_probs, target, weight, code, ignore_index)
    if log_probs.ndim == 4:
        return torch.ops.aten.nll_loss2d_forward(log_probs, target, weight, code, ignore_index)
    loss, kept_weight = torch.ops.aten.nll_loss2d_forward(
        log_probs.reshape(*log_probs.shape[:2], 1, -1),
        target.reshape(target.shape[0], 1, -1),
        weight,
        code,
        ignore_index,
    )
    return (loss.view(target.shape) if reduction == "none" else loss), kept_weight


def _kept(
    target: Tensor,
    weight: Tensor | None,
    kept_weight: Tensor,
    ignore_index: int | None,
    reduction: str,
) -> Tensor | None:
    """Where ``target`` is not ``ignore_index``; ``None`` where every target is kept.

    Without ``ignore_index``, or without class weights for a summed loss whose kept weight is
    the number of targets, every target was kept: then no pass over the targets is made. The
    weight is compared on the host, which on the CPU (the kernel's only device) synchronises
    nothing.
    """
    if ignore_index is None:
        return None
    # up to 2 / eps = 2 ** (mantissa bits + 1) a floating total holds every count exactly
    exact = target.numel() <= 2 / torch.finfo(kept_weight.dtype).eps
    if weight is None and reduction != "none" and exact and kept_weight.item() == target.numel():
        return None
    kept = target != ignore_index
    return None if not wrapped_by_torch_func(kept) and bool(kept.all()) else kept


#: The ``ignore_index`` to hand torch's NLL kernels where no target is to be skipped: no
#: class index equals it, so they refuse every index outside ``[0, C)`` (-1 and torch's
#: default -100 included).
NO_IGNORED_TARGET = torch.iinfo(torch.int64).min

#: The reductions as ATen's NLL kernels number them.
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
