"""A user's project under 2-process DDP with Lightning's defaults on; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_user_project_job.py OUT_DIR

``strategy="ddp"`` on 2 CPU processes (gloo) with everything a user leaves on: Lightning's
``DistributedSampler`` in every loader (it pads 203, 101, 57 and 75 samples with repeats to
an even split), the progress bar, the default checkpoint callback plus one that monitors
lossplug's key, a TensorBoard logger. Beside lossplug's values the module logs its own: a
torchmetrics ``Metric`` object in training and test, a ``sync_dist=True`` value in validation.
Validation has two loaders. The learning rate is 0, so every logged epoch value has a
reference computed after the run, in one process, over the whole dataset:
``reference.json`` (written by rank 0), with the collectives counted inside
``compute_loss`` (there must be none).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import counting_collectives
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics.classification import MulticlassAccuracy

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import CrossEntropyLoss, FocalLoss

SIZES = {"train": 203, "val0": 101, "val1": 57, "test": 75}


def dataset(name: str) -> TensorDataset:
    generator = torch.Generator().manual_seed(len(name) * 1000 + SIZES[name])
    x = torch.randn(SIZES[name], 8, generator=generator)
    y = torch.randint(0, 4, (SIZES[name],), generator=generator)
    return TensorDataset(x, y)


class UserModule(LossPlugMixin, L.LightningModule):
    def __init__(self) -> None:
        loss = CompositeLoss(
            {"ce": CrossEntropyLoss(), "focal": FocalLoss(mode="multiclass")},
            weights={"focal": 0.5},
        )
        super().__init__(loss=loss, optimizer=_sgd)
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
        self.train_acc = MulticlassAccuracy(num_classes=4)
        self.test_acc = MulticlassAccuracy(num_classes=4)
        self.collectives_in_loss: list[str] = []

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def update_metrics(self, stage: str, output: Tensor, target: Tensor) -> None:
        if stage == "val":
            correct = (output.argmax(1) == target).float().mean()
            self.log("val/acc", correct, sync_dist=True, prog_bar=True)
            return
        metric = self.train_acc if stage == "train" else self.test_acc
        metric(output, target)
        self.log(f"{stage}/acc", metric, on_step=False, on_epoch=True, prog_bar=True)

    def compute_loss(self, *args, **kwargs) -> Tensor:
        with counting_collectives(self.collectives_in_loss):
            return super().compute_loss(*args, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(dataset("train"), batch_size=16, shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(dataset("val0"), batch_size=10), DataLoader(dataset("val1"), 8)]

    def test_dataloader(self) -> DataLoader:
        return DataLoader(dataset("test"), batch_size=12)


def _sgd(params):
    return torch.optim.SGD(params, lr=0.0)


def reference(model: UserModule, name: str) -> dict[str, float]:
    """The loss over the whole dataset in one process, without lossplug."""
    x, y = dataset(name).tensors
    with torch.no_grad():
        logits = model(x).double()
    ce = F.cross_entropy(logits, y)
    p_t = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
    focal = (-((1 - p_t) ** 2) * p_t.log()).mean()
    return {"loss": (ce + 0.5 * focal).item(), "ce": ce.item(), "focal": focal.item()}


def main(out: Path) -> None:
    model = UserModule()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        default_root_dir=out,
        logger=TensorBoardLogger(out, name="tb", version=0, default_hp_metric=False),
        callbacks=[ModelCheckpoint(monitor="val/loss/dataloader_idx_0", dirpath=out / "ckpt")],
        log_every_n_steps=1,
    )
    trainer.fit(model)
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    trainer.test(model)
    test_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if trainer.is_global_zero:
        result = {
            "reference": {name: reference(model, name) for name in SIZES},
            "fit_metrics": fit_metrics,
            "test_metrics": test_metrics,
            "collectives_in_loss": model.collectives_in_loss,
        }
        (out / "reference.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
