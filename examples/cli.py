"""lossplug under LightningCLI (jsonargparse) instead of Hydra.

    python examples/cli.py fit --model.loss=FocalLoss --model.loss.gamma=3 --model.optimizer=AdamW
    python examples/cli.py fit --model.loss=FocalLoss --print_config   # the whole config

The loss is any :class:`~lossplug.losses.LossModule` (a class path and its options), the
optimizer and scheduler are LightningCLI's callables, passed to the mixin as factories: the
mixin builds them with its parameter groups. Give them as ``--model.optimizer``, not as
LightningCLI's top-level ``--optimizer``, which replaces the mixin's ``configure_optimizers``.
"""

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI, LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import LossPlugMixin
from lossplug.losses import LossModule


class LitClassifier(LossPlugMixin, L.LightningModule):
    """A small classifier whose loss, optimizer and scheduler come from the command line.

    Args:
        loss: the loss, e.g. ``--model.loss=lossplug.losses.FocalLoss``; required, so that no
            option of another loss is carried over to it.
        optimizer: e.g. ``--model.optimizer=AdamW --model.optimizer.lr=0.01``.
        scheduler: e.g. ``--model.scheduler=CosineAnnealingLR --model.scheduler.T_max=10``.
        hidden: the width of the hidden layer.
    """

    def __init__(
        self,
        loss: LossModule,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        hidden: int = 32,
    ) -> None:
        super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
        self.backbone = nn.Sequential(nn.Linear(8, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of 8-feature inputs."""
        return self.head(self.backbone(x))


class Blobs(L.LightningDataModule):
    """Three separable classes of 8 features.

    Args:
        samples: how many samples.
        batch_size: the batch size.
    """

    def __init__(self, samples: int = 96, batch_size: int = 16) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        labels = torch.randint(0, 3, (samples,), generator=generator)
        features = torch.randn(samples, 8, generator=generator)
        self.data = TensorDataset(features + 2.0 * nn.functional.one_hot(labels, 8), labels)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches."""
        return DataLoader(self.data, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The same samples, in order."""
        return DataLoader(self.data, self.batch_size)


if __name__ == "__main__":
    LightningCLI(LitClassifier, Blobs)
