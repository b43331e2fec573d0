"""A retrieval metric for embeddings: leave-one-out nearest-neighbour accuracy."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class KNNAccuracy(Metric):
    """How often a sample's nearest other sample (Euclidean) has the same label.

    Embeddings of the whole evaluation set are gathered (across processes too), so the
    memory is ``O(N * D)`` and the compute ``O(N^2)``: meant for small validation sets.
    """

    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.add_state("embeddings", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, embeddings: Tensor, labels: Tensor) -> None:
        """Add a batch of embeddings ``(B, D)`` and labels ``(B,)``."""
        self.embeddings.append(embeddings.detach())
        self.labels.append(labels.detach())

    def compute(self) -> Tensor:
        """The 1-nearest-neighbour accuracy, each sample left out of its own search."""
        embeddings, labels = dim_zero_cat(self.embeddings), dim_zero_cat(self.labels)
        distances = torch.cdist(embeddings, embeddings)
        distances.fill_diagonal_(float("inf"))
        return (labels[distances.argmin(dim=1)] == labels).float().mean()
