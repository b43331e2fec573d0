r"""Metric-learning losses: contrastive (pairs) and triplet, mined inside the batch.

Both take ``(embeddings, labels)``: embeddings of shape ``(B, D)`` and integer labels of
shape ``(B,)``. Pairs and triplets are formed from the batch, and every distance is read from
one ``(B, B)`` matrix (:func:`lossplug.functional._distance.pairwise_distances`).

Contrastive loss (Hadsell, Chopra & LeCun 2006, "Dimensionality Reduction by Learning an
Invariant Mapping", eq. 4 with a positive margin added), over the pairs :math:`i < j` with
distance :math:`d`:

.. math::

    \ell_{\text{pos}} = \tfrac12 \max(0, d - m_{\text{pos}})^2 \quad (y_i = y_j), \qquad
    \ell_{\text{neg}} = \tfrac12 \max(0, m_{\text{neg}} - d)^2 \quad (y_i \ne y_j)

or, with ``squared=False``, the unsquared hinges :math:`\max(0, d - m_{\text{pos}})` and
:math:`\max(0, m_{\text{neg}} - d)` of pytorch-metric-learning's ``ContrastiveLoss``.

Triplet loss (Schroff, Kalenichenko & Philbin 2015, "FaceNet"), over triplets of an anchor
:math:`a`, a positive :math:`p \ne a` with the anchor's label and a negative :math:`n` with
another label:

.. math::

    \ell(a, p, n) = \max\bigl(0,\; d(a, p) - d(a, n) + \text{margin}\bigr)

with every valid triplet (``mining="all"``) or, per anchor, the hardest positive and hardest
negative (``mining="batch_hard"``, Hermans, Beyer & Leibe 2017, "In Defense of the Triplet
Loss for Person Re-Identification"). Its mean is taken over the *active* triplets (loss > 0),
as FaceNet and pytorch-metric-learning's ``AvgNonZeroReducer`` do, so easy triplets do not
dilute the gradient. A batch without a valid or an active pair or triplet gives a loss of 0
with zero gradients, never NaN.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lossplug._validation import (
    check_choice,
    check_floating,
    check_number,
    check_reduction,
)
from lossplug.functional._distance import (
    DISTANCES,
    Distance,
    paired_distances,
    pairwise_distances,
)
from lossplug.functional._reduce import reduce_loss

Mining = Literal["all", "batch_hard"]
MININGS: tuple[str, ...] = ("all", "batch_hard")


def contrastive(
    embeddings: Tensor,
    labels: Tensor,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: Distance = "euclidean",
    squared: bool = True,
    reduction: str = "mean",
) -> Tensor:
    r"""Contrastive loss over all pairs in the batch, the sum of :func:`contrastive_components`.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        pos_margin: positive pairs closer than this cost nothing; >= 0.
        neg_margin: negative pairs farther than this cost nothing; >= ``pos_margin``.
        distance: ``"euclidean"`` or ``"cosine"`` (:math:`1 - \cos`).
        squared: square the hinges and halve them (Hadsell et al.) or not (PML).
        reduction: ``"mean"`` (mean over positive pairs + mean over negative pairs),
            ``"sum"`` or ``"none"`` (one value per pair ``i < j``, row-major).

    Returns:
        The loss: a scalar, or a tensor of length ``B * (B - 1) / 2`` for ``"none"``.
    """
    parts = contrastive_components(
        embeddings,
        labels,
        pos_margin=pos_margin,
        neg_margin=neg_margin,
        distance=distance,
        squared=squared,
        reduction=reduction,
    )
    return parts["pos"] + parts["neg"]


def contrastive_components(
    embeddings: Tensor,
    labels: Tensor,
    *,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    distance: Distance = "euclidean",
    squared: bool = True,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    """The contrastive loss's two terms, ``pos`` (same-label pairs) and ``neg`` (the others).

    Each term is reduced over its own pairs: with ``"mean"`` it is the mean over the positive
    (resp. negative) pairs, and 0 when there are none, so the total weighs both sets equally
    whatever their sizes. With ``"none"`` both are per-pair tensors over all pairs
    ``i < j`` (row-major), ``pos`` being 0 at negative pairs and ``neg`` 0 at positive ones.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        pos_margin: positive pairs closer than this cost nothing; >= 0.
        neg_margin: negative pairs farther than this cost nothing; >= ``pos_margin``.
        distance: ``"euclidean"`` or ``"cosine"``.
        squared: square the hinges and halve them (Hadsell et al.) or not (PML).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``{"pos": ..., "neg": ...}``; their sum is :func:`contrastive`.
    """
    name = "contrastive"
    pos_margin, neg_margin = check_contrastive_options(
        pos_margin, neg_margin, distance, squared, reduction
    )
    check_embeddings_and_labels(name, embeddings, labels)
    batch = embeddings.shape[0]
    rows, cols = torch.triu_indices(batch, batch, offset=1, device=embeddings.device)
    pair_distances = pairwise_distances(embeddings, distance)[rows, cols]
    same_label = labels[rows] == labels[cols]
    pos = torch.relu(pair_distances - pos_margin)
    neg = torch.relu(neg_margin - pair_distances)
    if squared:
        pos, neg = 0.5 * pos.square(), 0.5 * neg.square()
    return {
        "pos": reduce_loss(pos, reduction, weight=same_label),
        "neg": reduce_loss(neg, reduction, weight=~same_label),
    }


def triplet(
    embeddings: Tensor,
    labels: Tensor,
    *,
    margin: float = 0.2,
    mining: Mining = "all",
    distance: Distance = "euclidean",
    p: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    """Triplet loss over the triplets mined from the batch.

    ``mining="all"`` builds every valid triplet at once from the distance matrix, a
    ``(B, B, B)`` tensor (mind the memory for large batches); ``"batch_hard"`` keeps one
    triplet per anchor, its farthest positive and nearest negative, and skips anchors that
    lack either.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        margin: the required gap between negative and positive distances; >= 0.
        mining: ``"all"`` or ``"batch_hard"``.
        distance: ``"euclidean"`` or ``"cosine"``.
        p: the norm's order for ``"euclidean"`` (>= 1); must stay 2 for ``"cosine"``.
        reduction: ``"mean"`` over the active triplets (loss > 0; 0 if none), ``"sum"``, or
            ``"none"``: the valid triplets' losses, in ``(a, p, n)`` row-major order for
            ``"all"`` and one per anchor that has a triplet for ``"batch_hard"``.

    Returns:
        The loss: a scalar, or a 1-D tensor for ``"none"``.
    """
    name = "triplet"
    margin, p = check_triplet_options(margin, mining, distance, p, reduction)
    check_embeddings_and_labels(name, embeddings, labels)
    distances = pairwise_distances(embeddings, distance, p)
    same_label = labels[:, None] == labels[None, :]
    is_positive = same_label & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    is_negative = ~same_label
    if mining == "all":
        valid = is_positive[:, :, None] & is_negative[:, None, :]
        violation = distances[:, :, None] - distances[:, None, :] + margin
    else:
        valid = is_positive.any(dim=1) & is_negative.any(dim=1)
        hardest_positive = distances.masked_fill(~is_positive, -torch.inf).amax(dim=1)
        hardest_negative = distances.masked_fill(~is_negative, torch.inf).amin(dim=1)
        violation = hardest_positive - hardest_negative + margin
    losses = torch.where(valid, torch.relu(violation), torch.zeros_like(violation))
    if reduction == "none":
        return losses[valid]
    return _reduce_over_active(losses, reduction)


def triplet_margin(
    anchor: Tensor,
    positive: Tensor,
    negative: Tensor,
    *,
    margin: float = 1.0,
    distance: Distance = "euclidean",
    p: float = 2.0,
    reduction: str = "mean",
) -> Tensor:
    r"""Triplet loss on given triplets, row by row, as torch's ``triplet_margin_loss``.

    :math:`\max(0, d(a_i, p_i) - d(a_i, n_i) + \text{margin})`. Unlike torch, no ``eps`` is
    added to the differences, so distances are exact (torch's are off by up to
    :math:`\varepsilon \sqrt{D}`, :math:`\varepsilon = 10^{-6}`) and the gradient is still
    finite where rows coincide.

    Args:
        anchor: floating tensor of shape ``(N, D)`` (or ``(D,)``).
        positive: same shape as ``anchor``.
        negative: same shape as ``anchor``.
        margin: >= 0.
        distance: ``"euclidean"`` or ``"cosine"``.
        p: the norm's order for ``"euclidean"`` (>= 1); must stay 2 for ``"cosine"``.
        reduction: ``"mean"`` (plain mean over rows, as torch), ``"sum"`` or ``"none"``.

    Returns:
        The loss: a scalar, or shape ``(N,)`` for ``"none"``.
    """
    name = "triplet_margin"
    margin, p = _check_margin_and_distance(name, margin, distance, p, reduction)
    for argument, tensor in (("anchor", anchor), ("positive", positive), ("negative", negative)):
        check_floating(name, argument, tensor, "embeddings")
        if tensor.ndim not in (1, 2) or tensor.shape != anchor.shape:
            raise ValueError(
                f"{name}: {argument!r} must have shape (N, D) or (D,), the same as 'anchor', "
                f"got {tuple(tensor.shape)} with anchor {tuple(anchor.shape)}"
            )
    violation = (
        paired_distances(anchor, positive, distance, p)
        - paired_distances(anchor, negative, distance, p)
        + margin
    )
    return reduce_loss(torch.relu(violation), reduction)


def check_contrastive_options(
    pos_margin: float, neg_margin: float, distance: str, squared: bool, reduction: str
) -> tuple[float, float]:
    """Validate the contrastive loss's options.

    ``neg_margin < pos_margin`` is rejected: a positive and a negative pair at a distance
    between the two margins would both cost nothing, so the loss would not need to separate
    the classes at all.

    Returns:
        ``(pos_margin, neg_margin)`` as floats.

    Raises:
        TypeError: for a non-number margin or a non-bool ``squared``.
        ValueError: for a negative or non-finite margin, ``neg_margin < pos_margin``, an
            unknown ``distance`` or ``reduction``.
    """
    name = "contrastive"
    pos_margin = check_number(name, "pos_margin", pos_margin, minimum=0.0)
    neg_margin = check_number(name, "neg_margin", neg_margin, minimum=0.0)
    if neg_margin < pos_margin:
        raise ValueError(
            f"{name}: option 'neg_margin' must be >= 'pos_margin' ({pos_margin!r}), got "
            f"{neg_margin!r}; otherwise pairs between the margins cost nothing either way"
        )
    check_choice(name, "distance", distance, DISTANCES)
    if not isinstance(squared, bool):
        raise TypeError(f"{name}: option 'squared' must be a bool, got {squared!r}")
    check_reduction(name, reduction)
    return pos_margin, neg_margin


def check_triplet_options(
    margin: float, mining: str, distance: str, p: float, reduction: str
) -> tuple[float, float]:
    """Validate the triplet loss's options.

    ``p`` must be >= 1 (a norm) and stays 2 for ``distance="cosine"``, which has no order:
    a ``p`` that would be silently ignored is refused.

    Returns:
        ``(margin, p)`` as floats.

    Raises:
        TypeError: for a non-number ``margin`` or ``p``.
        ValueError: for a negative or non-finite ``margin``, ``p < 1``, ``p != 2`` with
            ``"cosine"``, an unknown ``mining``, ``distance`` or ``reduction``.
    """
    check_choice("triplet", "mining", mining, MININGS)
    return _check_margin_and_distance("triplet", margin, distance, p, reduction)


def _check_margin_and_distance(
    loss: str, margin: float, distance: str, p: float, reduction: str
) -> tuple[float, float]:
    """The options both triplet losses share; see :func:`check_triplet_options`."""
    margin = check_number(loss, "margin", margin, minimum=0.0)
    check_choice(loss, "distance", distance, DISTANCES)
    p = check_number(loss, "p", p, minimum=1.0)
    if distance == "cosine" and p != 2.0:
        raise ValueError(
            f"{loss}: option 'p' applies to distance='euclidean' only; leave it at 2.0 for "
            f"distance='cosine', got {p!r}"
        )
    check_reduction(loss, reduction)
    return margin, p


def check_embeddings_and_labels(loss: str, embeddings: Tensor, labels: Tensor) -> None:
    """Require floating embeddings ``(B, D)`` and integer labels ``(B,)``.

    Raises:
        TypeError: if ``embeddings`` is not floating or ``labels`` not an integer tensor.
        ValueError: if the shapes are not ``(B, D)`` and ``(B,)``.
    """
    check_floating(loss, "embeddings", embeddings, "embeddings")
    if embeddings.ndim != 2:
        raise ValueError(
            f"{loss}: 'embeddings' must have shape (B, D), got shape {tuple(embeddings.shape)}"
        )
    if not isinstance(labels, Tensor):
        raise TypeError(f"{loss}: 'labels' must be a torch.Tensor of class labels, got {labels!r}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(
            f"{loss}: 'labels' must be an integer tensor of class labels (torch.long), "
            f"got {labels.dtype}"
        )
    if tuple(labels.shape) != (embeddings.shape[0],):
        raise ValueError(
            f"{loss}: 'labels' must have shape ({embeddings.shape[0]},), one label per row of "
            f"'embeddings' {tuple(embeddings.shape)}, got shape {tuple(labels.shape)}"
        )


def _reduce_over_active(losses: Tensor, reduction: str) -> Tensor:
    """Sum, or mean over the active (> 0) entries: 0 with zero gradients when none is active."""
    return reduce_loss(losses, reduction, weight=losses > 0)
