r"""Metric-learning losses: contrastive (pairs), triplet, InfoNCE and SupCon, inside the batch.

All take ``(embeddings, labels)``: embeddings of shape ``(B, D)`` and integer labels of
shape ``(B,)``. Pairs and triplets are formed from the batch, and every distance is read from
one ``(B, B)`` matrix (:func:`lossplug.functional._distance.pairwise_distances`); InfoNCE and
SupCon read one matrix of cosine similarities.

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

InfoNCE and SupCon score the cosine similarities divided by a temperature :math:`\tau`,
:math:`s_{ij} = \cos(e_i, e_j) / \tau`. A *positive* of an anchor :math:`a` is another sample
with its label, :math:`p \in P(a)`; a *negative* is a sample with another label,
:math:`n \in N(a)`. InfoNCE, as NT-Xent (Chen, Kornblith, Norouzi & Hinton 2020, "A Simple
Framework for Contrastive Learning of Visual Representations", eq. 1) and
pytorch-metric-learning's ``NTXentLoss``, scores each positive pair :math:`(a, p)` against the
anchor's negatives:

.. math::

    \ell(a, p) = \underbrace{-s_{ap}}_{\text{pos}}
    + \underbrace{\log\Bigl(e^{s_{ap}} + \sum_{n \in N(a)} e^{s_{an}}\Bigr)}_{\text{neg}}

With two views of each image per label (SimCLR's batches) the denominator holds every
:math:`k \ne a`; with more samples per label the anchor's other positives are left out of it,
as in ``NTXentLoss``. The mean runs over the positive pairs. SupCon (Khosla et al. 2020,
"Supervised Contrastive Learning", eq. 2, :math:`\mathcal{L}^{sup}_{out}`, as
pytorch-metric-learning's ``SupConLoss``) scores each anchor :math:`i` against all others:

.. math::

    \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \log \frac{e^{s_{ip}}}{\sum_{k \ne i} e^{s_{ik}}}
    = \underbrace{-\frac{1}{|P(i)|} \sum_{p \in P(i)} s_{ip}}_{\text{pos}}
    + \underbrace{\log \sum_{k \ne i} e^{s_{ik}}}_{\text{neg}}

and the mean runs over the anchors. For both, the ``pos`` term is the alignment of positives
and the ``neg`` term the log-sum-exp that pushes the other samples apart (the uniformity
term of Wang & Isola 2020); their sum is the loss, pair by pair or anchor by anchor and in
every reduction. Only pairs and anchors that have both a positive and a negative count: an
anchor without a positive is left out of the mean, as in pytorch-metric-learning. A batch
in which no anchor has both (all labels distinct, or all equal) gives 0 with zero gradients,
never NaN, as pytorch-metric-learning's losses do when a batch has no positive or no negative
pair; its count (:func:`infonce_pair_count`, :func:`supcon_anchor_count`) is 0, so an epoch
mean skips it. One difference from ``SupConLoss``: its ``AvgNonZeroReducer`` also leaves out
anchors whose loss rounds to exactly 0 (one positive, far more similar than every negative,
at a small temperature), which makes its mean depend on rounding; lossplug keeps them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from lossplug._validation import (
    check_bool,
    check_choice,
    check_floating,
    check_number,
    check_reduction,
    value_checks_apply,
)
from lossplug.functional._distance import (
    DISTANCES,
    Distance,
    cosine_similarities,
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
    distances = pairwise_distances(embeddings, distance)
    same_label = labels[:, None] == labels[None, :]
    if reduction == "none":  # one value per pair i < j
        rows, cols = torch.triu_indices(*distances.shape, offset=1, device=distances.device)
        distances, same_label = distances[rows, cols], same_label[rows, cols]
    is_negative = ~same_label
    # mean/sum: every pair twice, (i, j) and (j, i): the same means, twice the sums
    is_positive = same_label if reduction == "none" else same_label.fill_diagonal_(False)
    pos = torch.relu(distances - pos_margin)
    neg = torch.relu(neg_margin - distances)
    if squared:
        pos, neg = 0.5 * pos.square(), 0.5 * neg.square()
    if reduction != "sum":
        return {
            "pos": reduce_loss(pos, reduction, weight=is_positive),
            "neg": reduce_loss(neg, reduction, weight=is_negative),
        }
    return {"pos": 0.5 * (pos * is_positive).sum(), "neg": 0.5 * (neg * is_negative).sum()}


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
    r"""Triplet loss over the triplets mined from the batch.

    ``mining="all"`` takes every valid triplet. Its ``"mean"`` and ``"sum"`` come from each
    anchor's sorted negative distances and their prefix sums, in :math:`O(B^2 \log B)` time
    and :math:`O(B^2)` memory; only ``reduction="none"``, which returns every triplet's loss,
    builds the ``(B, B, B)`` tensor. ``"batch_hard"`` keeps one triplet per anchor, its
    farthest positive and nearest negative, and skips anchors that lack either.

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
    margin, p = check_triplet_options(margin, mining, distance, p, reduction)
    if reduction != "none":
        total, active = triplet_total_and_count(
            embeddings, labels, margin=margin, mining=mining, distance=distance, p=p
        )
        return total if reduction == "sum" else total / active.clamp_min(1).to(total.dtype)
    distances, is_positive, is_negative = _triplet_geometry(embeddings, labels, distance, p)
    if mining == "all":
        valid = is_positive[:, :, None] & is_negative[:, None, :]
        violation = distances[:, :, None] - distances[:, None, :] + margin
        losses = torch.where(valid, torch.relu(violation), torch.zeros_like(violation))
        return losses[valid]
    losses, valid = _batch_hard_losses(distances, is_positive, is_negative, margin)
    return losses[valid]


def triplet_total_and_count(
    embeddings: Tensor,
    labels: Tensor,
    *,
    margin: float = 0.2,
    mining: Mining = "all",
    distance: Distance = "euclidean",
    p: float = 2.0,
) -> tuple[Tensor, Tensor]:
    """The summed loss of the active triplets and their number: the two parts of the mean.

    The count is what an epoch mean weighs this batch by, so a batch (or a process) without
    an active triplet adds nothing to it. Arguments as in :func:`triplet`.

    Returns:
        ``(total, count)``, two 0-d tensors; ``total`` carries the gradient.
    """
    margin, p = check_triplet_options(margin, mining, distance, p, "sum")
    distances, is_positive, is_negative = _triplet_geometry(embeddings, labels, distance, p)
    if mining == "all":
        return _all_triplets_total(distances, is_positive, is_negative, margin)
    losses, _ = _batch_hard_losses(distances, is_positive, is_negative, margin)
    return losses.sum(), (losses > 0).sum()


def _triplet_geometry(
    embeddings: Tensor, labels: Tensor, distance: Distance, p: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Validate, then the one distance matrix and the positive / negative pair masks."""
    check_embeddings_and_labels("triplet", embeddings, labels)
    return pairwise_distances(embeddings, distance, p), *_pair_masks(labels)


def _pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(is_positive, is_negative)``, ``(B, B)``: same label but not itself; another label."""
    same_label = labels[:, None] == labels[None, :]
    is_positive = same_label & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return is_positive, ~same_label


def _batch_hard_losses(
    distances: Tensor, is_positive: Tensor, is_negative: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    """Per anchor: the hardest triplet's loss (0 without one), and whether it has one."""
    valid = is_positive.any(dim=1) & is_negative.any(dim=1)
    hardest_positive = distances.masked_fill(~is_positive, -torch.inf).amax(dim=1)
    hardest_negative = distances.masked_fill(~is_negative, torch.inf).amin(dim=1)
    violation = hardest_positive - hardest_negative + margin
    return torch.where(valid, torch.relu(violation), torch.zeros_like(violation)), valid


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


def infonce(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    reduction: str = "mean",
) -> Tensor:
    r"""InfoNCE (NT-Xent) over the positive pairs of the batch, the sum of its two components.

    SimCLR's NT-Xent (Chen et al. 2020) with positives given by the labels, as
    pytorch-metric-learning's ``NTXentLoss``: each positive pair :math:`(a, p)` is scored by
    :math:`-s_{ap} + \log\bigl(e^{s_{ap}} + \sum_{n \in N(a)} e^{s_{an}}\bigr)`, with
    :math:`s = \cos / \tau` (see the module's docstring and :func:`infonce_components`).

    Args:
        embeddings: floating tensor of shape ``(B, D)``: every view of the batch, with the
            same label for the views of one sample.
        labels: integer tensor of shape ``(B,)``.
        temperature: :math:`\tau > 0`, a number or a 0-d floating tensor (a learned one).
        reduction: ``"mean"`` over the positive pairs whose anchor has a negative (0 if none),
            ``"sum"``, or ``"none"``: one value per such pair ``(a, p)``, row-major.

    Returns:
        The loss: a scalar, or a 1-D tensor for ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.functional import infonce
        >>> views = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
        >>> infonce(views, torch.tensor([0, 0, 1, 1]), temperature=0.5)
        tensor(0.2899)
    """
    parts = infonce_components(embeddings, labels, temperature=temperature, reduction=reduction)
    return parts["pos"] + parts["neg"]


def infonce_components(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.07,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    r"""InfoNCE's two terms per positive pair: ``pos`` :math:`= -s_{ap}`, ``neg`` the log-sum-exp.

    ``neg`` :math:`= \log\bigl(e^{s_{ap}} + \sum_{n \in N(a)} e^{s_{an}}\bigr)` holds the
    positive itself besides the negatives, so ``pos + neg`` :math:`\ge 0` is the pair's loss
    although ``pos`` alone is negative where positives are similar. Both are reduced over the
    same pairs (those whose anchor has a negative), so they add up to :func:`infonce` in every
    reduction; with ``"none"`` both are 1-D, one value per pair, row-major.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        temperature: :math:`\tau > 0`, a number or a 0-d floating tensor.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``{"pos": ..., "neg": ...}``; their sum is :func:`infonce`.
    """
    logits, is_positive, is_negative = _scaled_similarities(
        "infonce", embeddings, labels, temperature, reduction
    )
    negatives = _masked_logsumexp(logits, is_negative)
    pairs = _infonce_pairs(is_positive, is_negative)
    return {
        "pos": _reduce_kept(-logits, pairs, reduction),
        "neg": _reduce_kept(torch.logaddexp(logits, negatives.unsqueeze(1)), pairs, reduction),
    }


def supcon(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
) -> Tensor:
    r"""Supervised contrastive loss (SupCon, :math:`\mathcal{L}^{sup}_{out}`) over the anchors.

    Khosla et al. (2020), eq. 2, as pytorch-metric-learning's ``SupConLoss``: each anchor
    :math:`i` is scored by :math:`-\frac{1}{|P(i)|} \sum_{p \in P(i)}
    \log\bigl(e^{s_{ip}} / \sum_{k \ne i} e^{s_{ik}}\bigr)` with :math:`s = \cos / \tau`, the
    sum of its two components (:func:`supcon_components`).

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        temperature: :math:`\tau > 0`, a number or a 0-d floating tensor (a learned one).
        reduction: ``"mean"`` over the anchors that have a positive and a negative (0 if none),
            ``"sum"``, or ``"none"``: one value per such anchor, in batch order.

    Returns:
        The loss: a scalar, or a 1-D tensor for ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.functional import supcon
        >>> emb = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.9, 0.0], [0.0, 1.0]])
        >>> supcon(emb, torch.tensor([0, 0, 0, 1]), temperature=0.5)
        tensor(0.7637)
    """
    parts = supcon_components(embeddings, labels, temperature=temperature, reduction=reduction)
    return parts["pos"] + parts["neg"]


def supcon_components(
    embeddings: Tensor,
    labels: Tensor,
    *,
    temperature: float | Tensor = 0.1,
    reduction: str = "mean",
) -> dict[str, Tensor]:
    r"""SupCon's two terms per anchor: ``pos``, minus the mean positive :math:`s_{ip}`, and ``neg``.

    ``neg`` :math:`= \log \sum_{k \ne i} e^{s_{ik}}` runs over every other sample, positives
    included, so ``pos + neg`` :math:`\ge \log |P(i)|` is the anchor's loss. Both are reduced
    over the same anchors (those with a positive and a negative), so they add up to
    :func:`supcon` in every reduction; with ``"none"`` both are 1-D, one value per anchor.

    Args:
        embeddings: floating tensor of shape ``(B, D)``.
        labels: integer tensor of shape ``(B,)``.
        temperature: :math:`\tau > 0`, a number or a 0-d floating tensor.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        ``{"pos": ..., "neg": ...}``; their sum is :func:`supcon`.
    """
    logits, is_positive, is_negative = _scaled_similarities(
        "supcon", embeddings, labels, temperature, reduction
    )
    positives = is_positive.sum(dim=1)
    mean_positive = (logits * is_positive).sum(dim=1) / positives.clamp_min(1)
    others = _masked_logsumexp(logits, is_positive | is_negative)
    anchors = _supcon_anchors(is_positive, is_negative)
    return {
        "pos": _reduce_kept(-mean_positive, anchors, reduction),
        "neg": _reduce_kept(others, anchors, reduction),
    }


def infonce_pair_count(labels: Tensor) -> Tensor:
    """How many positive pairs :func:`infonce`'s mean runs over: its weight in an epoch mean.

    Args:
        labels: integer tensor of shape ``(B,)``.

    Returns:
        A 0-d integer tensor: the ordered pairs ``(a, p)`` of one label whose anchor has a
        negative.
    """
    return _infonce_pairs(*_pair_masks(labels)).sum()


def supcon_anchor_count(labels: Tensor) -> Tensor:
    """How many anchors :func:`supcon`'s mean runs over: its weight in an epoch mean.

    Args:
        labels: integer tensor of shape ``(B,)``.

    Returns:
        A 0-d integer tensor: the anchors that have a positive and a negative.
    """
    return _supcon_anchors(*_pair_masks(labels)).sum()


def _scaled_similarities(
    loss: str, embeddings: Tensor, labels: Tensor, temperature: float | Tensor, reduction: str
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Validate, then the ``(B, B)`` logits :math:`\cos / \tau` and the pair masks."""
    check_temperature(loss, temperature)
    check_reduction(loss, reduction)
    check_embeddings_and_labels(loss, embeddings, labels)
    return cosine_similarities(embeddings) / temperature, *_pair_masks(labels)


def _infonce_pairs(is_positive: Tensor, is_negative: Tensor) -> Tensor:
    """The positive pairs ``(a, p)`` whose anchor has a negative, ``(B, B)``."""
    return is_positive & is_negative.any(dim=1, keepdim=True)


def _supcon_anchors(is_positive: Tensor, is_negative: Tensor) -> Tensor:
    """The anchors that have a positive and a negative, ``(B,)``."""
    return is_positive.any(dim=1) & is_negative.any(dim=1)


def _masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """Each row's log-sum-exp over the kept entries.

    The others are filled with the dtype's lowest finite value rather than ``-inf``: a row
    that keeps nothing then gives a finite (hugely negative) value and finite gradients, and
    it is left out of every reduction by its caller.
    """
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min).logsumexp(dim=1)


def _reduce_kept(values: Tensor, keep: Tensor, reduction: str) -> Tensor:
    """``values`` where ``keep`` holds: their mean (0 if none), their sum, or them (``"none"``)."""
    if reduction == "none":
        return values[keep]
    return reduce_loss(values, reduction, weight=keep)


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
    check_bool(name, "squared", squared)
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


def check_temperature(loss: str, temperature: float | Tensor) -> None:
    """Require a temperature > 0: a finite number or a 0-d floating tensor.

    A tensor's value is read on the host (a value check: skipped where value checks are off,
    under ``torch.compile`` and ``torch.func``'s transforms).

    Raises:
        TypeError: for neither a number nor a floating tensor.
        ValueError: for a number or a tensor value that is not finite and > 0, or a tensor
            that is not 0-d.
    """
    if not isinstance(temperature, Tensor):
        check_number(loss, "temperature", temperature, minimum=0.0, exclusive_minimum=True)
        return
    check_floating(loss, "temperature", temperature, "a temperature")
    if temperature.ndim != 0:
        raise ValueError(
            f"{loss}: 'temperature' must be a number or a 0-d tensor, got shape "
            f"{tuple(temperature.shape)}"
        )
    if value_checks_apply(temperature):
        value = temperature.item()
        if not 0.0 < value < math.inf:
            raise ValueError(f"{loss}: 'temperature' must be finite and > 0, got {value!r}")


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


def _all_triplets_total(
    distances: Tensor, is_positive: Tensor, is_negative: Tensor, margin: float
) -> tuple[Tensor, Tensor]:
    r"""Sum and number of the active triplets among all valid ones, without a ``(B, B, B)`` tensor.

    For an anchor :math:`a` and a positive :math:`p`, with :math:`t = d(a, p) + \text{margin}`
    and the anchor's negative distances sorted, :math:`s_1 \le s_2 \le \dots`, the active
    triplets are the :math:`k` negatives with :math:`s_i < t`, and

    .. math::

        \sum_{n} \max(0, t - d(a, n)) = k\, t - \sum_{i \le k} s_i,

    a prefix sum: :math:`O(B^2 \log B)` time and :math:`O(B^2)` memory instead of
    :math:`O(B^3)`, with the same values and gradients. Each anchor's distances are first
    shifted by their (constant) mean, which keeps the prefix sums small and the subtraction
    exact to rounding.

    Returns:
        The total loss and the number of active triplets (0-d tensors).
    """
    shifted = distances - distances.detach().mean(dim=1, keepdim=True)
    negatives, _ = shifted.masked_fill(~is_negative, torch.inf).sort(dim=1)
    prefix = torch.cat([negatives.new_zeros(len(negatives), 1), negatives.cumsum(dim=1)], dim=1)
    thresholds = shifted + margin
    active = torch.searchsorted(negatives, thresholds) * is_positive
    per_pair = active * thresholds - prefix.gather(1, active)
    return per_pair.sum(), active.sum()
