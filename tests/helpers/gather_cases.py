"""The batch, model and losses of the ``gather=True`` test (tests/functional/test_gather.py),
shared by the 2-process job (tests/jobs/gather_job.py) and the single-process reference."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from lossplug.losses import ContrastiveLoss, InfoNCELoss, SupConLoss, TripletLoss

SLICES = (slice(0, 6), slice(6, 11))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch: 11 inputs of 6 features, labels 0-3 (label 3 only on rank 1)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(11, 6, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 1, 2])
    return x, labels


def model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Linear(6, 4).double()


def losses(gather: bool) -> dict[str, nn.Module]:
    """Every loss with a ``gather`` option, in the variants whose items differ."""
    return {
        "contrastive": ContrastiveLoss(neg_margin=2.0, gather=gather),
        "contrastive_cosine": ContrastiveLoss(distance="cosine", neg_margin=0.5, gather=gather),
        "triplet": TripletLoss(margin=1.0, gather=gather),
        "triplet_batch_hard": TripletLoss(margin=1.0, mining="batch_hard", gather=gather),
        "infonce": InfoNCELoss(temperature=0.5, gather=gather),
        "supcon": SupConLoss(temperature=0.5, gather=gather),
        "supcon_sum": SupConLoss(temperature=0.5, reduction="sum", gather=gather),
    }


def step(net: nn.Module, criterion: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> dict:
    """One forward and backward: the loss, its components and counts, the parameters' grads."""
    net.zero_grad()
    embeddings = net(x)
    components, counts = criterion.measured_components(embeddings, labels)
    loss = criterion(embeddings, labels)
    loss.backward()
    module = net.module if isinstance(net, DistributedDataParallel) else net
    return {
        "loss": loss.item(),
        "components": {name: value.item() for name, value in components.items()},
        "counts": {name: int(count) for name, count in counts.items()},
        "grads": {name: p.grad.flatten().tolist() for name, p in module.named_parameters()},
    }
