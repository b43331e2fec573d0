r"""Softmax statistics of class-index targets, with hand-written backward passes.

Overlap losses on softmax probabilities against class indices (Dice, Tversky, Dice +
cross-entropy) need only a few per-position or per-class numbers:

.. math::

    \log p_{n,y,s} = z_{n,y,s} - \operatorname{logsumexp}_c z_{n,c,s}, \qquad
    I_{n,c} = \sum_{s:\, y_{n,s} = c} v_{n,s}\, p_{n,c,s}, \qquad
    P_{n,c} = \sum_s v_{n,s}\, p_{n,c,s},

with :math:`v` the 0/1 mask of kept (not ignored) positions. Built from autograd's pieces
(``softmax``, ``gather``, ``sum``), each piece saves or allocates its own full-size
``(N, C, S)`` tensor in the backward pass: a zero-filled gradient for ``gather``, another for
the sum, the softmax's output. :func:`softmax_overlap_stats` keeps one full-size tensor (the
softmax) and writes the gradient of the logits into a single buffer,

.. math::

    \frac{\partial L}{\partial z_{n,c,s}} = v_{n,s} \bigl[ p_{n,c,s} (g^P_{n,c} - d_{n,s})
        + [c = y_{n,s}]\, p_{n,y,s}\, g^I_{n,y} \bigr]
        + g^{\log}_{n,s} \bigl([c = y_{n,s}] - p_{n,c,s}\bigr), \quad
    d_{n,s} = \sum_c p_{n,c,s}\, g^P_{n,c} + p_{n,y,s}\, g^I_{n,y}

(:math:`g` the incoming gradients), into the softmax itself, one class at a time (a second pass
through a retained graph recomputes the softmax from the logits), which on the CPU is both faster
and leaner: fresh memory is paid for in page faults on every call. Large ``(N, C, S)`` inputs
on the CPU take the softmax and label reads of :mod:`lossplug.kernels.class_softmax`. It is
differentiable once (a second derivative raises an error rather than being silently wrong). It
takes float32 (or wider) logits, as the losses upcast 16-bit ones, and runs with autocast off:
autocast would compute the masked sums (a ``bmm``) in 16 bits.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lossplug._precision import autocast_off
from lossplug.kernels.class_softmax import (
    add_at,
    flat_offsets,
    softmax,
    softmax_and_log_prob,
    take,
)


class OverlapSoftmaxStats(NamedTuple):
    """Outputs of :func:`softmax_overlap_stats`."""

    log_prob: Tensor  #: ``(N, S)``: log-probability of each position's target class
    intersection: Tensor  #: ``(N, C)``: summed target-class probabilities per class
    prob_sum: Tensor  #: ``(N, C)``: summed probabilities per class


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


class _OverlapStats(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: FunctionCtx,
        logits: Tensor,
        labels: Tensor,
        valid: Tensor | None,
        with_log_prob: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        at_labels = flat_offsets(labels, logits)
        if with_log_prob:
            probs, log_prob = softmax_and_log_prob(logits, labels, at_labels)
            target_prob = log_prob.exp()
        else:
            probs = softmax(logits)
            target_prob = take(probs, labels, at_labels)
            log_prob = target_prob.new_empty(0)
        if valid is None:
            prob_sum = probs.sum(-1)
            kept_target_prob = target_prob
        else:
            prob_sum = torch.bmm(probs, valid.unsqueeze(-1)).squeeze(-1)
            kept_target_prob = target_prob * valid
        # scatter_add_ refuses labels outside [0, C): a flat offset that read another class's
        # or sample's entry never gets past this line
        intersection = prob_sum.new_zeros(prob_sum.shape).scatter_add_(1, labels, kept_target_prob)
        ctx.save_for_backward(logits, labels, valid, target_prob, at_labels)
        # not saved: the first backward pass writes the gradient into it (see ``backward``)
        ctx.probs, ctx.with_log_prob = probs, with_log_prob
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
        logits, labels, valid, target_prob, at_labels = ctx.saved_tensors
        # the forward's softmax becomes the gradient, in place; a later pass through a
        # retained graph recomputes it from the logits
        probs, ctx.probs = ctx.probs, None
        if probs is None:
            probs = _softmax(logits, labels, at_labels, ctx.with_log_prob)
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
        grad_logits = _scale(probs, grad_prob_sum, valid, neg_shift)
        if at_target is not None:
            add_at(grad_logits, labels, at_labels, at_target)
        return grad_logits, None, None, None


def _softmax(
    logits: Tensor, labels: Tensor, at_labels: Tensor | None, with_log_prob: bool
) -> Tensor:
    """The softmax over dim 1, computed as the forward pass computes it (to the bit)."""
    if with_log_prob:
        return softmax_and_log_prob(logits, labels, at_labels).probs
    return softmax(logits)


def _scale(
    probs: Tensor, grad_prob_sum: Tensor | None, valid: Tensor | None, neg_shift: Tensor
) -> Tensor:
    """``probs * (valid * grad_prob_sum + neg_shift)``, written into ``probs`` ``(N, C, S)``.

    One class at a time, so the factor takes one ``(N, S)`` buffer, not a full-size one.
    """
    if grad_prob_sum is None:
        return probs.mul_(neg_shift.unsqueeze(1))
    factor = torch.empty_like(neg_shift)
    for c in range(probs.shape[1]):
        weight = grad_prob_sum[:, c : c + 1]
        if valid is None:
            torch.add(neg_shift, weight, out=factor)
        else:
            torch.addcmul(neg_shift, valid, weight, out=factor)
        probs[:, c].mul_(factor)
    return probs
