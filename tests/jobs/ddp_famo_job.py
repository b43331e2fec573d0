"""A 2-process DDP (gloo, CPU) job with FAMO weighting; run as a script.

    PYTHONPATH=tests/helpers python tests/jobs/ddp_famo_job.py OUT_DIR ACCUMULATE LR DECAY

Lightning's defaults, its ``DistributedSampler``: each rank gets every other of the 112
samples, and the odd ones (rank 1's) have scaled targets, so the ranks' batch values differ
a lot. ``ACCUMULATE`` is ``accumulate_grad_batches``; ``LR`` and ``DECAY`` are FAMO's options.
After each training batch every rank records the batch's index, its own term values, how
many ``all_reduce`` calls its training step made, and FAMO's logits and factors, and writes
them to ``rank{r}.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
from ddp_cpu import counting_collectives, two_rank_cpu_trainer
from exact_modules import TwoColumns
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lossplug import CompositeLoss, LossPlugMixin
from lossplug.losses import L1Loss, MSELoss


def make_data() -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(112, 4, generator=generator)
    y = x @ torch.randn(4, 2, generator=generator) + torch.randn(112, 2, generator=generator)
    y[1::2] *= 5.0  # rank 1's samples under the sampler
    return TensorDataset(x, y)


class Job(TwoColumns, LossPlugMixin, L.LightningModule):
    def __init__(self, lr: float, decay: float) -> None:
        loss = CompositeLoss(
            {"mse": MSELoss(), "l1": L1Loss()},
            inputs={"mse": {"pred": 0, "target": 0}, "l1": {"pred": 1, "target": 1}},
            weighting="famo",
            weighting_options={"lr": lr, "weight_decay": decay},
        )
        super().__init__(loss=loss, optimizer=_sgd)
        self.net = nn.Linear(4, 2)
        self.records: list[dict[str, object]] = []

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        calls: list[str] = []
        with counting_collectives(calls):
            loss = super().training_step(batch, batch_idx)
        learned = self.criterion.learned
        self.records.append(
            {
                "batch_idx": batch_idx,
                "values": [value.item() for value in self.step_components.values()],
                "all_reduces": calls.count("all_reduce"),
                "logits": learned.logits.tolist(),
                "factors": learned.factors().tolist(),
            }
        )
        return loss

    def train_dataloader(self) -> DataLoader:
        return DataLoader(make_data(), batch_size=7)  # 8 batches of each rank's 56 samples


def _sgd(params):
    return torch.optim.SGD(params, lr=0.02)


def main(out: Path, accumulate: int, lr: float, decay: float) -> None:
    L.seed_everything(0)
    model = Job(lr, decay)
    trainer = two_rank_cpu_trainer(
        max_epochs=2, accumulate_grad_batches=accumulate, logger=False, default_root_dir=out
    )
    trainer.fit(model)
    (out / f"rank{trainer.global_rank}.json").write_text(json.dumps(model.records))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))
