r"""Softmax statistics of class-index targets, with hand-written backward passes.

Losses on softmax probabilities against class indices (multiclass focal, Dice, Tversky,
Dice + cross-entropy) need only a few per-position or per-class numbers:

.. math::

    \log p_{n,y,s} = z_{n,y,s} - \operatorname{logsumexp}_c z_{n,c,s}, \qquad
    I_{n,c} = \sum_{s:\, y_{n,s} = c} v_{n,s}\, p_{n,c,s}, \qquad
    P_{n,c} = \sum_s v_{n,s}\, p_{n,c,s},

with :math:`v` the 0/1 mask of kept (not ignored) positions. Built from autograd's pieces
(``softmax``, ``gather``, ``sum``), each piece saves or allocates its own full-size
``(N, C, S)`` tensor in the backward pass: a zero-filled gradient for ``gather``, another for
the sum, the softmax's output. The functions here save at most one full-size tensor and write
the gradient of the logits into a single buffer,

.. math::

    \frac{\partial L}{\partial z_{n,c,s}} = v_{n,s} \bigl[ p_{n,c,s} (g^P_{n,c} - d_{n,s})
        + [c = y_{n,s}]\, p_{n,y,s}\, g^I_{n,y} \bigr]
        + g^{\log}_{n,s} \bigl([c = y_{n,s}] - p_{n,c,s}\bigr), \quad
    d_{n,s} = \sum_c p_{n,c,s}\, g^P_{n,c} + p_{n,y,s}\, g^I_{n,y}

(:math:`g` the incoming gradients), which on the CPU is both faster and leaner: fresh memory is
paid for in page faults on every call. On the CPU that buffer is, for large enough inputs, the
saved softmax itself, overwritten class by class, when the backward pass frees the graph. Both
functions are differentiable once (a second derivative raises an error rather than being
silently wrong) and trace under
``torch.compile``. They take float32 (or wider) logits, as the losses upcast 16-bit ones, and
run with autocast off: autocast would compute the masked sums (a ``bmm``) in 16 bits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lossplug.functional._autograd import backward_frees_graph
from lossplug.functional._class_softmax import (
    exp_minus,
    softmax_and_normaliser,
    softmax_over_classes,
    takes_exp2_path,
)
from lossplug.functional._precision import autocast_off

#: From this many positions (``N * S``) the CPU takes the paths for large inputs: the target
#: class is read and written at flat offsets (:func:`_flat_positions`) and the backward pass may
#: write the gradient into the saved probabilities (:func:`_may_overwrite`). Below it their one
#: operation per class and their int32 offsets cost more time or memory than they save
#: (measured on the CPU, 4 to 150 classes).
LARGE_INPUT_POSITIONS = 32768


class OverlapSoftmaxStats(NamedTuple):
    """Outputs of :func:`softmax_overlap_stats`."""

    log_prob: Tensor  #: ``(N, S)``: log-probability of each position's target class
    intersection: Tensor  #: ``(N, C)``: summed target-class probabilities per class
    prob_sum: Tensor  #: ``(N, C)``: summed probabilities per class


def target_log_prob(logits: Tensor, labels: Tensor) -> Tensor:
    """``log_softmax(logits, 1)`` at each position's target class.

    Saves only the logits and two numbers per position (the largest logit and the softmax's
    inverse normaliser); the backward recomputes the softmax into the gradient buffer itself.

    Args:
        logits: ``(N, C, S)`` or ``(N, C)`` floating tensor.
        labels: ``(N, S)`` or ``(N,)`` int64 class indices in ``[0, C)``.

    Returns:
        The target-class log-probabilities, shaped like ``labels``.
    """
    with autocast_off(logits.device):
        return _TargetLogProb.apply(logits, labels)


def softmax_overlap_stats(
    logits: Tensor, labels: Tensor, valid: Tensor | None, *, with_log_prob: bool
) -> OverlapSoftmaxStats:
    """The Dice statistics :math:`I`, :math:`P` of a softmax, and target log-probabilities.

    Args:
        logits: ``(N, C, S)`` floating tensor.
        labels: ``(N, S)`` int64 class indices in ``[0, C)`` (ignored positions: any valid
            index, e.g. 0).
        valid: ``(N, S)`` 0/1 mask of kept positions, logits' dtype, or ``None`` (all kept).
        with_log_prob: compute ``log_prob`` too (else it is an empty tensor).

    Returns:
        ``(log_prob, intersection, prob_sum)``; ``log_prob`` is not masked.
    """
    with autocast_off(logits.device):
        stats = _OverlapStats.apply(logits, labels, valid, with_log_prob)
    return OverlapSoftmaxStats(*stats)


class _TargetLogProb(torch.autograd.Function):
    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, labels: Tensor) -> Tensor:
        index = labels.unsqueeze(1)
        if takes_exp2_path(logits):
            # log p_y = (z_y - m) - log sum_c e^(z_c - m); the sum's tensor is freed at once
            peak = logits.amax(1, keepdim=True)
            total = exp_minus(logits, peak).sum(1, keepdim=True)
            log_prob = logits.gather(1, index).sub_(peak).sub_(total.log())
            inverse_total = total.reciprocal_()
        else:
            log_probs = logits.log_softmax(1)
            # sum_c e^(z_c - m) = 1 / p_max
            peak = logits.amax(1, keepdim=True)
            inverse_total = log_probs.amax(1, keepdim=True).exp_()
            log_prob = log_probs.gather(1, index)
        ctx.save_for_backward(logits, index, peak, inverse_total)
        return log_prob.squeeze(1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_log_prob: Tensor) -> tuple[Tensor, None]:
        logits, index, peak, inverse_total = ctx.saved_tensors
        grad = grad_log_prob.unsqueeze(1)
        # d log p_y / dz_c = [c = y] - p_c, with p_c = e^(z_c - m) / sum
        grad_logits = exp_minus(logits, peak).mul_(inverse_total.mul(grad).neg_())
        return grad_logits.scatter_add_(1, index, grad), None


class _OverlapStats(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        labels: Tensor,
        valid: Tensor | None,
        with_log_prob: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        at_labels = _flat_positions(labels, logits)
        if with_log_prob:
            probs, (peak, log_sum) = softmax_and_normaliser(logits)
            log_prob = _take(logits, labels, at_labels).sub_(peak.squeeze(1))
            target_prob = log_prob.sub_(log_sum.squeeze(1)).exp()
        else:
            probs = softmax_over_classes(logits)
            target_prob = _take(probs, labels, at_labels)
            log_prob = target_prob.new_empty(0)
        if valid is None:
            prob_sum = probs.sum(-1)
            kept_target_prob = target_prob
        else:
            prob_sum = torch.bmm(probs, valid.unsqueeze(-1)).squeeze(-1)
            kept_target_prob = target_prob * valid
        # scatter_add_ refuses labels outside [0, C): an index that _take read from another
        # class's or sample's position never gets past this line
        intersection = prob_sum.new_zeros(prob_sum.shape).scatter_add_(1, labels, kept_target_prob)
        ctx.save_for_backward(probs, labels, valid, target_prob, at_labels)
        ctx.set_materialize_grads(False)
        return log_prob, intersection, prob_sum

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any,
        grad_log_prob: Tensor | None,
        grad_intersection: Tensor | None,
        grad_prob_sum: Tensor | None,
    ) -> tuple[Tensor, None, None, None]:
        probs, labels, valid, target_prob, at_labels = ctx.saved_tensors
        # grad = p * (v * g_P + neg_shift) + onehot * at_target, per position, with
        # at_target = v * p_y * g_I[y] + g_log and neg_shift = -(v * sum_c p_c g_P[c] + at_target)
        at_target = None
        if grad_intersection is not None:
            at_target = grad_intersection.gather(1, labels).mul_(target_prob)
            if valid is not None:
                at_target.mul_(valid)
        if grad_log_prob is not None and grad_log_prob.numel() > 0:
            at_target = grad_log_prob if at_target is None else at_target.add_(grad_log_prob)
        if grad_prob_sum is None:
            neg_shift = torch.zeros_like(target_prob) if at_target is None else at_target.neg()
        else:
            neg_shift = torch.bmm(grad_prob_sum.unsqueeze(1), probs).squeeze(1)
            if valid is not None:
                neg_shift.mul_(valid)
            if at_target is not None:
                neg_shift.add_(at_target)
            neg_shift.neg_()
        if _may_overwrite(probs):
            grad_logits = _scale_in_place(probs, grad_prob_sum, valid, neg_shift)
        else:
            grad_logits = _scale(probs, grad_prob_sum, valid, neg_shift)
        if at_target is not None:
            _add_at(grad_logits, labels, at_labels, at_target)
        return grad_logits, None, None, None


def _flat_positions(labels: Tensor, logits: Tensor) -> Tensor | None:
    """Where each position's target class lies in ``logits`` ``(N, C, S)``, flattened.

    :math:`(n C + y_{n,s}) S + s`, ``(N, S)``, in int32 whenever it fits: on the CPU a 1-d
    ``index_select``/``index_add_`` at these offsets is faster than ``gather`` or
    ``scatter_add_`` along dim 1, and int32 arithmetic, unlike int64, is vectorised. ``None``
    (``gather``/``scatter_add_`` then) off the CPU, where this was not measured, below
    :data:`LARGE_INPUT_POSITIONS` positions and for non-contiguous (channels-last) logits.
    """
    batch, num_classes, positions = logits.shape
    if not logits.is_cpu or batch * positions < LARGE_INPUT_POSITIONS:
        return None
    if not logits.is_contiguous():
        return None
    dtype = torch.int32 if logits.numel() <= torch.iinfo(torch.int32).max else torch.long
    device = labels.device
    sample_start = torch.arange(batch, dtype=dtype, device=device) * (num_classes * positions)
    offsets = labels.to(dtype, memory_format=torch.contiguous_format, copy=True)
    offsets.mul_(positions)
    offsets += torch.arange(positions, dtype=dtype, device=device)
    return offsets.add_(sample_start.unsqueeze(1))


def _take(values: Tensor, labels: Tensor, at: Tensor | None) -> Tensor:
    """``values`` ``(N, C, S)`` at each position's label: ``(N, S)`` (``at``: the offsets)."""
    if at is None:
        return values.gather(1, labels.unsqueeze(1)).squeeze(1)
    return values.view(-1).index_select(0, at.view(-1)).view(at.shape)


def _add_at(target: Tensor, labels: Tensor, at: Tensor | None, source: Tensor) -> Tensor:
    """Add ``source`` ``(N, S)`` into ``target`` ``(N, C, S)`` at each position's label."""
    if at is None:
        return target.scatter_add_(1, labels.unsqueeze(1), source.unsqueeze(1))
    target.view(-1).index_add_(0, at.view(-1), source.reshape(-1))
    return target


def _may_overwrite(probs: Tensor) -> bool:
    """Whether the backward pass may write the gradient into the saved ``probs`` itself.

    Only on the CPU, where a fresh full-size buffer costs a page fault per 4 KiB (about as
    much as the arithmetic); from :data:`LARGE_INPUT_POSITIONS` positions (the update takes
    one operation per class); outside ``torch.compile``; and only when this backward pass
    frees the graph (no ``retain_graph=True``: a second pass would read the overwritten
    probabilities). A torch without that query keeps the out-of-place path. A saved-tensor
    hook (``torch.autograd.graph.saved_tensors_hooks``) that keeps its own reference to the
    packed softmax beyond the backward pass sees it overwritten.
    """
    if not probs.is_cpu or probs.shape[0] * probs.shape[2] < LARGE_INPUT_POSITIONS:
        return False
    return not torch.compiler.is_compiling() and backward_frees_graph()


def _scale(
    probs: Tensor, grad_prob_sum: Tensor | None, valid: Tensor | None, neg_shift: Tensor
) -> Tensor:
    """``probs * (valid * grad_prob_sum + neg_shift)`` into a new tensor, ``(N, C, S)``."""
    if grad_prob_sum is None:
        return probs * neg_shift.unsqueeze(1)
    grad = probs * grad_prob_sum.unsqueeze(-1)
    if valid is not None:
        grad.mul_(valid.unsqueeze(1))
    return grad.addcmul_(probs, neg_shift.unsqueeze(1))


def _scale_in_place(
    probs: Tensor, grad_prob_sum: Tensor | None, valid: Tensor | None, neg_shift: Tensor
) -> Tensor:
    """:func:`_scale` written into ``probs``, one class at a time (one ``(N, S)`` temporary)."""
    if grad_prob_sum is None:
        return probs.mul_(neg_shift.unsqueeze(1))
    factor = torch.empty_like(neg_shift)
    for c in range(probs.shape[1]):
        class_grad = grad_prob_sum[:, c : c + 1]
        if valid is None:
            torch.add(neg_shift, class_grad, out=factor)
        else:
            torch.addcmul(neg_shift, valid, class_grad, out=factor)
        probs[:, c].mul_(factor)
    return probs
