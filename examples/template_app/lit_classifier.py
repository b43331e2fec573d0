"""The model of the template-style app: lossplug's mixin on a small classifier."""

from typing import Any

import lightning as L
import torch
from torch import nn

from lossplug import LossPlugMixin


class LitClassifier(LossPlugMixin, L.LightningModule):
    """A small classifier: a backbone and a head, so that ``lr_mult`` has groups to scale."""

    def __init__(self, loss: Any, optimizer: Any, scheduler: Any = None, hidden: int = 32) -> None:
        super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
        self.backbone = nn.Sequential(nn.Linear(8, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of 8-feature inputs."""
        return self.head(self.backbone(x))
