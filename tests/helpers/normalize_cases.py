"""The data and model of the ``normalize_loss="global"`` test (tests/lightning/test_normalize.py),
shared by the 2-process job (tests/jobs/normalize_job.py) and the reference in one process.

Each of the 2 ranks trains one optimizer step of 3 micro-batches (``accumulate_grad_batches=3``)
of uneven sizes with uneven numbers of ignored targets, in float64, with SGD.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lossplug import LossPlugMixin
from lossplug.losses import CrossEntropyLoss

LR = 0.5
IGNORE = -100
#: each rank's micro-batches: (size, ignored targets); 6 micro-batches, 3 per rank
MICRO_BATCHES = (((6, 0), (4, 3), (5, 1)), ((3, 2), (7, 0), (2, 1)))


def micro_batches(rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rank ``rank``'s micro-batches, in order: inputs (float64) and targets."""
    generator = torch.Generator().manual_seed(rank)
    batches = []
    for size, ignored in MICRO_BATCHES[rank]:
        x = torch.randn(size, 5, generator=generator, dtype=torch.float64)
        y = torch.randint(0, 3, (size,), generator=generator)
        y[:ignored] = IGNORE
        batches.append((x, y))
    return batches


class Batches(Dataset):
    """Yields whole micro-batches (the loader's ``batch_size=None``)."""

    def __init__(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.batches[index]


def initial_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(5, 3).double()


class Model(LossPlugMixin, L.LightningModule):
    def __init__(self, normalize_loss: str) -> None:
        super().__init__(
            loss=CrossEntropyLoss(ignore_index=IGNORE),
            optimizer=lambda params: torch.optim.SGD(params, lr=LR),
            normalize_loss=normalize_loss,
        )
        self.net = initial_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Batches(micro_batches(self.global_rank)), batch_size=None)


def reference_update() -> dict[str, list[float]]:
    """One SGD step on the mean cross-entropy over every kept target of both ranks."""
    net = initial_net()
    x = torch.cat([b[0] for rank in (0, 1) for b in micro_batches(rank)])
    y = torch.cat([b[1] for rank in (0, 1) for b in micro_batches(rank)])
    kept = y != IGNORE
    logits = net(x)
    # the mean over kept targets, written out: -log softmax at the target, summed, / count
    loss = -(logits[kept].log_softmax(dim=1).gather(1, y[kept, None])).sum() / kept.sum()
    loss.backward()
    with torch.no_grad():
        return {name: (p - LR * p.grad).flatten().tolist() for name, p in net.named_parameters()}


def naive_update() -> dict[str, list[float]]:
    """The step every trainer takes by default: the mean of the micro-batches' means."""
    net = initial_net()
    means = [
        F.cross_entropy(net(x), y, ignore_index=IGNORE)
        for rank in (0, 1)
        for x, y in micro_batches(rank)
    ]
    torch.stack(means).mean().backward()
    with torch.no_grad():
        return {name: (p - LR * p.grad).flatten().tolist() for name, p in net.named_parameters()}
