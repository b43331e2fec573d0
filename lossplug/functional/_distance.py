r"""Distances between embeddings, shared by the metric-learning losses.

Two distances are offered:

.. math::

    d_{\text{euclidean}}(a, b) = \lVert a - b \rVert_p
    \qquad
    d_{\text{cosine}}(a, b) = 1 - \frac{a \cdot b}{\lVert a \rVert_2 \lVert b \rVert_2}

A loss computes :func:`pairwise_distances` once per batch and reads every pair or triplet it
mines from that one matrix. The temperature-scaled losses (InfoNCE, SupCon) read the cosine
similarities :math:`1 - d_{\text{cosine}}` from :func:`cosine_similarities` instead.

Half-precision embeddings (``float16``/``bfloat16``) are upcast to ``float32`` and autocast is
switched off while the distances are computed, as torch's autocast does for ``cdist``: the
Gram-matrix form :math:`\lVert a\rVert^2 + \lVert b\rVert^2 - 2\,a\cdot b` cancels
catastrophically with an 8-bit mantissa. The distances, and the losses built on them, are
therefore ``float32`` for half-precision inputs, within float32 rounding (relative 1e-5) of
the float32 losses of the same rounded embeddings.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lossplug._precision import at_least_float32, autocast_off

Distance = Literal["euclidean", "cosine"]
DISTANCES: tuple[str, ...] = ("euclidean", "cosine")

#: ``eps`` for :func:`torch.nn.functional.normalize`: a zero embedding has cosine distance 1.
_NORMALIZE_EPS = 1e-12


def pairwise_distances(
    embeddings: Tensor, distance: Distance = "euclidean", p: float = 2.0
) -> Tensor:
    r"""All distances between the rows of ``embeddings``, as one ``(B, B)`` matrix.

    The Euclidean distance (``p=2``) uses the Gram matrix :math:`G = E E^\top`:
    :math:`d_{ij}^2 = G_{ii} + G_{jj} - 2 G_{ij}`, clamped at 0, with a square root whose
    gradient is 0, not NaN, where :math:`d_{ij} = 0` (the diagonal, duplicate embeddings).
    Other ``p`` use :func:`torch.cdist`. The diagonal is exactly 0 for every distance.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        distance: ``"euclidean"`` (the :math:`L_p` distance) or ``"cosine"``
            (:math:`1 - \cos`).
        p: the norm's order for ``"euclidean"``; ignored for ``"cosine"``.

    Returns:
        A symmetric ``(B, B)`` tensor of non-negative distances.
    """
    embeddings = at_least_float32(embeddings)
    with autocast_off(embeddings.device):
        if distance == "euclidean" and p != 2.0:
            return torch.cdist(embeddings, embeddings, p=p)
        on_diagonal = torch.eye(embeddings.shape[0], dtype=torch.bool, device=embeddings.device)
        if distance == "cosine":
            unit = F.normalize(embeddings, dim=1, eps=_NORMALIZE_EPS)
            cosine = torch.addmm(unit.new_ones(()), unit, unit.T, alpha=-1)
            return cosine.masked_fill(on_diagonal, 0.0).clamp_min(0.0)
        squared_norms = embeddings.square().sum(dim=1)
        squared = torch.addmm(squared_norms, embeddings, embeddings.T, alpha=-2.0)
        return _safe_sqrt(squared.add_(squared_norms.unsqueeze(1)), keep=~on_diagonal)


def cosine_similarities(embeddings: Tensor) -> Tensor:
    r"""All cosine similarities :math:`\cos(e_i, e_j)` between the rows of ``embeddings``.

    Computed in float32 at least, with autocast off, as :func:`pairwise_distances`; a zero
    embedding has similarity 0 to every row, itself included.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.

    Returns:
        A symmetric ``(B, B)`` tensor of values in :math:`[-1, 1]`.
    """
    embeddings = at_least_float32(embeddings)
    with autocast_off(embeddings.device):
        unit = F.normalize(embeddings, dim=1, eps=_NORMALIZE_EPS)
        return unit @ unit.T


def paired_distances(
    first: Tensor, second: Tensor, distance: Distance = "euclidean", p: float = 2.0
) -> Tensor:
    """Row-wise distances ``d(first[i], second[i])`` over the last dimension.

    Args:
        first: floating tensor of shape ``(..., D)``.
        second: floating tensor of the same shape.
        distance: ``"euclidean"`` or ``"cosine"``, as in :func:`pairwise_distances`.
        p: the norm's order for ``"euclidean"``; ignored for ``"cosine"``.

    Returns:
        A tensor of shape ``(...)``; its gradient is finite where the rows coincide.
    """
    first, second = at_least_float32(first), at_least_float32(second)
    with autocast_off(first.device):
        if distance == "cosine":
            unit_first = F.normalize(first, dim=-1, eps=_NORMALIZE_EPS)
            unit_second = F.normalize(second, dim=-1, eps=_NORMALIZE_EPS)
            return (1.0 - (unit_first * unit_second).sum(-1)).clamp_min(0.0)
        return torch.linalg.vector_norm(first - second, ord=p, dim=-1)


def _safe_sqrt(squared: Tensor, keep: Tensor) -> Tensor:
    """``sqrt`` where ``squared > 0`` and ``keep`` holds, else 0; gradient 0 at the zeros.

    The gradient is 0, not ``inf * 0 = NaN``, where the result is 0: the double ``where``
    keeps the zeros out of ``sqrt`` itself, so its backward never divides by zero. Negative
    values (rounding in the Gram-matrix form) count as 0.
    """
    positive = (squared > 0) & keep
    return torch.where(positive, torch.where(positive, squared, 1.0).sqrt_(), 0.0)
