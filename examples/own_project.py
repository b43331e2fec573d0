"""lossplug in your own Lightning project: inherit the mixin, pass configs (or objects).

    python examples/own_project.py

The loss, optimizer and scheduler below are plain dicts in Hydra's format; in a Hydra app
they come from lossplug's config groups (`defaults: [loss: focal, optimizer: adamw]`).
"""

from typing import Any

import lightning as L
import torch
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset, random_split

from lossplug import LossPlugMixin


class LitDigits(LossPlugMixin, L.LightningModule):
    """Steps, loss-component logging and configure_optimizers come from the mixin."""

    def __init__(self, loss: Any, optimizer: Any, scheduler: Any = None, hidden: int = 128) -> None:
        super().__init__(loss=loss, optimizer=optimizer, scheduler=scheduler)
        self.backbone = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Class scores."""
        return self.head(self.backbone(x))

    def update_metrics(self, stage: str, output: Tensor, target: Tensor) -> None:
        """Optional hook: your own metrics, from the outputs the step already computed."""
        if stage == "val":
            self.log("val/acc", (output.argmax(dim=1) == target).float().mean(), prog_bar=True)


def main(max_epochs: int = 5) -> dict[str, float]:
    """Train on scikit-learn's digits and return the final metrics."""
    L.seed_everything(0)
    digits = load_digits()
    inputs = torch.tensor(digits.data, dtype=torch.float32) / 16
    data = TensorDataset(inputs, torch.tensor(digits.target))
    train, val = random_split(data, [0.8, 0.2], generator=torch.Generator().manual_seed(0))

    model = LitDigits(
        loss={"_target_": "lossplug.losses.FocalLoss", "mode": "multiclass", "gamma": 2.0},
        optimizer={
            "_target_": "torch.optim.AdamW",
            "_partial_": True,
            "lr": 0.01,
            "lr_mult": {"backbone": 0.5},  # per-module learning rates
        },
        scheduler={
            "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
            "_partial_": True,
            "T_max": None,  # None: the run's length
        },
    )
    trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(train, batch_size=64, shuffle=True), DataLoader(val, 256))
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()}
    print(metrics)  # train/loss, val/loss, val/loss/focal, val/acc, ...
    return metrics


if __name__ == "__main__":
    main()
