r"""Cross-entropy against class indices, with a backward pass that allocates no gradient buffer.

torch's cross-entropy is ``log_softmax`` followed by ``nll_loss``, and its backward pass
allocates two tensors the size of the logits: the NLL gradient (zeros with one entry per
position) and the log-softmax's gradient. Their product has a closed form,

.. math::

    \frac{\partial L}{\partial z_{n,c}} = r_n \bigl(p_{n,c} - [c = y_n]\bigr), \qquad
    p_{n,c} = 2^{\log_2 e \,\cdot\, \log p_{n,c}},

with :math:`r_n` the incoming gradient of position :math:`n`'s loss times its class weight
(divided by the kept targets' total weight for the mean), 0 at ignored positions. The forward
pass here is torch's own two kernels, so the loss is torch's to the bit; the backward pass turns
the saved log-probabilities into the gradient in place (``exp2``: faster than ``exp`` on the
CPU) and adds :math:`-r_n` at each target class. On the CPU, where every fresh buffer is paid
for in page faults, forward + backward took 0.57-0.78 of torch's time at 256 x 1000,
8 x 4 x 128 x 128 and 2 x 21 x 256 x 256 (``scripts/bench_losses.py``, those rows alone), and
0.84-1.00 with glibc keeping its freed memory.

The log-probabilities are only overwritten when the backward pass frees the graph; with
``retain_graph=True`` the gradient is a new tensor, and with ``create_graph=True`` it is
computed from the saved logits with differentiable operations, so second derivatives are
torch's. Keeping the logits has two costs torch's kernels do not have: a caller that drops
them after the loss still holds them until the backward pass (peak memory 2/3 of torch's then,
1/3 when the caller holds them anyway), and changing them in place after the loss makes the
backward pass refuse, as for any saved input.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from lossplug.functional._autograd import backward_frees_graph, batched_by_vmap
from lossplug.functional._reduce import REDUCTION_CODES
from lossplug.functional._shapes import flatten_from

_LOG2_E = 1.0 / math.log(2.0)

#: Counts of targets a float32 total weight holds exactly: below it, a total weight equal to the
#: number of targets proves that none is ignored.
_EXACT_FLOAT32_COUNT = 2**24


def nll_forward(
    log_probs: Tensor, target: Tensor, weight: Tensor | None, reduction: str, ignore_index: int
) -> tuple[Tensor, Tensor]:
    """The NLL kernel of torch: the loss and the kept targets' total weight (0 for ``"none"``).

    The weight is the denominator of torch's mean, which the kernel sums anyway. Inputs of 3
    or more than 4 dimensions are viewed as ``(N, C, 1, S)``, as
    ``torch.nn.functional.nll_loss`` does; a ``"none"`` loss is shaped like ``target``.
    """
    code = REDUCTION_CODES[reduction]
    if log_probs.ndim == 2:
        return torch.ops.aten.nll_loss_forward(log_probs, target, weight, code, ignore_index)
    if log_probs.ndim == 4:
        return torch.ops.aten.nll_loss2d_forward(log_probs, target, weight, code, ignore_index)
    flat_log_probs = flatten_from(log_probs, 2).unsqueeze(2)
    flat_target = flatten_from(target, 1).unsqueeze(1)
    loss, total_weight = torch.ops.aten.nll_loss2d_forward(
        flat_log_probs, flat_target, weight, code, ignore_index
    )
    return (loss.view(target.shape) if reduction == "none" else loss), total_weight


def index_cross_entropy(
    logits: Tensor, target: Tensor, weight: Tensor | None, ignore_index: int, reduction: str
) -> Tensor:
    """The cross-entropy of torch, without label smoothing, with this module's backward pass.

    Args:
        logits: ``(N, C, *)`` floating tensor.
        target: ``(N, *)`` int64 class indices, or ``ignore_index``.
        weight: optional ``(C,)`` class weights that need no gradient, logits' dtype.
        ignore_index: the target value that is skipped.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        torch's loss: a mean of 0 / 0 (nothing kept) is NaN, as torch's.
    """
    return _IndexCrossEntropy.apply(logits, target, weight, ignore_index, reduction)


class _IndexCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        target: Tensor,
        weight: Tensor | None,
        ignore_index: int,
        reduction: str,
    ) -> Tensor:
        log_probs = logits.log_softmax(1)
        loss, total_weight = nll_forward(log_probs, target, weight, reduction, ignore_index)
        ctx.save_for_backward(logits, target, weight, log_probs, total_weight)
        ctx.ignore_index, ctx.reduction = ignore_index, reduction  # type: ignore[attr-defined]
        return loss

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor, None, None, None, None]:
        logits, target, weight, log_probs, total_weight = ctx.saved_tensors
        scale, index = _position_scale(
            grad_loss, target, weight, total_weight, ctx.ignore_index, ctx.reduction
        )
        scale = scale.unsqueeze(1) if scale.ndim > 0 else scale
        index = index.unsqueeze(1)
        at_target = scale.neg().expand(index.shape)
        create_graph = torch.is_grad_enabled()
        if create_graph:  # differentiable in the logits
            probs = logits.softmax(1)
        else:
            probs = log_probs if backward_frees_graph() else log_probs.clone()
            probs.mul_(_LOG2_E).exp2_()
        if create_graph or batched_by_vmap(scale):
            # out of place: a graph to differentiate, or a batch of incoming gradients
            # (is_grads_batched, vectorised Jacobians) that the saved tensor cannot hold
            return probs.mul(scale).scatter_add(1, index, at_target), *_NO_GRADS
        return probs.mul_(scale).scatter_add_(1, index, at_target), *_NO_GRADS


_NO_GRADS = (None, None, None, None)


def _position_scale(
    grad_loss: Tensor,
    target: Tensor,
    weight: Tensor | None,
    total_weight: Tensor,
    ignore_index: int,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    """:math:`r_n` (0-d when every position shares it) and the target read as indices.

    Ignored positions get :math:`r_n = 0`, selected rather than multiplied by a 0/1 mask, so a
    NaN or infinite incoming gradient or class weight there stays out, as in torch's NLL
    backward; their index is 0. Without class weights, a mean or sum whose total weight is
    the number of targets kept every target: then no pass over the targets is made.
    """
    if reduction == "mean":
        grad_loss = grad_loss / total_weight
    if weight is None and reduction != "none":
        count = target.numel()
        if count < _EXACT_FLOAT32_COUNT and total_weight.item() == count:
            return grad_loss, target
    kept = target != ignore_index
    index = torch.where(kept, target, 0)
    scale = grad_loss if weight is None else grad_loss * weight[index]
    return torch.where(kept, scale, 0), index
