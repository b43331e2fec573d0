"""Two DDP processes of which one alone computes an auxiliary loss; run as a script.

    python tests/ddp_names_job.py OUT_DIR

Rank 1 computes ``aux`` on its batches, rank 0 never does. Both registered the name when the
module was built, so the epoch's one ``all_reduce`` has the same slots on both: the run ends,
and ``train/aux`` (rank 1's batches alone) is logged on both. Rank 0 writes the metrics and
the reference (the loss over rank 1's samples, lr 0) to ``metrics.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from ddp_cpu import two_rank_cpu_trainer
from exact_modules import Classifier, classes, loader

DATA = classes(32)


class Job(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.register_criterion("aux", "cross_entropy")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.compute_loss(self(x), y)
        if self.global_rank == 1:
            loss = loss + self.compute_loss(self(x), y, name="aux")
        return loss

    def train_dataloader(self):
        return loader(DATA, 8)  # each rank: its own 16 samples (no distributed sampler)


if __name__ == "__main__":
    L.seed_everything(0)
    torch.set_num_threads(1)
    model, trainer = Job(), two_rank_cpu_trainer(max_epochs=1, logger=False)
    trainer.fit(model)
    if trainer.is_global_zero:
        x, y = DATA.tensors
        with torch.no_grad():
            reference = F.cross_entropy(model(x).double(), y).item()
        metrics = {key: value.item() for key, value in trainer.callback_metrics.items()}
        Path(sys.argv[1]).write_text(json.dumps({"metrics": metrics, "reference": reference}))
