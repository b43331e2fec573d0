"""A 2-process DDP (gloo, CPU) training job for the loss-logging tests; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_loss_job.py OUT_DIR JOB SHARDING

JOB: composite, many16 or triplet; SHARDING: sampler or own.

``sampler``: Lightning's defaults, its ``DistributedSampler`` in every loader: each rank gets
every other of the 157 samples, rank 1 ending on a repeat of sample 0, in batches of 32 (32,
32, 15). ``own``: each rank works on its own, unequal slice of the data (rank 0: 100 samples,
rank 1: 57; no distributed sampler). Validation and test use batches of 32, so the ranks run
different numbers of batches (4 and 2), each with a smaller last one. Training needs the same
number of batches on every rank (DDP all-reduces gradients each step), so there rank 1 uses
batches of 15 (15, 15, 15, 12) against rank 0's 32 (32, 32, 32, 4). After
fitting, rank 0 writes ``reference.json``: the loss over the *whole* validation set computed
directly with the final weights, plus the collectives counted during the last validation
epoch's loss logging.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import counting_collectives, two_rank_cpu_trainer
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lossplug
from lossplug import LossPlugMixin
from lossplug.losses import CrossEntropyLoss, FocalLoss, MSELoss, TripletLoss

RANK_SLICES = (slice(0, 100), slice(100, 157))


def make_data(mode: str, sharding: str) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(157, 8, generator=generator)
    y = torch.randint(0, 4, (157,), generator=generator)
    if mode == "composite":
        y[::7] = -1  # ignored targets: the epoch mean must count only the kept ones
    if mode == "triplet":  # rank 1: a single class, so no valid (let alone active) triplet
        if sharding == "own":
            y[100:] = 3
        else:  # rank 1 gets the odd samples, then a repeat of sample 0
            y[1::2] = 3
            y[0] = 3
    return TensorDataset(x, y)


def make_loss(mode: str) -> lossplug.LossModule:
    if mode == "composite":
        return lossplug.CompositeLoss(
            {
                "ce": CrossEntropyLoss(ignore_index=-1),
                "focal": FocalLoss(mode="multiclass", ignore_index=-1),
            },
            weights={"ce": 1.0, "focal": 0.5},
        )
    if mode == "triplet":
        return TripletLoss(margin=0.5)
    return lossplug.CompositeLoss({f"t{k}": MSELoss() for k in range(16)})


class Job(LossPlugMixin, L.LightningModule):
    def __init__(self, mode: str, sharding: str) -> None:
        super().__init__(loss=make_loss(mode), optimizer=_sgd)
        self.mode, self.sharding = mode, sharding
        self.net = nn.Linear(8, 4)
        self.data = make_data(mode, sharding)
        self.collectives: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss_inputs(self, output: torch.Tensor, target: torch.Tensor):
        if self.mode == "many16":
            return output, F.one_hot(target, 4).float()
        return output, target

    def _loader(self, batch_size: int = 32) -> DataLoader:
        if self.sharding == "sampler":
            return DataLoader(self.data, batch_size=32)
        mine = self.data[RANK_SLICES[self.global_rank]]
        return DataLoader(TensorDataset(*mine), batch_size=batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader(batch_size=(32, 15)[self.global_rank])

    def val_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def on_validation_epoch_end(self) -> None:
        calls: list[str] = []
        with counting_collectives(calls):
            super().on_validation_epoch_end()
        self.collectives = calls


def _sgd(params):
    return torch.optim.SGD(params, lr=0.1)


def reference(model: Job) -> dict[str, float]:
    x, y = model.data.tensors
    with torch.no_grad():
        pred = model(x)
    if model.mode == "composite":
        ce = F.cross_entropy(pred, y, ignore_index=-1)  # sum over kept / number kept
        p_t = pred.softmax(1)[y >= 0].gather(1, y[y >= 0, None]).squeeze(1)
        focal = (-((1 - p_t) ** 2) * p_t.log()).mean()
        return {"val/loss/ce": ce.item(), "val/loss/focal": focal.item()}
    if model.mode == "many16":
        mse = F.mse_loss(pred, F.one_hot(y, 4).float()).item()
        return {f"val/loss/t{k}": mse for k in range(16)}
    return {}


def main(out: Path, mode: str, sharding: str) -> None:
    L.seed_everything(0)
    model = Job(mode, sharding)
    trainer = two_rank_cpu_trainer(
        sampler=sharding == "sampler",
        max_epochs=2,
        default_root_dir=out,
        logger=TensorBoardLogger(out, name="tb", version=0, default_hp_metric=False),
        log_every_n_steps=2,
    )
    trainer.fit(model)
    trainer.test(model)
    if trainer.is_global_zero:
        result = {"reference": reference(model), "collectives": model.collectives}
        (out / "reference.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
