"""Small LightningModules and data for the exact-logging tests, and their references.

The references recompute each loss over a whole dataset in one process with
``torch.nn.functional``, in float64: a code path apart from lossplug's.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import LossPlugMixin


def classes(size: int, seed: int = 0, features: int = 8) -> TensorDataset:
    """``size`` random inputs with class indices in [0, 4)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, features, generator=generator)
    return TensorDataset(x, torch.randint(0, 4, (size,), generator=generator))


def sgd(lr: float = 0.0):
    """An optimizer factory; ``lr=0`` keeps the weights, so training values have references."""

    def build(params):
        return torch.optim.SGD(params, lr=lr)

    return build


class Classifier(LossPlugMixin, L.LightningModule):
    """A linear classifier of 8 features into 4 classes, cross-entropy by default."""

    def __init__(self, loss: object = "cross_entropy", lr: float = 0.0, **options) -> None:
        super().__init__(loss=loss, optimizer=sgd(lr), **options)
        torch.manual_seed(0)
        self.net = nn.Linear(8, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def cross_entropy_over(model: nn.Module, data: TensorDataset) -> float:
    """Cross-entropy of ``model`` over every sample of ``data``."""
    x, y = data.tensors
    with torch.no_grad():
        return F.cross_entropy(model(x).double(), y).item()


def loader(data: TensorDataset, batch_size: int, **options) -> DataLoader:
    return DataLoader(data, batch_size=batch_size, **options)


class TwoColumns:
    """A mixin: a ``net`` of two output columns gives two predictions, and a batch ``(x, y)``
    of two target columns two targets (routed to a composite's terms by index)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(x)
        return out[:, 0], out[:, 1]

    def split_batch(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        x, y = batch
        return x, (y[:, 0], y[:, 1])
