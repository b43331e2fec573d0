r"""Softmax over the class dimension of ``(N, C, S)`` logits, with one fast exponential.

torch's CPU softmax over a dimension that is not the last (dim 1 of ``(N, C, S)``, S > 1)
evaluates ``exp``, whose vectorised float32 kernel is about twice as slow as ``exp2``'s on
the CPU of the README's benchmark. On the CPU, from :data:`EXP2_MIN_POSITIONS` positions,
the helpers here compute

.. math::

    e^{z - m} = 2^{(z - m) \log_2 e}

in passes of torch operations instead: the shift :math:`z - m` first, as torch's softmax does
(so its rounding depends on :math:`|z - m|`, not on :math:`|z|`), then the scaling and
``exp2`` in place. The whole softmax — max, shifted ``exp2``, sum, multiplication by the
reciprocal — took 0.6 to 0.95 of ``softmax``'s time from 150 down to 4 classes at those sizes
(at 4 classes the gain drowns in page-fault noise unless glibc keeps its freed memory), within
the error bound torch's softmax meets: :math:`(|z - m| + 4)` float32 ulps of each probability
plus one ulp of 1, tested against float64.

Elsewhere — on other devices, under ``torch.compile`` (inductor fuses its own), for smaller
inputs (five operations' dispatch costs more than it saves) — torch's kernels run.
On torch's path :func:`softmax_over_classes` takes ``(N, C, 1)`` logits as ``(N, C)``: the
softmax over the last dimension is torch's fast case, the strided one is not.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

#: From this many positions (``N * S``) with S > 1 the CPU takes the ``exp2`` passes: measured
#: at 0.95 of torch's softmax time at 4 classes and 32768 positions, 1.16 at half that.
EXP2_MIN_POSITIONS = 32768

_LOG2_E = 1.0 / math.log(2.0)


def takes_exp2_path(logits: Tensor) -> bool:
    """Whether the helpers compute ``exp`` of ``(N, C, S)`` logits with ``exp2``."""
    if logits.ndim != 3 or not logits.is_cpu or torch.compiler.is_compiling():
        return False
    batch, _, positions = logits.shape
    return positions > 1 and batch * positions >= EXP2_MIN_POSITIONS


def exp_minus(logits: Tensor, shift: Tensor) -> Tensor:
    """``exp(logits - shift)`` in a new tensor; ``shift`` broadcasts, e.g. ``(N, 1, S)``."""
    if takes_exp2_path(logits):
        return torch.sub(logits, shift).mul_(_LOG2_E).exp2_()
    return torch.sub(logits, shift).exp_()


class SoftmaxNormaliser(NamedTuple):
    r"""The log-sum-exp over dim 1 in two parts, :math:`m + \log \sum_c e^{z_c - m}`."""

    peak: Tensor  #: ``(N, 1, S)``: the largest logit :math:`m` of each position
    log_sum: Tensor  #: ``(N, 1, S)``: :math:`\log \sum_c e^{z_c - m} \in [0, \log C]`


def softmax_over_classes(logits: Tensor) -> Tensor:
    """``softmax(logits, 1)`` of ``(N, C, S)`` logits, a new tensor."""
    if takes_exp2_path(logits):
        exps, peak = _shifted_exps(logits)
        # the sum and its reciprocal overwrite the largest logits, no longer needed
        return exps.mul_(torch.sum(exps, 1, keepdim=True, out=peak).reciprocal_())
    return _torch_softmax(logits)


def softmax_and_normaliser(logits: Tensor) -> tuple[Tensor, SoftmaxNormaliser]:
    r"""``softmax(logits, 1)`` of ``(N, C, S)`` logits and the normaliser of its logarithm.

    Log-probabilities taken as :math:`\log p_c = (z_c - m) - \log \sum` round with
    :math:`|z_c - m|`, not with :math:`|z_c|` as :math:`z_c - \operatorname{lse}` would.

    On torch's path the normaliser is read off the softmax at each position's largest logit,
    :math:`\log \sum = -\log p_{\max}` with :math:`p_{\max} \ge 1/C`: exact to rounding, and
    no second exponential.
    """
    if takes_exp2_path(logits):
        probs, peak = _shifted_exps(logits)
        total = probs.sum(1, keepdim=True)
        probs.mul_(total.reciprocal())
        return probs, SoftmaxNormaliser(peak, total.log_())
    probs = _torch_softmax(logits)
    log_sum = probs.amax(1, keepdim=True).log_().neg_()
    return probs, SoftmaxNormaliser(logits.amax(1, keepdim=True), log_sum)


def _shifted_exps(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``exp(logits - m)`` and the largest logit ``m`` ``(N, 1, S)`` of each position."""
    peak = logits.amax(1, keepdim=True)
    return exp_minus(logits, peak), peak


def _torch_softmax(logits: Tensor) -> Tensor:
    """Torch's softmax kernel over dim 1, taking ``(N, C, 1)`` as ``(N, C)`` (its fast case)."""
    if logits.ndim == 3 and logits.shape[2] == 1:
        return logits.squeeze(2).softmax(1).unsqueeze(2)
    return logits.softmax(1)
