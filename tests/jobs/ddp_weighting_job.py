"""A 2-process DDP (gloo, CPU) job with Dynamic Weight Average; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_weighting_job.py OUT_DIR sampler|own

Rank 1's targets are scaled, so the ranks' local epoch means differ a lot. ``sampler``:
Lightning's defaults, its ``DistributedSampler``: each rank gets every other of the 111
samples (the odd ones, rank 1's, scaled), and rank 1 ends on a repeat of sample 0, which
the epoch means must leave out. ``own``: each rank trains on its own slice (rank 0: 64
samples, rank 1: 48; no distributed sampler). After each training epoch every rank records
the DWA weights, the epoch means the criterion received and the epoch means of its own real
samples only, recomputed per sample, and writes them to ``rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from ddp_cpu import two_rank_cpu_trainer
from exact_modules import TwoColumns
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import L1Loss, MSELoss

RANK_SLICES = (slice(0, 64), slice(64, 112))
#: the sampler's share of each rank: 56 samples in 4 batches, rank 1's last one a repeat
SAMPLER_SIZE, SAMPLER_BATCH = 111, 14


def make_data(sharding: str) -> TensorDataset:
    size = SAMPLER_SIZE if sharding == "sampler" else 112
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(size, 4, generator=generator)
    y = x @ torch.randn(4, 2, generator=generator) + torch.randn(size, 2, generator=generator)
    rank_one = slice(1, None, 2) if sharding == "sampler" else RANK_SLICES[1]
    y[rank_one] *= 5.0  # rank 1's targets: a different scale, so its local means differ
    return TensorDataset(x, y)


class Job(TwoColumns, LossPlugMixin, L.LightningModule):
    def __init__(self, sharding: str) -> None:
        loss = CompositeLoss(
            {"mse": MSELoss(), "l1": L1Loss()},
            inputs={"mse": {"pred": 0, "target": 0}, "l1": {"pred": 1, "target": 1}},
            weighting="dwa",
        )
        super().__init__(loss=loss, optimizer=_sgd)
        self.net = nn.Linear(4, 2)
        self.data, self.sharding = make_data(sharding), sharding
        self.local_sums = torch.zeros(2, dtype=torch.float64)
        self.local_count = 0
        self.records: list[dict[str, list[float]]] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.sharding == "sampler" and self.global_rank == 1 and batch_idx == 3:
            x, y = x[:-1], y[:-1]  # the repeat of sample 0 that the sampler pads rank 1 with
        with torch.no_grad():  # each real sample's terms, before the step changes the weights
            out = self.net(x).double()
            errors = out - y.double()
            self.local_sums += torch.stack([errors[:, 0].square(), errors[:, 1].abs()], 1).sum(0)
        self.local_count += x.shape[0]
        return super().training_step(batch, batch_idx)

    def train_dataloader(self) -> DataLoader:
        if self.sharding == "sampler":
            return DataLoader(self.data, batch_size=SAMPLER_BATCH)
        mine = self.data[RANK_SLICES[self.global_rank]]
        # 4 batches on each rank: DDP all-reduces gradients every step
        return DataLoader(TensorDataset(*mine), batch_size=(16, 12)[self.global_rank])

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()  # logs the synced means and hands them to DWA
        learned = self.criterion.learned
        self.records.append(
            {
                "weights": learned.lambdas.tolist(),
                "synced_means": learned.history[1].tolist(),
                "local_means": (self.local_sums / self.local_count).tolist(),
                "local_count": self.local_count,
            }
        )
        self.local_sums.zero_()
        self.local_count = 0


def _sgd(params):
    return torch.optim.SGD(params, lr=0.02)


def main(out: Path, sharding: str) -> None:
    L.seed_everything(0)
    model = Job(sharding)
    trainer = two_rank_cpu_trainer(
        sampler=sharding == "sampler", max_epochs=4, logger=False, default_root_dir=out
    )
    trainer.fit(model)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(model.records))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
