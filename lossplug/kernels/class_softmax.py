r"""The class softmax of ``(N, C, S)`` logits on the CPU, and their entries at the labels.

Two of torch's CPU kernels are slow along dimension 1 of ``(N, C, S)`` tensors, the layout of
segmentation logits: ``softmax``/``log_softmax`` evaluate ``exp``, whose vectorised float32
kernel takes about twice as long as ``exp2``'s, and ``gather``/``scatter_add_`` along a
dimension that is not the last. From :data:`LARGE_POSITIONS` positions (``N * S``, with
``S > 1``) on the CPU the kernels here compute instead

.. math::

    p_{n,c,s} = \frac{2^{(z_{n,c,s} - m_{n,s}) \log_2 e}}
        {\sum_{c'} 2^{(z_{n,c',s} - m_{n,s}) \log_2 e}}, \qquad m_{n,s} = \max_c z_{n,c,s},

in passes of torch operations (the shift first, as torch's softmax does, so the rounding
depends on :math:`|z - m|`), and read or add each position's label entry at its flat offset
:math:`(n C + y_{n,s}) S + s` with ``index_select``/``index_add_``. Elsewhere, and for smaller
inputs (where the extra operations cost more than they save), torch's kernels run.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from lossplug._transforms import wrapped_by_torch_func

#: From this many positions (``N * S``, ``S > 1``) the CPU takes the passes above.
LARGE_POSITIONS = 32768

_LOG2_E = 1.0 / math.log(2.0)


class SoftmaxParts(NamedTuple):
    r"""The softmax of ``(N, C, S)`` logits and :math:`\log p` at each position's label."""

    probs: Tensor  #: ``(N, C, S)``
    log_prob: Tensor  #: ``(N, S)``


def takes_large_path(logits: Tensor) -> bool:
    """Whether ``(N, C, S)`` logits take the ``exp2`` passes and the flat offsets.

    Not for a tensor a ``torch.func`` transform wraps: the kernels that use these paths have no
    batching rule.
    """
    if logits.ndim != 3 or not logits.is_cpu or not logits.is_contiguous():
        return False
    if wrapped_by_torch_func(logits):
        return False
    batch, _, positions = logits.shape
    return positions > 1 and batch * positions >= LARGE_POSITIONS


def softmax(logits: Tensor) -> Tensor:
    """``softmax(logits, 1)`` of ``(N, C, S)`` logits, a new tensor."""
    if not takes_large_path(logits):
        return logits.softmax(1)
    probs, peak = shifted_exps(logits)
    # the sum and its reciprocal overwrite the largest logits, no longer needed
    return probs.mul_(torch.sum(probs, 1, keepdim=True, out=peak).reciprocal_())


def softmax_and_log_prob(logits: Tensor, labels: Tensor, at_labels: Tensor | None) -> SoftmaxParts:
    r"""The softmax and the log-probabilities at the labels, rounding with :math:`|z - m|`.

    Args:
        logits: ``(N, C, S)`` floating tensor.
        labels: ``(N, S)`` int64 class indices.
        at_labels: the labels' flat offsets (:func:`flat_offsets`), or ``None``.

    Returns:
        The probabilities and :math:`\log p_y = (z_y - m) - \log \sum_c e^{z_c - m}`.
    """
    if not takes_large_path(logits):
        log_probs = logits.log_softmax(1)
        log_prob = take(log_probs, labels, at_labels)
        return SoftmaxParts(log_probs.exp_(), log_prob)
    probs, peak = shifted_exps(logits)
    total = probs.sum(1, keepdim=True)
    log_prob = take(logits, labels, at_labels).sub_(peak.squeeze(1)).sub_(total.log().squeeze(1))
    return SoftmaxParts(probs.mul_(total.reciprocal_()), log_prob)


def flat_offsets(labels: Tensor, logits: Tensor) -> Tensor | None:
    """Where each position's label lies in ``(N, C, S)`` logits, flattened; ``None`` if not taken.

    :math:`(n C + y_{n,s}) S + s`, ``(N, S)``, in int32 where it fits (int32 arithmetic, unlike
    int64, is vectorised).
    """
    if not takes_large_path(logits):
        return None
    batch, num_classes, positions = logits.shape
    dtype = torch.int32 if logits.numel() <= torch.iinfo(torch.int32).max else torch.long
    sample_start = torch.arange(batch, dtype=dtype) * (num_classes * positions)
    offsets = labels.to(dtype, memory_format=torch.contiguous_format, copy=True)
    offsets.mul_(positions)
    offsets += torch.arange(positions, dtype=dtype)
    return offsets.add_(sample_start.unsqueeze(1))


def take(values: Tensor, labels: Tensor, at: Tensor | None) -> Tensor:
    """``values`` ``(N, C, S)`` at each position's label, ``(N, S)`` (``at``: flat offsets)."""
    if at is None:
        return values.gather(1, labels.unsqueeze(1)).squeeze(1)
    return values.view(-1).index_select(0, at.view(-1)).view(at.shape)


def add_at(target: Tensor, labels: Tensor, at: Tensor | None, source: Tensor) -> Tensor:
    """Add ``source`` ``(N, S)`` into ``target`` ``(N, C, S)`` at each position's label."""
    if at is None:
        return target.scatter_add_(1, labels.unsqueeze(1), source.unsqueeze(1))
    target.view(-1).index_add_(0, at.view(-1), source.reshape(-1))
    return target


def shifted_exps(logits: Tensor, peak: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``exp(logits - m)`` (as ``exp2``, a new tensor) and the largest logits ``m`` ``(N, 1, S)``.

    Args:
        logits: ``(N, C, S)`` floating tensor.
        peak: ``m``, if already known.
    """
    if peak is None:
        peak = logits.amax(1, keepdim=True)
    return torch.sub(logits, peak).mul_(_LOG2_E).exp2_(), peak
