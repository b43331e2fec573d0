"""Module wrappers over :mod:`lossplug.functional.metric_learning`."""

from __future__ import annotations

from torch import Tensor

from lossplug.functional import metric_learning as F
from lossplug.functional._distance import Distance
from lossplug.functional.metric_learning import Mining
from lossplug.losses.base import LossModule, MultiTermLoss
from lossplug.registry import register_loss


@register_loss("contrastive")
class ContrastiveLoss(MultiTermLoss):
    """Contrastive loss over the pairs in the batch; see :func:`lossplug.functional.contrastive`.

    Called as ``loss(embeddings, labels)``; its components are ``pos`` (same-label pairs
    pulled within ``pos_margin``) and ``neg`` (other pairs pushed beyond ``neg_margin``).

    Args:
        pos_margin: >= 0.
        neg_margin: >= ``pos_margin``.
        distance: ``"euclidean"`` or ``"cosine"``.
        squared: halved squared hinges (Hadsell et al. 2006) or plain hinges (PML).
        reduction: ``"mean"`` (per-set means, added), ``"sum"`` or ``"none"`` (per pair).

    Example:
        >>> import torch
        >>> from lossplug.losses import ContrastiveLoss
        >>> loss = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
        >>> loss(torch.tensor([[0.0, 0.0], [0.0, 0.5], [3.0, 0.0]]), torch.tensor([0, 0, 1]))
        tensor(0.1250)
    """

    name = "contrastive"
    input_space = "embeddings"
    repr_options = ("pos_margin", "neg_margin", "distance", "squared")

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: Distance = "euclidean",
        squared: bool = True,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.pos_margin, self.neg_margin = F.check_contrastive_options(
            pos_margin, neg_margin, distance, squared, reduction
        )
        self.distance = distance
        self.squared = squared

    def component_names(self) -> tuple[str, ...]:
        """``pos`` and ``neg``."""
        return ("pos", "neg")

    def measured_components(
        self, embeddings: Tensor, labels: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """``pos`` counted over the positive pairs of the batch, ``neg`` over the negative ones."""
        components = self.components(embeddings, labels)
        pairs = labels.numel() * (labels.numel() - 1) // 2
        same = (labels[:, None] == labels[None, :]).sum()
        positive_pairs = (same - labels.numel()) // 2
        return components, {"pos": positive_pairs, "neg": pairs - positive_pairs}

    def components(self, embeddings: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """The ``pos`` and ``neg`` terms; the loss is their sum."""
        return F.contrastive_components(
            embeddings,
            labels,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            distance=self.distance,
            squared=self.squared,
            reduction=self.reduction,
        )


@register_loss("triplet")
class TripletLoss(LossModule):
    """Triplet loss over triplets mined in the batch; see :func:`lossplug.functional.triplet`.

    Called as ``loss(embeddings, labels)``.

    Args:
        margin: >= 0.
        mining: ``"all"`` (every valid triplet) or ``"batch_hard"`` (hardest per anchor).
        distance: ``"euclidean"`` or ``"cosine"``.
        p: the norm's order for ``"euclidean"``, >= 1.
        reduction: ``"mean"`` (over active triplets), ``"sum"`` or ``"none"``.

    Example:
        >>> import torch
        >>> from lossplug.losses import TripletLoss
        >>> loss = TripletLoss(margin=0.5)
        >>> loss(torch.tensor([[0.0, 0.0], [0.0, 1.0], [0.0, 1.2]]), torch.tensor([0, 0, 1]))
        tensor(0.8000)
    """

    name = "triplet"
    input_space = "embeddings"
    repr_options = ("margin", "mining", "distance", "p")

    def __init__(
        self,
        margin: float = 0.2,
        mining: Mining = "all",
        distance: Distance = "euclidean",
        p: float = 2.0,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        self.margin, self.p = F.check_triplet_options(margin, mining, distance, p, reduction)
        self.mining = mining
        self.distance = distance

    def measured_components(
        self, embeddings: Tensor, labels: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor | int]]:
        """The loss, counted over the batch's active triplets (0 when none is active)."""
        if self.reduction != "mean":
            return super().measured_components(embeddings, labels)
        total, active = F.triplet_total_and_count(embeddings, labels, **self._mining_options())
        return {self.name: total / active.clamp_min(1).to(total.dtype)}, {self.name: active}

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The loss of the batch's triplets."""
        return F.triplet(embeddings, labels, reduction=self.reduction, **self._mining_options())

    def _mining_options(self) -> dict[str, object]:
        """How triplets are formed and scored: the functional's keyword options."""
        return {
            "margin": self.margin,
            "mining": self.mining,
            "distance": self.distance,
            "p": self.p,
        }
